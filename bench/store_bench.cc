// store_bench: durable appends of the standard workload (tools/workload.h) into
// a fresh slot with 1 and 16 concurrent writers, beside two raw loops on the
// same file system, measured before and after the slot runs: "write 8 KiB +
// fdatasync" (the latency limit) and "write 256 KiB + fdatasync" (the
// bandwidth limit). Prints figure tables, PASS/FAIL per bar of the project
// issue and one JSON line with every figure. A benchmark, not a test.
//
// Memory check: a run appends the messages in four quarters. Before each, it
// resets the peak RSS (VmHWM) by writing "5" to /proc/self/clear_refs (Linux
// >= 4.0); after each, it reads VmHWM. The reset only drops the peak to what
// is still resident, so memory that grows with the messages in the slot makes
// later quarters peak higher. No growth: the last quarter's peak is within
// max(10%, 8 MiB) of the first's. What the bench keeps per message
// (latencies, Workload plans) is allocated up front.
//
// Deleting files: ext4 without a journal skips inodes freed in the last 1-6
// minutes and scans past them on every create (recently_deleted()), so files
// are created several times slower right after a big delete (the spool now
// keeps bodies in a few pack files, but log segments and the raw loops'
// files are still created). The bench deletes its slots only at the end;
// leave minutes between runs.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "store/identity.h"
#include "store/mailbox_name.h"
#include "store/slot.h"
#include "tools/workload.h"

namespace mailrepl {
namespace {

constexpr double kMB = 1e6;
constexpr size_t kSmallBlock = 8 << 10, kLargeBlock = 256 << 10;

constexpr char kUsage[] =
    "Usage: store_bench [--dir PARENT] [--messages N] [--users U] [--writers 1,16]\n"
    "                   [--raw-seconds S] [--keep]\n"
    "  --dir PARENT  make the fresh bench directory under PARENT (default $TMPDIR, else /var/tmp)\n"
    "  --keep        do not delete the bench directory afterwards\n"
    "Defaults: --messages 10000 --users 100 --writers 1,16 --raw-seconds 2\n";

struct Flags {
  std::string parent = [] {
    const char* tmp = std::getenv("TMPDIR");
    return std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/var/tmp");
  }();
  uint64_t messages = 10000;
  int users = 100;
  std::vector<int> writers = {1, 16};
  double raw_seconds = 2.0;
  bool keep = false;
};

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    bool ok = true;
    if (a == "--help" || a == "-h") {
      std::printf("%s", kUsage);
      exit(0);
    } else if (a == "--keep") {
      f->keep = true;
      continue;
    } else if (v == nullptr) {
      ok = false;
    } else if (a == "--dir") {
      f->parent = v;
    } else if (a == "--messages") {
      ok = absl::SimpleAtoi(v, &f->messages) && f->messages >= 4;
    } else if (a == "--users") {
      ok = absl::SimpleAtoi(v, &f->users) && f->users >= 1;
    } else if (a == "--raw-seconds") {
      ok = absl::SimpleAtod(v, &f->raw_seconds) && f->raw_seconds > 0;
    } else if (a == "--writers") {
      f->writers.clear();
      for (absl::string_view w : absl::StrSplit(v, ',')) {
        int n = 0;
        ok = ok && absl::SimpleAtoi(w, &n) && n >= 1 && n <= 1024;
        f->writers.push_back(n);
      }
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "store_bench: bad argument %s\n%s", a.c_str(), kUsage);
      return false;
    }
    ++i;
  }
  return true;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double CpuSeconds() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }  // all threads

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  size_t k = std::min(v.size() - 1, static_cast<size_t>(p * v.size()));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

// The mount holding path: "fstype on source mounted at mountpoint".
std::string FileSystemOf(const std::string& path) {
  std::ifstream in("/proc/self/mounts");
  std::string dev, mnt, type, rest, best = "unknown";
  size_t best_len = 0;
  while (in >> dev >> mnt >> type && std::getline(in, rest)) {
    const std::string prefix = mnt == "/" ? mnt : mnt + "/";
    if ((path + "/").rfind(prefix, 0) == 0 && prefix.size() >= best_len) {
      best_len = prefix.size();
      best = absl::StrCat(type, " on ", dev, " mounted at ", mnt);
    }
  }
  return best;
}

