// check_bench: the consistency-check benchmark of issue 6 (`replctl check`).
// It runs exactly the check path replicad runs: a sync::SyncServer on the
// replica's open Slot (in-process, on an io_context thread of its own: the
// replica host's replicad) and, per check, a sync::SyncClient in mode
// kCheck on another io_context thread (the master host's replicad, whose
// SlotHost::CheckStore runs it there) with options.slot = the master slot's
// paths (the client reads the master's files itself through MasterSource;
// the master's Slot stays open in this process, as in replicad). Wall time
// is measured from co_spawn of the client's Run() to its completion,
// MasterSource::Open included. A 5 ms timer on the client's io thread
// measures the longest time a check keeps that thread busy: in replicad it
// is the thread of every LMTP session, sync client and heartbeat.
//
// Stores (under --dir, default ${TMPDIR:-/tmp}/mailrepl-check-bench; deleted at the end
// unless --keep; with --keep a later run reuses them after checking their
// shape: mailbox and message counts, equal LSNs and slot digests, nothing
// quarantined; anything else is regenerated):
//   big/    store 1: --mailboxes (100,000) mailboxes, --messages (1,000,000)
//           messages of 280..579 bytes (valid RFC 5322, CRLF, unique
//           Message-ID, a third flagged \Seen), message i in mailbox
//           i % mailboxes (user/uNNNNNN and its Sent, Archive, Drafts).
//   small/  store 2: --deep_messages (20,000) messages of the standard
//           workload (tools/workload.h: seed 42, --deep_users INBOXes,
//           lognormal sizes, median 8 KiB) for the deep check.
//
// How the big master is generated, all through store/slot.h:
//   * Slot::Init, Slot::Open, Slot::BeginEpoch(1).
//   * Mailboxes: the first and the last --create_probe are made with
//     Slot::CreateMailbox, timed (printed per call, at ~0 and at ~N
//     mailboxes). CreateMailbox costs O(mailboxes) per call: after its
//     commit it rebuilds the slot's whole assigned state from the index
//     (store/slot.cc, Slot::CreateMailbox -> LoadAssignedStateLocked, which
//     also walks every mailbox again through Index::Quotas()), so
//     100,000 of them would take about N/2 x (the per-call cost at N). The
//     mailboxes in between are written as the very CreateMailbox records
//     Slot::CreateMailbox writes (same payload: a random 32-hex id, the
//     name, a UIDVALIDITY above every earlier one) through
//     Slot::AppendReplicated, 5,000 records per durable commit: the engine's
//     replica apply path, which validates, logs, fsyncs and applies them to
//     the index as for any record. The slot's state is the same as if
//     CreateMailbox had made them (checked: nothing quarantined).
//   * Messages: Slot::Append from --writers threads (16) sharing fsyncs by
//     group commit, then FlushBodies and Checkpoint before the slot closes.
// The big replica (slot 2 of the same cluster and store) is, by default
// (--big_replica=copy), a slot directory made by Slot::Init with its own
// identity into which the closed master's meta/, spool/ and log/ are copied
// (file copies, then sync()); --big_replica=catchup makes it with a real
// SyncClient catch-up (kCatchUp: a snapshot, then the bodies) instead, and
// prints its time. The small store has two replicas: replica/, a copy made
// the same way (spool packs in arrival, i.e. LSN, order: as on a master and
// on a replica fed by the record stream), and replica_snapshot/, made by a
// real SyncClient catch-up of an empty replica (a snapshot, then the bodies
// it asks for, which arrive in GUID order).
//
// Figures (one line each; PASS/FAIL against the bars of issue 6):
//   a. fast check, slots identical (slot digests match): wall time of each
//      of --runs checks; bar: median < 0.2 s.
//   b. one mailbox made to differ on the replica by a real engine write on
//      the replica slot: Slot::RepairMailbox (a local REPAIR record, which
//      takes no LSN, so the replica stays at the master's LSN) with the
//      mailbox's own state except one more flag (\Flagged) on its first
//      message. Fast check (slot digests differ -> per-mailbox STORED
//      digests -> contents of the differing one): wall time of each of
//      --runs checks, bar: median < 5 s; and whether check_result() names
//      exactly that mailbox and UID. Then a --repair check (timed, no bar)
//      puts the master's state back, and one more fast check confirms the
//      slot digests match again.
//   c. deep check of the small store against each of its replicas (c1: LSN
//      order, c2: GUID order) (VerifyRequest on the replica: index rebuilt
//      from the log and every body hashed, bodies read in GUID order; ROWS
//      digests on both sides): bytes_hashed / wall seconds, against the
//      sequential read rate of a freshly written file as large as the
//      replica's spool packs, in the same directory (written in 1 MiB
//      chunks, fdatasync, POSIX_FADV_DONTNEED, then read with read() in
//      1 MiB chunks). Before each deep check every file of the master and of
//      that replica (packs, log segments, index) gets fdatasync +
//      POSIX_FADV_DONTNEED too. Then the ratio. A second deep check right
//      after (warm cache) is printed for reference.
//   d. (only with --parts ...,d) a deep check of the big store while one
//      mailbox differs as in b: wall time and whether it names the mailbox.
// Also: the command line, the load average at start, generation times.
//
// A benchmark, not a test: keep other heavy work off the machine.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "common/io_thread.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "proto/check.pb.h"
#include "proto/log.pb.h"
#include "store/identity.h"
#include "store/index.h"
#include "store/log_format.h"
#include "store/slot.h"
#include "syncclient/mailbox_compare.h"
#include "syncclient/sync_client.h"
#include "syncclient/sync_server.h"
#include "tools/slot_delivery.h"
#include "tools/workload.h"

ABSL_FLAG(std::string, dir, "",
          "directory for the generated stores (created; deleted at the end unless --keep); "
          "default ${TMPDIR:-/tmp}/mailrepl-check-bench");
ABSL_FLAG(bool, keep, false,
          "keep --dir afterwards; a later run reuses the stores there after checking their shape");