// A field of /proc/self/status in KiB ("VmHWM", "VmRSS").
uint64_t ProcStatusKb(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::strtoull(&line[field.size() + 1], nullptr, 10);
  }
  return 0;
}

// Resets VmHWM to the current RSS; false if the kernel did not do it.
bool ResetPeakRss() {
  std::ofstream("/proc/self/clear_refs") << "5";
  return ProcStatusKb("VmHWM") <= ProcStatusKb("VmRSS") + 1024;
}

absl::Status SyncFileSystem(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open", dir);
  int rc = ::syncfs(fd);
  int err = errno;
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : ErrnoStatus(err, "syncfs", dir);
}

struct RawResult {
  const char* when = "";  // "before" or "after" the slot runs
  size_t block = 0;
  uint64_t ops = 0;
  double seconds = 0;
  double p50_ms = 0, p99_ms = 0;
  double ops_per_s() const { return ops / seconds; }
  double bytes_per_s() const { return ops * block / seconds; }
};

// Appends `block` bytes + fdatasync to a fresh file for `seconds`.
absl::StatusOr<RawResult> RawLoop(const std::string& dir, size_t block, double seconds,
                                  const char* when) {
  const std::string path = absl::StrCat(dir, "/raw_", block);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return ErrnoStatus(errno, "create", path);
  const std::string data(block, 'x');
  RawResult r{.when = when, .block = block};
  std::vector<double> lat;
  absl::Status s;
  const double start = Now();
  double now = start;
  while (s.ok() && now - start < seconds) {
    s = WriteAll(fd, data, path);
    if (s.ok() && ::fdatasync(fd) != 0) s = ErrnoStatus(errno, "fdatasync", path);
    const double t = Now();
    lat.push_back(t - now);
    now = t;
    ++r.ops;
  }
  ::close(fd);
  ::unlink(path.c_str());
  RETURN_IF_ERROR(s);
  r.seconds = now - start;
  r.p50_ms = Percentile(lat, 0.5) * 1e3;
  r.p99_ms = Percentile(lat, 0.99) * 1e3;
  return r;
}

struct SlotRun {
  int writers = 0;
  uint64_t messages = 0;
  uint64_t bytes = 0;  // message bytes only
  double seconds = 0;  // appends only, all quarters
  double cpu_seconds = 0;
  double flush_seconds = 0;  // Slot::Checkpoint() after the run (deferred spool work)
  double p50_ms = 0, p99_ms = 0;
  SlotStats stats;
  std::array<uint64_t, 4> peak_kb{};  // VmHWM over each quarter of the messages
  bool peak_reset_ok = true;          // clear_refs really reset VmHWM
  double msgs_per_s() const { return messages / seconds; }
  double bytes_per_s() const { return bytes / seconds; }
  bool memory_grows() const {
    return peak_kb[3] > peak_kb[0] + std::max<uint64_t>(peak_kb[0] / 10, 8 * 1024);
  }
};

// W threads append messages [begin, end) to their users' INBOXes; thread t
// uses workloads[t] and takes indices from a shared counter.
absl::Status AppendRange(Slot& slot, std::vector<std::unique_ptr<Workload>>& workloads,
                         uint64_t begin, uint64_t end, std::vector<double>& latency, SlotRun& run) {
  std::atomic<uint64_t> next{begin};
  std::atomic<uint64_t> bytes{0};
  std::mutex mu;
  absl::Status first_error;
  auto worker = [&](Workload& wl) {
    for (uint64_t i = next++; i < end; i = next++) {
      WorkloadMessage m = wl.Message(i);
      AppendRequest req{.mailbox = InboxName(m.user), .body = std::move(m.bytes)};
      const double t0 = Now();
      absl::StatusOr<AppendResult> r = slot.Append(req);
      latency[i] = Now() - t0;
      if (!r.ok()) {
        std::lock_guard<std::mutex> l(mu);
        if (first_error.ok()) first_error = r.status();
        next = end;
        return;
      }
      bytes += req.body.size();
    }
  };
  const double cpu0 = CpuSeconds(), t0 = Now();
  std::vector<std::thread> threads;
  for (auto& wl : workloads) threads.emplace_back(worker, std::ref(*wl));
  for (auto& t : threads) t.join();
  run.seconds += Now() - t0;
  run.cpu_seconds += CpuSeconds() - cpu0;
  run.bytes += bytes;
  run.messages += end - begin;
  return first_error;
}

absl::StatusOr<SlotRun> RunSlot(const std::string& dir, const Flags& flags, int writers) {
  const SlotPaths paths = SlotPaths::Under(dir);
  RETURN_IF_ERROR(Slot::Init(paths, {"bench", 1, 1, static_cast<int64_t>(time(nullptr))}));
  ASSIGN_OR_RETURN(std::unique_ptr<Slot> slot, Slot::Open(paths, {}));
  for (int u = 0; u < flags.users; ++u) {
    RETURN_IF_ERROR(slot->CreateMailbox(InboxName(absl::StrCat("user", u))).status());
  }
  // Per-message state lives in arrays sized up front (see the memory check).
  std::vector<double> latency(flags.messages);
  std::vector<std::unique_ptr<Workload>> workloads;
  for (int t = 0; t < writers; ++t) {
    workloads.push_back(std::make_unique<Workload>(WorkloadOptions{.users = flags.users}));
    workloads.back()->Size(flags.messages - 1);  // the whole plan, now
  }
  RETURN_IF_ERROR(SyncFileSystem(dir));  // start without others' dirty pages
  const SlotStats before = slot->stats();
  SlotRun run{.writers = writers};
  for (uint64_t q = 0; q < run.peak_kb.size(); ++q) {
    run.peak_reset_ok = ResetPeakRss() && run.peak_reset_ok;
    const uint64_t n = flags.messages;
    RETURN_IF_ERROR(AppendRange(*slot, workloads, n * q / 4, n * (q + 1) / 4, latency, run));
    run.peak_kb[q] = ProcStatusKb("VmHWM");
  }
  const SlotStats after = slot->stats();
  run.stats = {after.commits - before.commits, after.records - before.records,
               after.bytes - before.bytes, after.write_time - before.write_time,
               after.sync_time - before.sync_time, after.apply_time - before.apply_time};
  run.p50_ms = Percentile(latency, 0.5) * 1e3;
  run.p99_ms = Percentile(latency, 0.99) * 1e3;
  const double f0 = Now();
  RETURN_IF_ERROR(slot->Checkpoint());
  run.flush_seconds = Now() - f0;
  return run;
}