ABSL_FLAG(uint64_t, mailboxes, 100000, "mailboxes of the big store (parts a, b)");
ABSL_FLAG(uint64_t, messages, 1000000, "messages of the big store (parts a, b)");
ABSL_FLAG(uint64_t, deep_messages, 20000, "standard-workload messages of the small store (part c)");
ABSL_FLAG(int, deep_users, 100, "users (INBOXes) of the small store");
ABSL_FLAG(int, writers, 16, "threads appending while the stores are generated");
ABSL_FLAG(int, runs, 3, "fast checks per case in parts a and b (the bar applies to the median)");
ABSL_FLAG(int, create_probe, 20,
          "mailboxes made with Slot::CreateMailbox (timed) at the start and at the end of the "
          "big store's mailboxes");
ABSL_FLAG(std::string, parts, "a,b,c",
          "which parts to run: a, b, c, and d (not by default: a deep check of the big store "
          "with one mailbox differing); a, b and d share the big store");
ABSL_FLAG(std::string, big_replica, "copy",
          "how the big replica is made: copy (files of the closed master) or catchup (SyncClient)");
ABSL_FLAG(bool, verbose, false, "show the engine's info log lines");

namespace mailrepl {
namespace {

constexpr char kCluster[] = "checkbench";
constexpr uint64_t kBigStore = 1;
constexpr uint64_t kSmallStore = 2;
constexpr char kSecret[] = "check_bench shared secret (not a real one)";
constexpr double kBarSame = 0.2;  // s, fast check, slot digests match
constexpr double kBarDiff = 5.0;  // s, fast check, per-mailbox digest pass runs
constexpr int64_t kBaseDate = 1700000000;
constexpr size_t kMiB = 1 << 20;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Line(const std::string& label, const std::string& value, const std::string& verdict = "") {
  std::printf("%-60s %s%s%s\n", label.c_str(), value.c_str(), verdict.empty() ? "" : "  ",
              verdict.c_str());
  std::fflush(stdout);
}

std::string Verdict(bool pass, const std::string& bar) {
  return absl::StrCat(pass ? "PASS" : "FAIL", " (bar ", bar, ")");
}

void Progress(const std::string& text) {
  std::fprintf(stderr, "check_bench: %s\n", text.c_str());
  std::fflush(stderr);
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string s;
  std::getline(in, s);
  return s;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string Seconds(const std::vector<double>& v) {
  std::vector<std::string> parts;
  for (double x : v) parts.push_back(absl::StrFormat("%.3f", x));
  return absl::StrCat(absl::StrJoin(parts, " "), " s");
}

// ---------------------------------------------------------------- files

namespace fs = std::filesystem;

uint64_t TreeBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) total += e.file_size(ec);
  }
  return total;
}

// fdatasync + POSIX_FADV_DONTNEED on every regular file under dir: its pages
// leave the page cache (dirty pages are not dropped, hence the sync).
absl::Status DropFromCache(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    if (!e.is_regular_file(ec)) continue;
    const std::string path = e.path().string();
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(errno, "open", path);
    ::fdatasync(fd);
    int rc = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
    if (rc != 0) return ErrnoStatus(rc, "posix_fadvise", path);
  }
  if (ec) return absl::InternalError(absl::StrCat("walking ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

// Replaces the contents of dst with copies of src's files (recursively),
// leaving out SQLite's shared-memory files and lock files.
absl::Status ReplaceContents(const std::string& src, const std::string& dst) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dst, ec)) fs::remove_all(e.path(), ec);
  if (ec) return absl::InternalError(absl::StrCat("emptying ", dst, ": ", ec.message()));
  for (const auto& e : fs::recursive_directory_iterator(src, ec)) {
    const fs::path rel = fs::relative(e.path(), src, ec);
    const fs::path to = fs::path(dst) / rel;
    if (e.is_directory(ec)) {
      fs::create_directories(to, ec);
      continue;
    }
    const std::string name = e.path().filename().string();
    if (absl::EndsWith(name, "-shm") || name == "LOCK") continue;
    if (!fs::copy_file(e.path(), to, fs::copy_options::overwrite_existing, ec) || ec) {
      return absl::InternalError(
          absl::StrCat("copying ", e.path().string(), " to ", to.string(), ": ", ec.message()));
    }
  }
  if (ec) return absl::InternalError(absl::StrCat("walking ", src, ": ", ec.message()));
  return absl::OkStatus();
}