// Prints the figure tables and the bars; returns the JSON line with all figures.
// The bars compare with the faster of the two measurements of each raw loop
// (before and after the slot runs): other work on the disk only slows a loop.
std::string Report(const std::string& dir, const Flags& flags, const std::vector<RawResult>& raw,
                   const std::vector<SlotRun>& runs) {
  auto tf = [](bool b) { return b ? "true" : "false"; };
  auto sep = [](const std::string& s) { return s.empty() ? "" : ","; };
  std::string jraw, jruns, jbars;
  double best8 = 0, best256 = 0, worst8 = 1e18;
  std::printf("%-26s %-6s %9s %8s %8s %8s\n", "raw loop", "when", "ops/s", "MB/s", "p50 ms",
              "p99 ms");
  for (const RawResult& r : raw) {
    std::printf("%-26s %-6s %9.0f %8.1f %8.2f %8.2f\n",
                absl::StrCat("write ", r.block >> 10, " KiB + fdatasync").c_str(), r.when,
                r.ops_per_s(), r.bytes_per_s() / kMB, r.p50_ms, r.p99_ms);
    absl::StrAppendFormat(&jraw,
                          "%s{\"block\":%d,\"when\":\"%s\",\"ops_per_s\":%.1f,\"mb_per_s\":%.2f}",
                          sep(jraw), r.block, r.when, r.ops_per_s(), r.bytes_per_s() / kMB);
    if (r.block == kSmallBlock) best8 = std::max(best8, r.ops_per_s());
    if (r.block == kSmallBlock) worst8 = std::min(worst8, r.ops_per_s());
    if (r.block == kLargeBlock) best256 = std::max(best256, r.bytes_per_s());
  }
  if (worst8 < 0.75 * best8) {
    std::printf("WARNING: the 8 KiB loop varied by more than 25%%: other work on this disk?\n");
  }
  std::printf("\n%-7s %7s %6s %7s %9s %8s %7s %7s %5s %7s  %-23s %5s\n", "writers", "msgs/s",
              "MB/s", "commits", "msgs/comm", "ms/comm", "p50 ms", "p99 ms", "cpu%", "flush s",
              "peak MiB by quarter", "grows");
  for (const SlotRun& r : runs) {
    const double commits = std::max<double>(1, r.stats.commits);
    const char* grows = !r.peak_reset_ok ? "?" : r.memory_grows() ? "yes" : "no";
    const std::string peaks = absl::StrJoin(r.peak_kb, " ", [](std::string* out, uint64_t kb) {
      absl::StrAppendFormat(out, "%5.1f", kb / 1024.0);
    });
    std::printf("%-7d %7.0f %6.1f %7.0f %9.2f %8.3f %7.2f %7.2f %5.0f %7.2f  %-23s %5s\n",
                r.writers, r.msgs_per_s(), r.bytes_per_s() / kMB, commits,
                r.stats.records / commits, 1e3 * r.seconds / commits, r.p50_ms, r.p99_ms,
                100 * r.cpu_seconds / r.seconds, r.flush_seconds, peaks.c_str(), grows);
    absl::StrAppendFormat(&jruns,
                          "%s{\"writers\":%d,\"msgs_per_s\":%.1f,\"mb_per_s\":%.2f,"
                          "\"commits\":%d,\"records\":%d,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
                          "\"cpu_pct\":%.0f,\"flush_s\":%.3f,\"peak_kib\":[%s],"
                          "\"memory_grows\":\"%s\"}",
                          sep(jruns), r.writers, r.msgs_per_s(), r.bytes_per_s() / kMB,
                          r.stats.commits, r.stats.records, r.p50_ms, r.p99_ms,
                          100 * r.cpu_seconds / r.seconds, r.flush_seconds,
                          absl::StrJoin(r.peak_kb, ","), grows);
  }
  std::printf("\n%-7s %13s %13s %13s %13s\n", "writers", "write ms/comm", "sync ms/comm",
              "index ms/comm", "other ms/comm");
  for (const SlotRun& r : runs) {
    const double commits = std::max<double>(1, r.stats.commits);
    const double w = absl::ToDoubleMilliseconds(r.stats.write_time) / commits;
    const double y = absl::ToDoubleMilliseconds(r.stats.sync_time) / commits;
    const double a = absl::ToDoubleMilliseconds(r.stats.apply_time) / commits;
    std::printf("%-7d %13.3f %13.3f %13.3f %13.3f\n", r.writers, w, y, a,
                1e3 * r.seconds / commits - w - y);
  }
  std::printf(
      "\nmsgs/s, MB/s: message bytes, first Append to last return; msgs/comm, ms/comm: per group\n"
      "commit; cpu%%: CPU/wall (100%% = one core); flush s: Slot::Checkpoint() after the last\n"
      "append (deferred spool work; not timed); peak MiB: VmHWM over each quarter of the\n"
      "messages (see the memory check at the top of store_bench.cc). write, sync, index:\n"
      "the leader's log write and fdatasync, and the applier's index apply (on its own\n"
      "thread, beside the next batch's write and fdatasync); other: ms/comm - write - sync.\n"
      "\nbars:\n");
  bool pass = true;
  auto bar = [&](const std::string& name, double value, double min) {
    std::printf("  %-30s %6.2f   (bar >= %.1f)  %s\n", name.c_str(), value, min,
                value >= min ? "PASS" : "FAIL");
    absl::StrAppendFormat(&jbars, "%s{\"name\":\"%s\",\"value\":%.3f,\"bar\":%.1f,\"pass\":%s}",
                          sep(jbars), name, value, min, tf(value >= min));
    pass = pass && value >= min;
  };
  for (const SlotRun& r : runs) {
    if (r.writers == 1) bar("1w msgs/s / 8KiB-loop ops/s", r.msgs_per_s() / best8, 0.5);
    if (r.writers != 16) continue;
    bar("16w msgs/s / 8KiB-loop ops/s", r.msgs_per_s() / best8, 4);
    bar("16w MB/s / 256KiB-loop MB/s", r.bytes_per_s() / best256, 0.5);
  }
  for (const SlotRun& r : runs) {
    const char* verdict = !r.peak_reset_ok ? "UNVERIFIED" : r.memory_grows() ? "FAIL" : "PASS";
    std::printf("  %-30s %+6.1f%%  (bar: no growth) %s\n",
                absl::StrCat(r.writers, "w peak q4 vs q1").c_str(),
                100.0 * r.peak_kb[3] / std::max<uint64_t>(1, r.peak_kb[0]) - 100, verdict);
    pass = pass && r.peak_reset_ok && !r.memory_grows();
  }
  return absl::StrFormat(
      "{\"dir\":\"%s\",\"messages\":%d,\"users\":%d,\"raw\":[%s],\"runs\":[%s],\"bars\":[%s],"
      "\"all_pass\":%s}",
      dir, flags.messages, flags.users, jraw, jruns, jbars, tf(pass));
}