// Sequential read rate of a freshly written file of `bytes` in dir, read
// cold: written in 1 MiB chunks, fdatasync, POSIX_FADV_DONTNEED, closed,
// then read with read() in 1 MiB chunks. MB/s (10^6 bytes).
absl::StatusOr<double> SequentialReadRate(const std::string& dir, uint64_t bytes) {
  const std::string path = dir + "/seqread.tmp";
  std::string chunk(kMiB, '\0');
  std::mt19937_64 rng(7);
  for (size_t i = 0; i < chunk.size(); i += 8) {
    const uint64_t v = rng();
    std::memcpy(&chunk[i], &v, 8);
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return ErrnoStatus(errno, "create", path);
  for (uint64_t done = 0; done < bytes; done += kMiB) {
    absl::Status w = WriteAll(fd, chunk, path);
    if (!w.ok()) {
      ::close(fd);
      ::unlink(path.c_str());
      return w;
    }
  }
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open", path);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  uint64_t read_bytes = 0;
  const double t0 = Now();
  for (;;) {
    ssize_t n = ::read(fd, chunk.data(), chunk.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return ErrnoStatus(err, "read", path);
    }
    if (n == 0) break;
    read_bytes += static_cast<uint64_t>(n);
  }
  const double seconds = Now() - t0;
  ::close(fd);
  ::unlink(path.c_str());
  return read_bytes / 1e6 / seconds;
}

// ---------------------------------------------------------------- sync

struct CheckOutcome {
  absl::Status status;
  checkpb::ReplicaCheck result;
  sync::SyncStats stats;
  double seconds = 0;
  double max_stall = 0;  // longest the client's io thread was kept from its timers
  double max_server_stall = 0;  // the same for the replica's (server's) io thread
};

asio::awaitable<CheckOutcome> ClientRun(asio::io_context& io, sync::SyncClientOptions options) {
  sync::SyncClient client(io, std::move(options));
  CheckOutcome out;
  out.status = co_await client.Run();
  out.result = client.check_result();
  out.stats = client.stats();
  co_return out;
}

// One io_context on its own thread, as each replicad runs everything.
class IoThread {
 public:
  IoThread() = default;
  ~IoThread() { Join(); }
  void Start() {
    thread_ = std::thread([this] {
      IoThreadScope io_thread;
      io_.run();
      done_.set_value();
    });
  }
  // Lets run() return once nothing is pending (after at most 10 s: stop).
  void Join() {
    if (!thread_.joinable()) return;
    work_.reset();
    if (finished_.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      Progress("an io thread did not finish within 10 s; stopping it");
      io_.stop();
    }
    thread_.join();
  }
  asio::io_context& io() { return io_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::promise<void> done_;
  std::future<void> finished_ = done_.get_future();
  std::thread thread_;
};

// The two ends as on two hosts: a SyncServer on the replica slot on one io
// thread (the replica's replicad), the sync clients on another (the
// master's replicad, which runs its checks on its only io thread). A 5 ms
// ticker on each thread measures how long a check keeps that thread from
// everything else (LMTP, heartbeats, other sync clients and servers).
class SyncRig {
 public:
  explicit SyncRig(Slot& replica)
      : server_(server_thread_.io(), replica,
                sync::SyncServerOptions{.listen = "127.0.0.1:0", .secret = kSecret}) {}

  ~SyncRig() {
    if (!started_) return;
    for (Probe* p : {&client_probe_, &server_probe_}) {
      asio::post(p->thread.io(), [p] {
        p->stopping = true;
        if (p->timer != nullptr) p->timer->cancel();
      });
    }
    client_thread_.Join();
    asio::post(server_thread_.io(), [this] { server_.Stop(); });
    server_thread_.Join();
  }

  absl::Status Start() {
    RETURN_IF_ERROR(server_.Listen());
    address_ = absl::StrCat("127.0.0.1:", server_.port());
    asio::co_spawn(server_thread_.io(), server_.Run(), asio::detached);
    asio::co_spawn(client_thread_.io(), Ticker(client_probe_), asio::detached);
    asio::co_spawn(server_thread_.io(), Ticker(server_probe_), asio::detached);
    server_thread_.Start();
    client_thread_.Start();
    started_ = true;
    return absl::OkStatus();
  }

  sync::SyncClientOptions Options(const SlotPaths& master, sync::SyncClientOptions::Mode mode) {
    sync::SyncClientOptions o;
    o.slot = master;
    o.server = address_;
    o.secret = kSecret;
    o.mode = mode;
    return o;
  }

  // Runs one client to its end; wall time from co_spawn to completion.
  CheckOutcome Run(sync::SyncClientOptions options) {
    client_probe_.max_us.store(0);
    server_probe_.max_us.store(0);
    const double t0 = Now();
    std::future<CheckOutcome> f = asio::co_spawn(
        client_thread_.io(), ClientRun(client_thread_.io(), std::move(options)), asio::use_future);
    CheckOutcome out = f.get();
    out.seconds = Now() - t0;
    out.max_stall = client_probe_.max_us.load() / 1e6;
    out.max_server_stall = server_probe_.max_us.load() / 1e6;
    return out;
  }

  CheckOutcome Check(const SlotPaths& master, bool deep, bool repair) {
    sync::SyncClientOptions o = Options(master, sync::SyncClientOptions::Mode::kCheck);
    o.check = {.deep = deep, .repair = repair, .max_bytes_per_second = 0};
    return Run(std::move(o));
  }

 private:
  // A 5 ms timer on one io thread and how late it fired at most.
  struct Probe {
    IoThread& thread;
    std::atomic<int64_t> max_us{0};
    bool stopping = false;                // the probe's thread only
    asio::steady_timer* timer = nullptr;  // the probe's thread only
  };

  static asio::awaitable<void> Ticker(Probe& p) {
    asio::steady_timer timer(p.thread.io());
    p.timer = &timer;
    while (!p.stopping) {
      const auto due = std::chrono::steady_clock::now() + std::chrono::milliseconds(5);
      timer.expires_at(due);
      asio::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (p.stopping) break;
      const int64_t late = std::chrono::duration_cast<std::chrono::microseconds>(
                               std::chrono::steady_clock::now() - due)
                               .count();
      int64_t seen = p.max_us.load();
      while (late > seen && !p.max_us.compare_exchange_weak(seen, late)) {
      }
    }
    p.timer = nullptr;
  }

  IoThread server_thread_;
  IoThread client_thread_;
  sync::SyncServer server_;
  std::string address_;
  bool started_ = false;
  Probe client_probe_{client_thread_};
  Probe server_probe_{server_thread_};
};

std::string Describe(const checkpb::ReplicaCheck& c) {
  std::string s = absl::StrCat("lsn=", c.lsn(), " slot_digest_match=", c.slot_digest_match(),
                               " differences=", c.differences_size(),
                               " problems=", c.problems_size());
  for (const auto& d : c.differences()) {
    absl::StrAppend(&s, " [", d.name(), " (", d.mailbox_id(), ") kind=", d.kind(),
                    " missing=", d.missing_uids_size(), " extra=", d.extra_uids_size(),
                    " flag_uids=", absl::StrJoin(d.flag_uids(), ","),
                    d.detail().empty() ? "" : " detail=", d.detail(), "]");
  }
  for (const auto& p : c.problems()) absl::StrAppend(&s, " problem: ", p);
  return s;
}

// ---------------------------------------------------------------- stores

struct Shape {
  uint64_t mailboxes = 0;
  uint64_t messages = 0;
  uint64_t last_lsn = 0;
  Digest digest;
  size_t quarantined = 0;
};

Shape ShapeOf(Slot& slot) {
  Shape s;
  slot.WithIndex([&](Index& ix, Spool&) {
    s.mailboxes = ix.mailboxes().size();
    for (const auto& [id, mb] : ix.mailboxes()) s.messages += mb.messages;
    s.last_lsn = ix.applied_lsn();
    s.digest = ix.slot_digest();
    s.quarantined = ix.quarantined().size();
  });
  return s;
}

// Empty if master and replica have the wanted shape, else why not.
std::string ShapeProblem(Slot& master, Slot& replica, uint64_t mailboxes, uint64_t messages) {
  const Shape m = ShapeOf(master), r = ShapeOf(replica);
  if (m.mailboxes != mailboxes || m.messages != messages) {
    return absl::StrCat("master has ", m.mailboxes, " mailboxes and ", m.messages,
                        " messages, not ", mailboxes, " and ", messages);
  }
  if (r.mailboxes != m.mailboxes || r.messages != m.messages) {
    return absl::StrCat("replica has ", r.mailboxes, " mailboxes and ", r.messages, " messages");
  }
  if (m.last_lsn != r.last_lsn) {
    return absl::StrCat("master at LSN ", m.last_lsn, ", replica at LSN ", r.last_lsn);
  }
  if (!(m.digest == r.digest)) return "slot digests differ";
  if (m.quarantined + r.quarantined > 0) return "mailboxes are quarantined";
  return "";
}

std::string ReadyText(const std::vector<std::string>& params) {
  return absl::StrCat("check_bench v2 ", absl::StrJoin(params, " "), "\n");
}

bool IsReady(const std::string& root, const std::string& text) {
  auto have = ReadFile(root + "/READY");
  return have.ok() && *have == text;
}

std::string BigMailboxName(uint64_t k) {
  static const char* const kFolders[] = {"", "/Sent", "/Archive", "/Drafts"};
  return absl::StrFormat("user/u%06d%s", k / 4, kFolders[k % 4]);
}

uint64_t Mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Message i of the big store (to mailbox k's owner): 280..579 bytes.
std::string BigMessage(uint64_t i, uint64_t k) {
  static const char* const kWords[] = {
      "replica", "master", "mailbox", "digest", "check",  "store", "spool",  "index",
      "ledger",  "harbor", "window",  "garden", "quiet",  "river", "signal", "paper",
      "orange",  "metal",  "cloud",   "stone",  "letter", "field", "amber",  "north"};
  uint64_t h = Mix(i);
  const absl::Time date = absl::FromUnixSeconds(kBaseDate + static_cast<int64_t>(i) * 7);
  std::string m = absl::StrCat(
      "Date: ", absl::FormatTime("%a, %d %b %Y %H:%M:%S +0000", date, absl::UTCTimeZone()),
      "\r\nFrom: sender", h % 997, "@example.org\r\nTo: ", absl::StrFormat("u%06d", k / 4),
      "@example.test\r\nSubject: check bench message ", i, "\r\nMessage-ID: <cb", i,
      "@bench.invalid>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii"
      "\r\n\r\n");
  const size_t target = 280 + h % 300;
  std::string line;
  while (m.size() + line.size() + 2 < target) {
    h = Mix(h);
    const char* w = kWords[h % (sizeof kWords / sizeof kWords[0])];
    if (line.size() + std::strlen(w) + 1 > 72) {
      absl::StrAppend(&m, line, "\r\n");
      line.clear();
    }
    if (!line.empty()) line += ' ';
    line += w;
  }
  absl::StrAppend(&m, line, "\r\n");
  return m;
}

SlotIdentity Identity(uint64_t store, uint64_t slot) {
  return SlotIdentity{kCluster, store, slot, absl::ToUnixSeconds(absl::Now())};
}

// The big master (see the header comment). Leaves the slot closed.
absl::Status GenerateBigMaster(const SlotPaths& paths, uint64_t mailboxes, uint64_t messages) {
  const double t_start = Now();
  RETURN_IF_ERROR(Slot::Init(paths, Identity(kBigStore, 1)));
  ASSIGN_OR_RETURN(std::unique_ptr<Slot> slot, Slot::Open(paths, {}));
  RETURN_IF_ERROR(slot->BeginEpoch(1));

  // Mailboxes.
  const uint64_t probe =
      std::min<uint64_t>(static_cast<uint64_t>(std::max(0, absl::GetFlag(FLAGS_create_probe))),
                         mailboxes / 2);
  uint32_t uidvalidity = 0;
  auto create = [&](uint64_t k) -> absl::Status {
    ASSIGN_OR_RETURN(MailboxInfo mb, slot->CreateMailbox(BigMailboxName(k)));
    uidvalidity = std::max(uidvalidity, mb.uidvalidity);
    return absl::OkStatus();
  };
  const double t_mb = Now();
  for (uint64_t k = 0; k < probe; ++k) RETURN_IF_ERROR(create(k));
  const double first_probe = Now() - t_mb;
  std::mt19937_64 rng(20240606);
  const uint64_t bulk_end = mailboxes - probe;
  const double t_bulk = Now();
  for (uint64_t k = probe; k < bulk_end;) {
    std::vector<LogRecord> batch;
    uint64_t lsn = slot->last_lsn() + 1;
    const uint64_t epoch = slot->epoch();
    for (; k < bulk_end && batch.size() < 5000; ++k) {
      logpb::CreateMailbox c;
      const uint64_t hi = rng();
      const uint64_t lo = rng();
      c.set_mailbox_id(absl::StrFormat("%016x%016x", hi, lo));
      c.set_name(BigMailboxName(k));
      c.set_uidvalidity(++uidvalidity);
      LogRecord r;
      r.lsn = lsn++;
      r.epoch = epoch;
      r.type = RecordType::kCreateMailbox;
      r.payload = c.SerializeAsString();
      batch.push_back(std::move(r));
    }
    RETURN_IF_ERROR(slot->AppendReplicated(batch));
  }
  const double bulk = Now() - t_bulk;
  const double t_last = Now();
  for (uint64_t k = bulk_end; k < mailboxes; ++k) RETURN_IF_ERROR(create(k));
  const double last_probe = Now() - t_last;
  const double mailbox_seconds = Now() - t_mb;
  if (probe > 0) {
    const double first_ms = first_probe / probe * 1e3, last_ms = last_probe / probe * 1e3;
    Line(absl::StrFormat("gen: Slot::CreateMailbox per call, first %d (0 mailboxes)", probe),
         absl::StrFormat("%.2f ms", first_ms));
    Line(absl::StrFormat("gen: Slot::CreateMailbox per call, last %d (~%d mailboxes)", probe,
                         mailboxes),
         absl::StrFormat("%.2f ms", last_ms));
    Line("gen: => all mailboxes by CreateMailbox would take about",
         absl::StrFormat("%.0f s (N/2 x the last per-call cost)", mailboxes / 2.0 * last_ms / 1e3));
  }
  Line(absl::StrFormat("gen: %d CreateMailbox records by AppendReplicated (5000/commit)",
                       bulk_end - probe),
       absl::StrFormat("%.2f s", bulk));
  Line("gen: big store mailboxes, total", absl::StrFormat("%.2f s", mailbox_seconds));

  // Messages.
  const int writers = std::max(1, absl::GetFlag(FLAGS_writers));
  std::atomic<uint64_t> next{0}, done{0};
  std::atomic<bool> stop{false};
  std::mutex error_mu;
  absl::Status first_error;
  std::atomic<uint64_t> bytes{0};
  const uint64_t step = std::max<uint64_t>(1, messages / 10);
  const double t_msg = Now();
  auto work = [&] {
    for (;;) {
      const uint64_t i = next.fetch_add(1);
      if (i >= messages || stop.load()) return;
      const uint64_t k = i % mailboxes;
      AppendRequest req;
      req.mailbox = BigMailboxName(k);
      req.body = BigMessage(i, k);
      if (i % 3 == 0) req.flags = {"\\Seen"};
      req.internal_date = kBaseDate + static_cast<int64_t>(i) * 7;
      bytes.fetch_add(req.body.size());
      absl::StatusOr<AppendResult> r = slot->Append(req);
      if (!r.ok()) {
        std::lock_guard<std::mutex> l(error_mu);
        if (first_error.ok()) {
          first_error = absl::Status(r.status().code(), absl::StrCat("append of message ", i, " to ",
                                                                   req.mailbox, ": ",
                                                                   r.status().message()));
        }
        stop = true;
        return;
      }
      const uint64_t d = done.fetch_add(1) + 1;
      if (d % step == 0) {
        Progress(absl::StrFormat("big store: %d of %d messages, %.0f msg/s", d, messages,
                                 d / (Now() - t_msg)));
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < writers; ++t) threads.emplace_back(work);
  for (auto& t : threads) t.join();
  RETURN_IF_ERROR(first_error);
  const double msg_seconds = Now() - t_msg;
  RETURN_IF_ERROR(slot->FlushBodies());
  RETURN_IF_ERROR(slot->Checkpoint());
  const SlotStats st = slot->stats();
  slot.reset();
  Line(absl::StrFormat("gen: %d messages by Slot::Append, %d writers", messages, writers),
       absl::StrFormat("%.1f s, %.0f msg/s, %.1f MB of messages, %.1f msg/commit", msg_seconds,
                       messages / msg_seconds, bytes.load() / 1e6,
                       st.commits ? static_cast<double>(st.records) / st.commits : 0.0));
  Line("gen: big master total (incl. flush, checkpoint, close)",
       absl::StrFormat("%.1f s, %.1f MB on disk", Now() - t_start, TreeBytes(paths.root) / 1e6));
  return absl::OkStatus();
}

// The small master: the standard workload through tools/slot_delivery.
absl::Status GenerateSmallMaster(const SlotPaths& paths, uint64_t messages, int users) {
  const double t0 = Now();
  RETURN_IF_ERROR(Slot::Init(paths, Identity(kSmallStore, 1)));
  ASSIGN_OR_RETURN(std::unique_ptr<Slot> slot, Slot::Open(paths, {}));
  RETURN_IF_ERROR(slot->BeginEpoch(1));
  DeliveryOptions o;
  o.workload.users = users;
  o.count = messages;
  o.threads = std::max(1, absl::GetFlag(FLAGS_writers));
  ASSIGN_OR_RETURN(DeliveryStats st, DeliverToSlot(*slot, o));
  RETURN_IF_ERROR(slot->FlushBodies());
  RETURN_IF_ERROR(slot->Checkpoint());
  slot.reset();
  Line(absl::StrFormat("gen: small store, %d workload messages, %d writers", messages, o.threads),
       absl::StrFormat("%.1f s (appends %.1f s, %.0f msg/s, %.1f MB), %.1f MB on disk",
                       Now() - t0, st.seconds, st.msgs_per_s(), st.bytes / 1e6,
                       TreeBytes(paths.root) / 1e6));
  return absl::OkStatus();
}

absl::Status ReplicaByCopy(const SlotPaths& master, const SlotPaths& replica, uint64_t store) {
  const double t0 = Now();
  RETURN_IF_ERROR(Slot::Init(replica, Identity(store, 2)));
  RETURN_IF_ERROR(ReplaceContents(master.meta, replica.meta));
  RETURN_IF_ERROR(ReplaceContents(master.spool, replica.spool));
  RETURN_IF_ERROR(ReplaceContents(master.log_dir(), replica.log_dir()));
  ::sync();
  Line("gen: replica by copying the closed master's meta/ spool/ log/",
       absl::StrFormat("%.1f s", Now() - t0));
  return absl::OkStatus();
}

// A real catch-up: a SyncServer on the empty replica, a kCatchUp client.
absl::Status ReplicaByCatchUp(const SlotPaths& master, const SlotPaths& replica, uint64_t store,
                              const std::string& what) {
  RETURN_IF_ERROR(Slot::Init(replica, Identity(store, 2)));
  ASSIGN_OR_RETURN(std::unique_ptr<Slot> slot, Slot::Open(replica, {}));
  CheckOutcome out;
  {
    SyncRig rig(*slot);
    RETURN_IF_ERROR(rig.Start());
    out = rig.Run(rig.Options(master, sync::SyncClientOptions::Mode::kCatchUp));
  }
  RETURN_IF_ERROR(out.status);
  Line(absl::StrCat("gen: ", what, " replica by SyncClient catch-up (kCatchUp)"),
       absl::StrFormat("%.1f s (%d snapshot, %d records, %d bodies sent)", out.seconds,
                       out.stats.snapshots, out.stats.records, out.stats.bodies_sent));
  Line(absl::StrCat("gen: ", what, " catch-up: longest stall of the master's / replica's io thread"),
       absl::StrFormat("%.3f s / %.3f s", out.max_stall, out.max_server_stall));
  return absl::OkStatus();
}

struct OpenStore {
  std::unique_ptr<Slot> master;
  std::vector<std::unique_ptr<Slot>> replicas;
};

absl::StatusOr<OpenStore> OpenAll(const SlotPaths& master, const std::vector<SlotPaths>& replicas,
                                  const std::string& what) {
  OpenStore p;
  double t0 = Now();
  ASSIGN_OR_RETURN(p.master, Slot::Open(master, {}));
  std::string times = absl::StrFormat("%.2f s", Now() - t0);
  for (const SlotPaths& r : replicas) {
    t0 = Now();
    ASSIGN_OR_RETURN(std::unique_ptr<Slot> slot, Slot::Open(r, {}));
    p.replicas.push_back(std::move(slot));
    absl::StrAppend(&times, absl::StrFormat(" / %.2f s", Now() - t0));
  }
  Line(absl::StrCat(what, ": Slot::Open master / replica(s)"), times);
  return p;
}

std::string StoreProblem(OpenStore& p, uint64_t mailboxes, uint64_t messages) {
  for (auto& r : p.replicas) {
    std::string problem = ShapeProblem(*p.master, *r, mailboxes, messages);
    if (!problem.empty()) return absl::StrCat(r->paths().root, ": ", problem);
  }
  return "";
}

// The stores under root (master/ and one directory per replica name),
// reused when READY says they were made with the same parameters and their
// shape checks out, else made anew by make(master, replicas).
absl::StatusOr<OpenStore> PrepareStore(
    const std::string& root, const std::string& ready, const std::vector<std::string>& names,
    uint64_t mailboxes, uint64_t messages,
    const std::function<absl::Status(const SlotPaths&, const std::vector<SlotPaths>&)>& make,
    const std::string& what) {
  const SlotPaths master = SlotPaths::Under(root + "/master");
  std::vector<SlotPaths> replicas;
  for (const std::string& n : names) replicas.push_back(SlotPaths::Under(root + "/" + n));
  if (IsReady(root, ready)) {
    absl::StatusOr<OpenStore> p = OpenAll(master, replicas, what);
    std::string problem =
        p.ok() ? StoreProblem(*p, mailboxes, messages) : std::string(p.status().message());
    if (problem.empty()) {
      Line(absl::StrCat(what, ": cached stores"), "reused (shape verified)");
      return p;
    }
    Line(absl::StrCat(what, ": cached stores"), absl::StrCat("regenerated: ", problem));
  }
  std::error_code ec;
  fs::remove_all(root, ec);
  RETURN_IF_ERROR(MakeDirs(root));
  const double t0 = Now();
  RETURN_IF_ERROR(make(master, replicas));
  Line(absl::StrCat(what, ": generation, total"), absl::StrFormat("%.1f s", Now() - t0));
  ASSIGN_OR_RETURN(OpenStore p, OpenAll(master, replicas, what));
  std::string problem = StoreProblem(p, mailboxes, messages);
  if (!problem.empty()) {
    return absl::InternalError(absl::StrCat(what, " generated with the wrong shape: ", problem));
  }
  RETURN_IF_ERROR(WriteFileAtomically(root + "/READY", ready));
  return p;
}

// ---------------------------------------------------------------- parts

absl::Status PartsAB(const std::string& base, bool part_a, bool part_b, bool part_d) {
  const uint64_t mailboxes = absl::GetFlag(FLAGS_mailboxes);
  const uint64_t messages = absl::GetFlag(FLAGS_messages);
  const std::string how = absl::GetFlag(FLAGS_big_replica);
  if (how != "copy" && how != "catchup") {
    return absl::InvalidArgumentError("--big_replica must be copy or catchup");
  }
  const int runs = std::max(1, absl::GetFlag(FLAGS_runs));
  const std::string root = base + "/big";
  const std::string ready =
      ReadyText({absl::StrCat("mailboxes=", mailboxes), absl::StrCat("messages=", messages)});
  ASSIGN_OR_RETURN(
      OpenStore store,
      PrepareStore(
          root, ready, {"replica"}, mailboxes, messages,
          [&](const SlotPaths& m, const std::vector<SlotPaths>& r) -> absl::Status {
            RETURN_IF_ERROR(GenerateBigMaster(m, mailboxes, messages));
            if (how == "copy") return ReplicaByCopy(m, r[0], kBigStore);
            return ReplicaByCatchUp(m, r[0], kBigStore, "big");
          },
          "big store"));
  Slot& master = *store.master;
  Slot& replica = *store.replicas[0];
  const SlotPaths& mp = master.paths();
  Line("big store: mailboxes / messages / LSN",
       absl::StrFormat("%d / %d / %d", mailboxes, messages, master.last_lsn()));

  // What the check path does besides the digests, timed on their own.
  {
    const double t0 = Now();
    absl::StatusOr<std::unique_ptr<Index>> view = Index::OpenReadOnly(mp.index_file());
    RETURN_IF_ERROR(view.status());
    Line("info: one master index view (Index::OpenReadOnly)",
         absl::StrFormat("%.3f s (a full view; a check reads position-only views, and a "
                         "full one only where the slot digests differ)",
                         Now() - t0));
  }
  {
    const double t0 = Now();
    const size_t n = master.ListMailboxes().size();
    Line("info: Slot::ListMailboxes on the master (replicad CheckStore)",
         absl::StrFormat("%.3f s for %d mailboxes (before the check, not in it)", Now() - t0, n));
  }

  SyncRig rig(replica);
  RETURN_IF_ERROR(rig.Start());
  Line("load average before the checks", LoadAverage());

  // Runs `runs` checks; the times, the longest io stall, and "" or what was wrong.
  struct Series {
    std::vector<double> times;
    double max_stall = 0;
    std::string wrong;
    std::string last;
    checkpb::ReplicaCheck result;
  };
  auto series = [&](bool deep, int n,
                    const std::function<std::string(const checkpb::ReplicaCheck&)>& judge) {
    Series out;
    for (int i = 0; i < n; ++i) {
      CheckOutcome c = rig.Check(mp, deep, false);
      out.times.push_back(c.seconds);
      out.max_stall = std::max(out.max_stall, c.max_stall);
      out.last = c.status.ok() ? Describe(c.result) : c.status.ToString();
      out.result = c.result;
      const std::string wrong = c.status.ok() ? judge(c.result) : c.status.ToString();
      if (!wrong.empty()) out.wrong = wrong;
    }
    return out;
  };
  auto same = [](const checkpb::ReplicaCheck& r) -> std::string {
    if (r.slot_digest_match() && r.differences_size() == 0 && r.problems_size() == 0) return "";
    return Describe(r);
  };

  if (part_a) {
    Series a = series(false, runs, same);
    const double med = Median(a.times);
    Line(absl::StrFormat("a. fast check, identical slots: %d runs", runs), Seconds(a.times));
    Line("a. fast check, identical slots: median wall time", absl::StrFormat("%.3f s", med),
         Verdict(a.wrong.empty() && med < kBarSame, "< 0.2 s"));
    Line("a. result", a.wrong.empty() ? absl::StrCat("ok: ", a.last)
                                      : absl::StrCat("WRONG: ", a.wrong));
    Line("a. longest stall of the client's io thread", absl::StrFormat("%.3f s", a.max_stall));
  }

  if (part_b || part_d) {
    // One mailbox differs on the replica: a REPAIR record (local, no LSN)
    // with its own state plus \Flagged on its first message.
    const std::string name = BigMailboxName(mailboxes / 2 + 1);
    ASSIGN_OR_RETURN(MailboxInfo mb, replica.GetMailbox(name));
    ASSIGN_OR_RETURN(logpb::RepairMailbox state,
                     replica.WithIndex([&](Index& ix, Spool&) {
                       return sync::MailboxState(ix, mb.id);
                     }));
    if (state.messages_size() == 0) {
      return absl::FailedPreconditionError(absl::StrCat("mailbox ", name, " has no messages"));
    }
    logpb::SnapshotMessage* m = state.mutable_messages(0);
    const uint32_t uid = m->uid();
    std::vector<std::string> flags(m->flags().begin(), m->flags().end());
    flags.push_back("\\Flagged");
    flags = NormalizeFlags(flags);
    m->clear_flags();
    for (const auto& f : flags) m->add_flags(f);
    state.set_reason("check_bench: one more flag on the replica");
    const uint64_t lsn_before = replica.last_lsn();
    // Leave no cache behind that a later run would find differing, unless
    // the repair below puts it back.
    std::error_code ec;
    fs::remove(root + "/READY", ec);
    RETURN_IF_ERROR(replica.RepairMailbox(state.SerializeAsString(), {}));
    Line("b. replica changed by Slot::RepairMailbox",
         absl::StrFormat("%s (%s) UID %d +\\Flagged; replica LSN %d -> %d, master LSN %d", name,
                         mb.id, uid, lsn_before, replica.last_lsn(), master.last_lsn()));
    auto exact = [&](const checkpb::ReplicaCheck& r) -> std::string {
      const bool ok = !r.slot_digest_match() && r.differences_size() == 1 &&
                      r.differences(0).mailbox_id() == mb.id && r.differences(0).name() == name &&
                      r.differences(0).flag_uids_size() == 1 &&
                      r.differences(0).flag_uids(0) == uid &&
                      r.differences(0).missing_uids_size() == 0 &&
                      r.differences(0).extra_uids_size() == 0;
      return ok ? "" : Describe(r);
    };

    if (part_b) {
      Series b = series(false, runs, exact);
      const double med = Median(b.times);
      Line(absl::StrFormat("b. fast check, one mailbox differs: %d runs", runs), Seconds(b.times));
      Line("b. fast check, one mailbox differs: median wall time", absl::StrFormat("%.3f s", med),
           Verdict(b.wrong.empty() && med < kBarDiff, "< 5 s"));
      Line("b. check_result() names exactly that mailbox and UID",
           b.wrong.empty() ? absl::StrCat("yes: ", b.last) : absl::StrCat("NO: ", b.wrong));
      Line("b. longest stall of the client's io thread", absl::StrFormat("%.3f s", b.max_stall));
    }
    if (part_d) {
      Series d = series(true, 1, exact);
      Line("d. deep check of the big store, one mailbox differs: wall time",
           absl::StrFormat("%.1f s (%d bodies, %.1f MB hashed, %.1f MB/s)", d.times[0],
                           d.result.bodies_hashed(), d.result.bytes_hashed() / 1e6,
                           d.result.bytes_hashed() / 1e6 / d.times[0]));
      Line("d. check_result() names exactly that mailbox and UID",
           d.wrong.empty() ? absl::StrCat("yes: ", d.last) : absl::StrCat("NO: ", d.wrong));
      Line("d. longest stall of the client's io thread", absl::StrFormat("%.3f s", d.max_stall));
    }

    // Put it back with the real --repair path, then confirm.
    CheckOutcome rep = rig.Check(mp, false, true);
    Line("b. --repair check (ROWS re-compare of every mailbox), wall time",
         absl::StrFormat("%.3f s: %s repaired=%d clean_after_repair=%d", rep.seconds,
                         rep.status.ok() ? "ok" : rep.status.ToString(), rep.result.repaired(),
                         rep.result.clean_after_repair()));
    Line("b. --repair check: longest stall of the client's / server's io thread",
         absl::StrFormat("%.3f s / %.3f s", rep.max_stall, rep.max_server_stall));
    Series after = series(false, 1, same);
    Line("b. fast check after the repair",
         absl::StrFormat("%.3f s: %s", after.times[0], after.last));
    if (rep.status.ok() && after.wrong.empty()) {
      RETURN_IF_ERROR(WriteFileAtomically(root + "/READY", ready));
    }
  }
  return absl::OkStatus();
}

absl::Status PartC(const std::string& base) {
  const uint64_t messages = absl::GetFlag(FLAGS_deep_messages);
  const int users = std::max(1, absl::GetFlag(FLAGS_deep_users));
  const std::string root = base + "/small";
  const std::string ready =
      ReadyText({absl::StrCat("workload_messages=", messages), absl::StrCat("users=", users)});
  // Two replicas of the same master: their spool packs hold the bodies in
  // different orders, and the deep check reads bodies in GUID order
  // (store/verify.cc, Index::ForEachBlob ... ORDER BY guid).
  //   replica           copy of the master: packs in arrival (LSN) order, as
  //                     on a master and on a replica fed by the record stream
  //   replica_snapshot  SyncClient catch-up of an empty replica: a snapshot,
  //                     then the bodies it asks for, in GUID order
  ASSIGN_OR_RETURN(
      OpenStore store,
      PrepareStore(
          root, ready, {"replica", "replica_snapshot"}, static_cast<uint64_t>(users), messages,
          [&](const SlotPaths& m, const std::vector<SlotPaths>& r) -> absl::Status {
            RETURN_IF_ERROR(GenerateSmallMaster(m, messages, users));
            RETURN_IF_ERROR(ReplicaByCopy(m, r[0], kSmallStore));
            return ReplicaByCatchUp(m, r[1], kSmallStore, "small");
          },
          "small store"));
  const SlotPaths mp = store.master->paths();
  uint64_t pack_bytes = 0;
  for (auto& r : store.replicas) pack_bytes = std::max(pack_bytes, TreeBytes(r->paths().spool));
  Line("small store: mailboxes / messages / replica spool packs",
       absl::StrFormat("%d / %d / %.1f MB", users, messages, pack_bytes / 1e6));

  Line("load average before the sequential read", LoadAverage());
  ASSIGN_OR_RETURN(double seq,
                   SequentialReadRate(base, std::max<uint64_t>(pack_bytes, 64 * kMiB)));
  Line("c. sequential read, fresh file of the packs' size, cold",
       absl::StrFormat("%.1f MB/s", seq));

  const char* const kLabels[] = {"c1 (replica packs in LSN order, copy of the master)",
                                 "c2 (replica packs in GUID order, snapshot catch-up)"};
  for (size_t i = 0; i < store.replicas.size(); ++i) {
    Slot& replica = *store.replicas[i];
    const std::string label = kLabels[i];
    SyncRig rig(replica);
    RETURN_IF_ERROR(rig.Start());
    Line(absl::StrCat("load average before ", label.substr(0, 2)), LoadAverage());
    RETURN_IF_ERROR(DropFromCache(mp.root));
    RETURN_IF_ERROR(DropFromCache(replica.paths().root));
    CheckOutcome deep = rig.Check(mp, true, false);
    if (!deep.status.ok()) return deep.status;
    const double rate = deep.result.bytes_hashed() / 1e6 / deep.seconds;
    Line(absl::StrCat(label), "");
    Line(absl::StrCat(label.substr(0, 2), ". deep check, cold: wall time"),
         absl::StrFormat("%.2f s (%d bodies, %.1f MB hashed)", deep.seconds,
                         deep.result.bodies_hashed(), deep.result.bytes_hashed() / 1e6));
    Line(absl::StrCat(label.substr(0, 2), ". deep check, cold: MB hashed per second"),
         absl::StrFormat("%.1f MB/s", rate));
    Line(absl::StrCat(label.substr(0, 2), ". deep check / sequential read"),
         absl::StrFormat("%.2f", rate / seq));
    Line(absl::StrCat(label.substr(0, 2), ". deep check result"), Describe(deep.result));
    Line(absl::StrCat(label.substr(0, 2), ". longest stall of the client's io thread"),
         absl::StrFormat("%.3f s", deep.max_stall));
    CheckOutcome warm = rig.Check(mp, true, false);
    if (!warm.status.ok()) return warm.status;
    Line(absl::StrCat(label.substr(0, 2), ". deep check again, warm cache (reference)"),
         absl::StrFormat("%.2f s, %.1f MB/s", warm.seconds,
                         warm.result.bytes_hashed() / 1e6 / warm.seconds));
  }
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "check_bench [--dir DIR] [--keep] [--parts a,b,c] [--mailboxes N] [--messages N] "
      "[--deep_messages N] [--writers T] [--runs R] [--big_replica copy|catchup]\n"
      "The consistency-check benchmark of issue 6 (see the header of bench/check_bench.cc).");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::fprintf(stderr, "check_bench: unexpected argument %s\n", rest[1]);
    return 2;
  }
  if (!absl::GetFlag(FLAGS_verbose)) SetLogQuiet(true);
  std::vector<std::string> args(argv, argv + argc);
  Line("command", absl::StrJoin(args, " "));
  Line("load average at start (/proc/loadavg)", LoadAverage());
  std::string base = absl::GetFlag(FLAGS_dir);
  if (base.empty()) {
    const char* tmp = getenv("TMPDIR");
    base = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/mailrepl-check-bench");
  }
  const std::string parts = absl::GetFlag(FLAGS_parts);
  bool a = false, b = false, c = false, d = false;
  for (absl::string_view p : absl::StrSplit(parts, ',')) {
    a |= p == "a";
    b |= p == "b";
    c |= p == "c";
    d |= p == "d";
  }
  Line("directory", base);
  absl::Status s = MakeDirs(base);
  const double t0 = Now();
  if (s.ok() && (a || b || d)) s = PartsAB(base, a, b, d);
  if (s.ok() && c) s = PartC(base);
  Line("bench wall time", absl::StrFormat("%.1f s", Now() - t0));
  if (!absl::GetFlag(FLAGS_keep)) {
    std::error_code ec;
    fs::remove_all(base, ec);
  }
  if (!s.ok()) {
    std::fprintf(stderr, "check_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace mailrepl

int main(int argc, char** argv) { return mailrepl::Main(argc, argv); }