int Main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, &flags)) return 2;
  SetLogQuiet(true);
  std::string tmpl = absl::StrCat(flags.parent, "/store_bench.XXXXXX");
  if (mkdtemp(tmpl.data()) == nullptr) {
    std::fprintf(stderr, "store_bench: mkdtemp %s: %s\n", tmpl.c_str(), strerror(errno));
    return 1;
  }
  const std::string dir = std::filesystem::canonical(tmpl).string();
  std::printf("directory:   %s\nfile system: %s\n", dir.c_str(), FileSystemOf(dir).c_str());
  std::printf("workload:    %llu messages, %d users; writers %s; %u CPUs\n\n",
              static_cast<unsigned long long>(flags.messages), flags.users,
              absl::StrJoin(flags.writers, ",").c_str(), std::thread::hardware_concurrency());
  auto fail = [&](const absl::Status& s) {
    std::fprintf(stderr, "store_bench: %s\n", std::string(s.message()).c_str());
    if (!flags.keep) std::filesystem::remove_all(dir);
    return 1;
  };

  std::vector<RawResult> raw;
  auto raw_loops = [&](const char* when) -> absl::Status {
    for (size_t block : {kSmallBlock, kLargeBlock}) {
      RETURN_IF_ERROR(SyncFileSystem(dir));
      ASSIGN_OR_RETURN(RawResult r, RawLoop(dir, block, flags.raw_seconds, when));
      raw.push_back(r);
    }
    return absl::OkStatus();
  };
  absl::Status s = raw_loops("before");
  if (!s.ok()) return fail(s);
  // Slots are deleted only at the end: see "Deleting files" at the top.
  std::vector<SlotRun> runs;
  for (int w : flags.writers) {
    absl::StatusOr<SlotRun> r = RunSlot(absl::StrCat(dir, "/slot_w", w), flags, w);
    if (!r.ok()) return fail(r.status());
    runs.push_back(*r);
  }
  s = raw_loops("after");
  if (!s.ok()) return fail(s);

  std::printf("\n%s\n", Report(dir, flags, raw, runs).c_str());
  if (!flags.keep) std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace mailrepl

int main(int argc, char** argv) { return mailrepl::Main(argc, argv); }
