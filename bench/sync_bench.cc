// sync_bench: the replication benchmark of issue 3, with real sync_client and
// sync_server processes (from --bin, default: this binary's directory) on the
// standard workload (10,000 messages, seed 42), beside Cyrus IMAP 3.6's own
// replication measured in the same session by bench/cyrus/cyrus_bench.py
// (give its output directory with --cyrus to get the ratios;
// bench/cyrus/run.sh runs both, one after the other).
//
// Parts (each on fresh slots under a fresh directory):
//   (a) initial full sync: master holds the workload (delivered in-process,
//       not timed), replica empty, sync_server running; wall time of one
//       catch-up `sync_client` process from spawn to exit (it bootstraps the
//       replica from a snapshot).
//   (b) rolling under a full-speed writer: the bench appends the workload with
//       --threads threads, once without a sync client (baseline) and once with
//       a rolling `sync_client -r`; every 100 ms it samples master LSN vs
//       replica LSN; reports writer msg/s both ways, max lag in records, and
//       the time from the writer's last ack to the replica holding the last
//       LSN ("drain").
//   (c) lag at a steady rate (--lag-rates, default 1000 and 100 msg/s, for
//       --lag-seconds each): paced in-process writer; per message the time
//       Append returned (acked: durable on the master) and its LSN; a poller
//       thread reads the replica's applied LSN every 1 ms from its index
//       (read-only SQLite) and timestamps when each LSN first became visible;
//       lag = visible - acked; p50, p99, max.
//   (d) catch-up after a replica outage: master with messages [0, 14000),
//       rolling client synced; SIGTERM sync_server; append [14000, 16000);
//       optionally keep the replica down --outages seconds in total; restart
//       sync_server on the same port; time from restart (and from its
//       "listening" line) to the replica holding the last LSN. The rolling
//       client is never restarted; the bench checks it never exited, and
//       reads its reconnect attempts from its log (-v).
//
// Messages: the project's generator (tools/workload.h) by default -- the one
// whose `workload dump` files bench/cyrus/cyrus_bench.py feeds Cyrus, so the
// bytes are the same -- or with --eml-dir .eml files (I.eml as `workload dump`
// writes them, user from the To: header; or userN.IIIIII.eml).
//
// Durable on the replica = the replica index's applied_lsn (meta table),
// which the replica advances after fdatasync of its log.
//
// It prints a table of figures, ratios against Cyrus and the issue's bars,
// and one JSON line. It is a benchmark, not a test.
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <utility>
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
#include "common/sqlite.h"
#include "common/status_macros.h"
#include "store/identity.h"
#include "store/index.h"
#include "store/mailbox_name.h"
#include "store/slot.h"
#include "tools/workload.h"

extern char** environ;

namespace mailrepl {
namespace {

constexpr char kUsage[] =
    "Usage: sync_bench [--dir PARENT] [--bin DIR] [--eml-dir DIR] [--cyrus DIR]\n"
    "                  [--parts a,b,c,d] [--messages N] [--b-messages N] [--catchup N]\n"
    "                  [--threads T] [--trace DIR]\n"
    "                  [--lag-rates 1000,100] [--lag-seconds S] [--lag-threads T]\n"
    "                  [--outages 0] [--port P] [--users U] [--keep]\n"
    "  --dir PARENT    make the fresh bench directory under PARENT (default $TMPDIR,\n"
    "                  else /var/tmp)\n"
    "  --bin DIR       where sync_client and sync_server are (default: beside this binary)\n"
    "  --eml-dir DIR   read message i from DIR/<i>.eml (`workload dump`; user from To:) or\n"
    "                  DIR/user<N>.<i, 6 digits>.eml instead of generating it\n"
    "  --cyrus DIR     output of bench/cyrus/cyrus_bench.py --out DIR (summary.json,\n"
    "                  run*.json): print ratios ours/Cyrus\n"
    "  --outages S,..  part d once per value: keep the replica down at least S seconds\n"
    "                  (0: restart right after the 2,000 messages are appended)\n"
    "  --port P        fixed port for part d (default: a free one)\n"
    "  --b-messages N  messages the writer appends in part b (default --messages; more than\n"
    "                  the .eml files hold needs the generator, i.e. no --eml-dir)\n"
    "  --trace DIR     write DIR/lag_<rate>.csv: per message of part c, LSN, acked, visible\n"
    "  --keep          do not delete the bench directory (deleting ~60,000 files makes file\n"
    "                  creation slow for minutes on ext4 without a journal: see the probe)\n";

// $TMPDIR if set, else /var/tmp (usually on disk, unlike a tmpfs /tmp).
std::string DefaultParent() {
  const char* t = std::getenv("TMPDIR");
  return t != nullptr && *t != '\0' ? t : "/var/tmp";
}

struct Flags {
  std::string parent = DefaultParent();
  std::string bin;
  std::string eml_dir;
  std::string cyrus;
  std::string trace;  // directory for per-message CSVs of part c
  std::string parts = "a,b,c,d";
  uint64_t messages = 10000;
  uint64_t b_messages = 0;  // 0: messages
  uint64_t catchup = 2000;
  int threads = 16;
  std::vector<double> lag_rates = {1000, 100};
  double lag_seconds = 10;
  int lag_threads = 4;
  std::vector<double> outages = {0};
  int port = 0;
  int users = 100;
  bool keep = false;
};

bool ParseList(const char* v, std::vector<double>* out) {
  out->clear();
  for (absl::string_view s : absl::StrSplit(v, ',')) {
    double d = 0;
    if (!absl::SimpleAtod(s, &d) || d < 0) return false;
    out->push_back(d);
  }
  return !out->empty();
}

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    bool ok = true;
    if (a == "--keep") {
      f->keep = true;
      continue;
    } else if (a == "--help" || a == "-h") {
      std::printf("%s", kUsage);
      std::exit(0);
    } else if (v == nullptr) {
      ok = false;
    } else if (a == "--dir") {
      f->parent = v;
    } else if (a == "--bin") {
      f->bin = v;
    } else if (a == "--eml-dir") {
      f->eml_dir = v;
    } else if (a == "--trace") {
      f->trace = v;
    } else if (a == "--cyrus") {
      f->cyrus = v;
    } else if (a == "--parts") {
      f->parts = v;
    } else if (a == "--messages") {
      ok = absl::SimpleAtoi(v, &f->messages) && f->messages >= 1;
    } else if (a == "--b-messages") {
      ok = absl::SimpleAtoi(v, &f->b_messages) && f->b_messages >= 1;
    } else if (a == "--catchup") {
      ok = absl::SimpleAtoi(v, &f->catchup) && f->catchup >= 1;
    } else if (a == "--threads") {
      ok = absl::SimpleAtoi(v, &f->threads) && f->threads >= 1 && f->threads <= 256;
    } else if (a == "--lag-rates") {
      ok = ParseList(v, &f->lag_rates);
    } else if (a == "--lag-seconds") {
      ok = absl::SimpleAtod(v, &f->lag_seconds) && f->lag_seconds > 0;
    } else if (a == "--lag-threads") {
      ok = absl::SimpleAtoi(v, &f->lag_threads) && f->lag_threads >= 1;
    } else if (a == "--outages") {
      ok = ParseList(v, &f->outages);
    } else if (a == "--port") {
      ok = absl::SimpleAtoi(v, &f->port) && f->port > 0 && f->port < 65536;
    } else if (a == "--users") {
      ok = absl::SimpleAtoi(v, &f->users) && f->users >= 1;
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "sync_bench: bad argument %s\n%s", a.c_str(), kUsage);
      return false;
    }
    ++i;
  }
  return true;
}

// ---------------------------------------------------------------- time, CPU

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void SleepUntil(double t) {
  std::this_thread::sleep_until(std::chrono::steady_clock::time_point(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(t))));
}

double SelfCpu() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

// utime + stime of a live process, from /proc; -1 if gone.
double ProcCpu(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t rp = s.rfind(')');
  if (rp == std::string::npos) return -1;
  std::vector<std::string> f = absl::StrSplit(s.substr(rp + 2), ' ');
  if (f.size() < 13) return -1;
  double ut = 0, st = 0;
  if (!absl::SimpleAtod(f[11], &ut) || !absl::SimpleAtod(f[12], &st)) return -1;
  return (ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::string LoadAvg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return absl::StrCat(a, " ", b, " ", c);
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  // linear interpolation, as bench/cyrus/cyrus_bench.py does
  double k = (v.size() - 1) * p;
  size_t f = static_cast<size_t>(k);
  size_t c = std::min(f + 1, v.size() - 1);
  return v[f] + (v[c] - v[f]) * (k - f);
}

absl::Status SyncFileSystem(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open", dir);
  int rc = ::syncfs(fd);
  int err = errno;
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : ErrnoStatus(err, "syncfs", dir);
}

// ---------------------------------------------------------------- child processes

// A child process whose stdout and stderr lines are captured (one pipe) and
// timestamped by a reader thread. Only the owning thread reaps it.
class Child {
 public:
  static absl::StatusOr<std::unique_ptr<Child>> Start(const std::string& name,
                                                      const std::vector<std::string>& args) {
    std::unique_ptr<Child> c(new Child());
    c->name_ = name;
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe for", name);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_adddup2(&fa, p[1], 2);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    c->t_spawn_ = Now();
    int rc = posix_spawn(&c->pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(p[1]);
    if (rc != 0) {
      ::close(p[0]);
      return ErrnoStatus(rc, "spawn", args[0]);
    }
    c->fd_ = p[0];
    c->reader_ = std::thread([c = c.get()] { c->ReadLoop(); });
    return c;
  }

  ~Child() {
    if (!exited_) {
      ::kill(pid_, SIGKILL);
      Wait(10);
    }
    if (reader_.joinable()) reader_.join();
    if (fd_ >= 0) ::close(fd_);
  }

  pid_t pid() const { return pid_; }
  double t_spawn() const { return t_spawn_; }
  const std::string& name() const { return name_; }

  // Time the first line containing needle (at index >= from) was read.
  std::optional<double> WaitLine(const std::string& needle, double timeout,
                                 std::string* line = nullptr) {
    std::unique_lock<std::mutex> l(mu_);
    const double end = Now() + timeout;
    size_t i = 0;
    for (;;) {
      for (; i < lines_.size(); ++i) {
        if (lines_[i].second.find(needle) != std::string::npos) {
          if (line) *line = lines_[i].second;
          return lines_[i].first;
        }
      }
      if (eof_ || Now() > end) return std::nullopt;
      cv_.wait_for(l, std::chrono::milliseconds(5));
    }
  }

  std::vector<std::pair<double, std::string>> Lines() {
    std::lock_guard<std::mutex> l(mu_);
    return lines_;
  }

  // Non-blocking: has it exited? (reaps it)
  bool Exited() {
    if (!exited_) {
      int st = 0;
      rusage ru;
      pid_t r = ::wait4(pid_, &st, WNOHANG, &ru);
      if (r == pid_) Reaped(st, ru);
    }
    return exited_;
  }

  // Waits up to timeout seconds; true if it exited.
  bool Wait(double timeout) {
    const double end = Now() + timeout;
    while (!Exited()) {
      if (Now() > end) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return true;
  }

  // Sends sig, waits; SIGKILL after timeout.
  void Stop(int sig, double timeout) {
    if (Exited()) return;
    ::kill(pid_, sig);
    if (!Wait(timeout)) {
      ::kill(pid_, SIGKILL);
      Wait(10);
    }
  }

  void Signal(int sig) {
    if (!Exited()) ::kill(pid_, sig);
  }

  // CPU seconds so far (live) or in total (exited).
  double Cpu() {
    if (Exited()) return cpu_total_;
    double c = ProcCpu(pid_);
    return c >= 0 ? c : cpu_total_;
  }

  double t_exit() const { return t_exit_; }
  int exit_code() const { return WIFEXITED(status_) ? WEXITSTATUS(status_) : -WTERMSIG(status_); }
  long max_rss_kb() const { return max_rss_kb_; }

  std::string Tail(size_t n) {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<std::string> out;
    for (size_t i = lines_.size() > n ? lines_.size() - n : 0; i < lines_.size(); ++i) {
      out.push_back(absl::StrCat("    ", name_, ": ", lines_[i].second));
    }
    return absl::StrJoin(out, "\n");
  }

 private:
  Child() = default;

  void Reaped(int st, const rusage& ru) {
    exited_ = true;
    t_exit_ = Now();
    status_ = st;
    auto sec = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
    cpu_total_ = sec(ru.ru_utime) + sec(ru.ru_stime);
    max_rss_kb_ = ru.ru_maxrss;
  }

  void ReadLoop() {
    std::string buf;
    char chunk[4096];
    for (;;) {
      ssize_t n = ::read(fd_, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      const double t = Now();
      if (n <= 0) break;
      buf.append(chunk, n);
      size_t nl;
      std::lock_guard<std::mutex> l(mu_);
      while ((nl = buf.find('\n')) != std::string::npos) {
        lines_.emplace_back(t, buf.substr(0, nl));
        buf.erase(0, nl + 1);
      }
      cv_.notify_all();
    }
    std::lock_guard<std::mutex> l(mu_);
    if (!buf.empty()) lines_.emplace_back(Now(), buf);
    eof_ = true;
    cv_.notify_all();
  }

  std::string name_;
  pid_t pid_ = -1;
  int fd_ = -1;
  double t_spawn_ = 0;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<double, std::string>> lines_;
  bool eof_ = false;
  bool exited_ = false;
  int status_ = 0;
  double t_exit_ = 0;
  double cpu_total_ = 0;
  long max_rss_kb_ = 0;
};

// ---------------------------------------------------------------- replica LSN

// Reads <slot>/meta/index.sqlite3 meta.applied_lsn read-only; each Read() is
// a fresh statement execution (sees the latest commit) and holds no read
// transaction afterwards.
class LsnReader {
 public:
  static absl::StatusOr<std::unique_ptr<LsnReader>> Open(const std::string& index_file) {
    std::unique_ptr<LsnReader> r(new LsnReader());
    ASSIGN_OR_RETURN(r->db_, sqlite::Database::OpenReadOnly(index_file));
    ASSIGN_OR_RETURN(sqlite::Statement st,
                     r->db_->Prepare("SELECT value FROM meta WHERE key='applied_lsn'"));
    r->st_.emplace(std::move(st));
    return r;
  }
  absl::StatusOr<uint64_t> Read() {
    st_->Reset();
    ASSIGN_OR_RETURN(bool row, st_->Step());
    uint64_t v = row ? static_cast<uint64_t>(st_->ColumnInt(0)) : 0;
    st_->Reset();
    return v;
  }

 private:
  LsnReader() = default;
  std::unique_ptr<sqlite::Database> db_;
  std::optional<sqlite::Statement> st_;
};

// ---------------------------------------------------------------- messages

class MessageSource {
 public:
  absl::Status Init(const Flags& f) {
    users_ = f.users;
    if (f.eml_dir.empty()) return absl::OkStatus();
    eml_dir_ = f.eml_dir;
    DIR* d = ::opendir(f.eml_dir.c_str());
    if (d == nullptr) return ErrnoStatus(errno, "opendir", f.eml_dir);
    static const std::regex named(R"(^(user\d+)\.(\d+)\.eml$)");  // userN.IIIIII.eml
    static const std::regex plain(R"(^(\d+)\.eml$)");               // I.eml (workload dump)
    while (dirent* e = ::readdir(d)) {
      std::cmatch m;
      std::string user;
      uint64_t idx = 0;
      if (std::regex_match(e->d_name, m, named)) {
        user = m[1].str();
        idx = std::strtoull(m[2].str().c_str(), nullptr, 10);
      } else if (std::regex_match(e->d_name, m, plain)) {
        idx = std::strtoull(m[1].str().c_str(), nullptr, 10);
      } else {
        continue;
      }
      if (idx >= eml_.size()) eml_.resize(idx + 1);
      eml_[idx] = {user, absl::StrCat(f.eml_dir, "/", e->d_name)};
    }
    ::closedir(d);
    return absl::OkStatus();
  }

  // The local part of the message's To: header (what an MTA would deliver to).
  static absl::StatusOr<std::string> UserFromTo(const std::string& msg, const std::string& path) {
    static const std::regex to(R"((?:^|\n)To:[^\r\n]*?<?([A-Za-z0-9._+-]+)@)", std::regex::icase);
    const size_t end = msg.find("\r\n\r\n");
    const std::string head = msg.substr(0, end == std::string::npos ? msg.size() : end);
    std::smatch m;
    if (!std::regex_search(head, m, to)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": no To: header"));
    }
    return m[1].str();
  }

  std::string Describe() const {
    if (eml_dir_.empty()) {
      return absl::StrCat("tools/workload.h generator (seed 42, ", users_, " users)");
    }
    return absl::StrCat(".eml files in ", eml_dir_);
  }

  // Requests for messages [begin, end), each to its user's INBOX.
  absl::StatusOr<std::vector<AppendRequest>> Load(uint64_t begin, uint64_t end) {
    std::vector<AppendRequest> out;
    out.reserve(end - begin);
    for (uint64_t i = begin; i < end; ++i) {
      if (eml_dir_.empty()) {
        WorkloadMessage m = wl_.Message(i);
        out.push_back({.mailbox = InboxName(m.user), .body = std::move(m.bytes)});
      } else {
        if (i >= eml_.size() || eml_[i].second.empty()) {
          return absl::NotFoundError(
              absl::StrCat("no .eml file for message ", i, " in ", eml_dir_,
                           " (run: workload dump --dir DIR --start 0 --count 16000)"));
        }
        ASSIGN_OR_RETURN(std::string body, ReadFile(eml_[i].second));
        std::string user = eml_[i].first;
        if (user.empty()) {
          ASSIGN_OR_RETURN(user, UserFromTo(body, eml_[i].second));
        }
        out.push_back({.mailbox = InboxName(user), .body = std::move(body)});
      }
    }
    return out;
  }

 private:
  int users_ = 100;
  std::string eml_dir_;
  std::vector<std::pair<std::string, std::string>> eml_;  // index -> user, path
  Workload wl_;
};

uint64_t TotalBytes(const std::vector<AppendRequest>& reqs) {
  uint64_t b = 0;
  for (const auto& r : reqs) b += r.body.size();
  return b;
}

// ---------------------------------------------------------------- writer

struct WriteRun {
  double t_start = 0;
  double t_end = 0;  // last Append returned
  uint64_t bytes = 0;
  std::vector<double> ack;  // when Append returned
  std::vector<uint64_t> lsn;
  std::vector<double> latency;
  double cpu = 0;  // this process
  double seconds() const { return t_end - t_start; }
};

// Appends reqs with `threads` threads; at `rate` msg/s (message j due at
// t_start + j / rate) or as fast as possible (rate 0).
absl::StatusOr<WriteRun> Write(Slot& slot, const std::vector<AppendRequest>& reqs, int threads,
                               double rate) {
  const size_t n = reqs.size();
  WriteRun w;
  w.ack.assign(n, 0);
  w.lsn.assign(n, 0);
  w.latency.assign(n, 0);
  std::atomic<size_t> next{0};
  std::mutex mu;
  absl::Status first_error;
  const double cpu0 = SelfCpu();
  w.t_start = Now();
  auto worker = [&] {
    for (size_t j = next++; j < n; j = next++) {
      if (rate > 0) SleepUntil(w.t_start + j / rate);
      const double t0 = Now();
      absl::StatusOr<AppendResult> r = slot.Append(reqs[j]);
      const double t1 = Now();
      if (!r.ok()) {
        std::lock_guard<std::mutex> l(mu);
        if (first_error.ok()) first_error = r.status();
        next = n;
        return;
      }
      w.ack[j] = t1;
      w.lsn[j] = r->lsn;
      w.latency[j] = t1 - t0;
    }
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) ts.emplace_back(worker);
  for (auto& t : ts) t.join();
  RETURN_IF_ERROR(first_error);
  w.t_end = *std::max_element(w.ack.begin(), w.ack.end());
  w.cpu = SelfCpu() - cpu0;
  w.bytes = TotalBytes(reqs);
  return w;
}

// The cost of creating a file on this file system now: on ext4 without a
// journal, new inodes skip inodes deleted in the last 60-360 s
// (recently_deleted() in fs/ext4/ialloc.c), which makes every create slow
// after mass deletions -- by this bench, by bench/cyrus/setup.sh --fresh, or by
// anyone else on the machine. Cyrus's spool creates one file per message
// (ours appends to pack files), so this is printed beside the figures. Files stay until the
// bench directory is removed.
double CreateProbeMicros(const std::string& dir, int n) {
  if (!MakeDirs(dir).ok()) return NAN;
  const std::string body(8192, 'x');
  const double t0 = Now();
  for (int i = 0; i < n; ++i) {
    const std::string tmp = absl::StrCat(dir, "/", i, ".tmp");
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return NAN;
    bool ok = WriteAll(fd, body, tmp).ok();
    ::close(fd);
    if (!ok || ::rename(tmp.c_str(), absl::StrCat(dir, "/", i).c_str()) != 0) return NAN;
  }
  return (Now() - t0) / n * 1e6;
}

// ---------------------------------------------------------------- the bench

struct Env {
  Flags flags;
  std::string dir;  // the fresh bench directory
  std::string bin;
  std::string secret;  // path of the secret file
  MessageSource source;
  double probe_start_us = NAN, probe_end_us = NAN;
  std::string load_start;
};

SlotPaths Paths(const std::string& dir) { return SlotPaths::Under(dir); }

// Fresh master and replica slots under dir/<part>; returns their roots.
absl::StatusOr<std::pair<std::string, std::string>> FreshPair(Env& env, const std::string& part) {
  const std::string base = absl::StrCat(env.dir, "/", part);
  RETURN_IF_ERROR(MakeDirs(base));
  const std::string m = base + "/master", r = base + "/replica";
  const int64_t now = time(nullptr);
  RETURN_IF_ERROR(Slot::Init(Paths(m), {"local", 1, 1, now}));
  RETURN_IF_ERROR(Slot::Init(Paths(r), {"local", 1, 2, now}));
  return std::make_pair(m, r);
}

absl::StatusOr<std::unique_ptr<Slot>> OpenMasterWithInboxes(const std::string& root, int users) {
  ASSIGN_OR_RETURN(std::unique_ptr<Slot> slot, Slot::Open(Paths(root), {}));
  for (int u = 0; u < users; ++u) {
    RETURN_IF_ERROR(slot->CreateMailbox(InboxName(absl::StrCat("user", u))).status());
  }
  return slot;
}

struct Server {
  std::unique_ptr<Child> child;
  int port = 0;
  double t_listening = 0;
};

absl::StatusOr<Server> StartServer(Env& env, const std::string& replica, int port) {
  Server s;
  ASSIGN_OR_RETURN(s.child, Child::Start("sync_server",
                                         {env.bin + "/sync_server", "--slot", replica, "--listen",
                                          absl::StrCat("127.0.0.1:", port), "--secret-file",
                                          env.secret}));
  std::string line;
  std::optional<double> t = s.child->WaitLine("listening", 30, &line);
  if (!t) {
    return absl::UnavailableError(
        absl::StrCat("sync_server did not start listening:\n", s.child->Tail(10)));
  }
  std::smatch m;
  static const std::regex re(R"(port=<(\d+)>)");
  if (!std::regex_search(line, m, re)) {
    return absl::InternalError(absl::StrCat("no port in: ", line));
  }
  s.port = std::atoi(m[1].str().c_str());
  s.t_listening = *t;
  return s;
}

absl::StatusOr<std::unique_ptr<Child>> StartClient(Env& env, const std::string& master, int port,
                                                   bool rolling, bool verbose) {
  std::vector<std::string> args = {env.bin + "/sync_client", "--slot", master, "--server",
                                   absl::StrCat("127.0.0.1:", port), "--secret-file", env.secret,
                                   "--stats"};
  if (rolling) args.push_back("-r");
  if (verbose) args.push_back("-v");
  return Child::Start(rolling ? "sync_client -r" : "sync_client", args);
}

// Polls the replica every `every` seconds until its applied LSN >= target.
// Returns the time it was first seen there.
absl::StatusOr<double> WaitReplica(LsnReader& r, uint64_t target, double timeout,
                                   double every = 0.001, Child* watch = nullptr) {
  const double end = Now() + timeout;
  for (;;) {
    ASSIGN_OR_RETURN(uint64_t v, r.Read());
    const double t = Now();
    if (v >= target) return t;
    if (t > end) {
      return absl::DeadlineExceededError(absl::StrCat("replica at LSN ", v, ", wanted ", target,
                                                      " after ", timeout, " s"));
    }
    if (watch != nullptr && watch->Exited()) {
      return absl::AbortedError(absl::StrCat(watch->name(), " exited (code ", watch->exit_code(),
                                             ") with the replica at LSN ", v, ":\n",
                                             watch->Tail(10)));
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(every));
  }
}

// Slot digests of master (open slot, or by path) and replica agree?
absl::StatusOr<bool> SameDigest(Slot* master_slot, const std::string& master,
                                const std::string& replica, std::string* detail) {
  Digest dm;
  uint64_t lm = 0;
  if (master_slot != nullptr) {
    dm = master_slot->SlotDigest();
    lm = master_slot->last_lsn();
  } else {
    ASSIGN_OR_RETURN(auto ix, Index::OpenReadOnly(Paths(master).index_file()));
    dm = ix->slot_digest();
    lm = ix->applied_lsn();
  }
  ASSIGN_OR_RETURN(auto ir, Index::OpenReadOnly(Paths(replica).index_file()));
  *detail = absl::StrCat("master LSN ", lm, " digest ", dm.Hex(), "; replica LSN ",
                         ir->applied_lsn(), " digest ", ir->slot_digest().Hex());
  return dm == ir->slot_digest() && lm == ir->applied_lsn();
}

std::string Stats(Child& c, const std::string& key) {
  for (const auto& [t, l] : c.Lines()) {
    if (l.rfind(key + " ", 0) == 0) return l.substr(key.size() + 1);
  }
  return "?";
}

// ---------------------------------------------------------------- results

struct Results {
  // a
  bool a_done = false;
  uint64_t a_msgs = 0, a_bytes = 0;
  double a_seconds = 0, a_client_cpu = 0, a_server_cpu = 0;
  long a_client_rss_kb = 0;
  bool a_same = false;
  std::string a_detail, a_wire_bytes;
  // b
  bool b_done = false;
  double b_base_rate = 0, b_base_mbs = 0, b_rate = 0, b_mbs = 0, b_drain = 0;
  uint64_t b_max_lag = 0, b_lag_at_end = 0, b_max_lag_first = 0, b_max_lag_last = 0;
  double b_client_cpu = 0, b_server_cpu = 0, b_seconds = 0;
  bool b_same = false, b_keeps_up = false;
  double b_max_lag_s = 0, b_max_lag_s_first = 0, b_max_lag_s_last = 0, b_replica_rate = 0;
  bool b_client_alive = false;
  uint64_t b_messages = 0;
  std::vector<std::tuple<double, uint64_t, uint64_t, double>> b_samples;  // t, master, replica, lag s
  // c
  struct Lag {
    double rate = 0, achieved = 0;
    size_t n = 0;
    double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0, min = 0;
    double append_p50 = 0, append_p99 = 0;
    double client_cpu = 0, server_cpu = 0, seconds = 0;
    bool same = false;
    std::vector<std::pair<double, double>> per_second;  // p50, max lag of msgs acked in second k
  };
  std::vector<Lag> c;
  // d
  struct CatchUp {
    double outage_target = 0;
    double down_s = 0;            // replica down: SIGTERM to restart
    double server_stop_s = 0;     // SIGTERM -> server exited
    double deliver_s = 0;         // appending the 2,000 while down
    double listen_s = 0;          // restart -> listening line
    double from_restart = 0;      // restart -> replica has last LSN
    double from_listen = 0;       // listening -> replica has last LSN
    double connect_after_restart = -1;  // restart -> client's connection accepted
    double transfer = -1;         // client connected -> replica has last LSN
    double first_advance = -1;    // restart -> replica LSN first moves
    int retries = 0;              // "retrying" lines during the outage
    std::string retry_waits;      // the backoff sequence seen
    bool client_alive = false, client_never_exited = false;
    uint64_t msgs = 0, bytes = 0;
    bool same = false;
    std::string timeline;
  };
  std::vector<CatchUp> d;
  std::string client_connects_d;
};

// -- (a)
absl::Status PartA(Env& env, Results& R) {
  std::printf("[a] initial full sync  (load %s)\n", LoadAvg().c_str());
  std::fflush(stdout);
  ASSIGN_OR_RETURN(auto pair, FreshPair(env, "a"));
  auto [m, r] = pair;
  {
    ASSIGN_OR_RETURN(auto reqs, env.source.Load(0, env.flags.messages));
    ASSIGN_OR_RETURN(auto slot, OpenMasterWithInboxes(m, env.flags.users));
    ASSIGN_OR_RETURN(WriteRun w, Write(*slot, reqs, env.flags.threads, 0));
    R.a_msgs = reqs.size();
    R.a_bytes = w.bytes;
  }  // master closed: a quiescent master
  RETURN_IF_ERROR(SyncFileSystem(env.dir));
  ASSIGN_OR_RETURN(Server srv, StartServer(env, r, 0));
  const double scpu0 = srv.child->Cpu();
  ASSIGN_OR_RETURN(auto client, StartClient(env, m, srv.port, false, false));
  if (!client->Wait(600)) return absl::DeadlineExceededError("sync_client catch-up > 600 s");
  R.a_seconds = client->t_exit() - client->t_spawn();
  R.a_client_cpu = client->Cpu();
  R.a_client_rss_kb = client->max_rss_kb();
  R.a_server_cpu = srv.child->Cpu() - scpu0;
  R.a_wire_bytes = Stats(*client, "wire_bytes");
  if (client->exit_code() != 0) {
    return absl::InternalError(absl::StrCat("sync_client exited ", client->exit_code(), ":\n",
                                            client->Tail(20)));
  }
  ASSIGN_OR_RETURN(R.a_same, SameDigest(nullptr, m, r, &R.a_detail));
  srv.child->Stop(SIGTERM, 10);
  R.a_done = true;
  std::printf("    %llu msgs, %.1f MB in %.3f s: %.0f msg/s, %.1f MB/s; verify: %s\n",
              (unsigned long long)R.a_msgs, R.a_bytes / 1e6, R.a_seconds, R.a_msgs / R.a_seconds,
              R.a_bytes / 1e6 / R.a_seconds, R.a_same ? "replica == master" : "MISMATCH");
  return absl::OkStatus();
}

// -- (b)
absl::Status PartB(Env& env, Results& R) {
  std::printf("[b] rolling under a full-speed writer (%d threads)  (load %s)\n",
              env.flags.threads, LoadAvg().c_str());
  std::fflush(stdout);
  R.b_messages = env.flags.b_messages ? env.flags.b_messages : env.flags.messages;
  ASSIGN_OR_RETURN(auto reqs, env.source.Load(0, R.b_messages));
  // Baseline: the writer alone.
  {
    ASSIGN_OR_RETURN(auto pair, FreshPair(env, "b0"));
    ASSIGN_OR_RETURN(auto slot, OpenMasterWithInboxes(pair.first, env.flags.users));
    RETURN_IF_ERROR(SyncFileSystem(env.dir));
    ASSIGN_OR_RETURN(WriteRun w, Write(*slot, reqs, env.flags.threads, 0));
    R.b_base_rate = reqs.size() / w.seconds();
    R.b_base_mbs = w.bytes / 1e6 / w.seconds();
  }
  ASSIGN_OR_RETURN(auto pair, FreshPair(env, "b"));
  auto [m, r] = pair;
  ASSIGN_OR_RETURN(auto slot, OpenMasterWithInboxes(m, env.flags.users));
  ASSIGN_OR_RETURN(Server srv, StartServer(env, r, 0));
  ASSIGN_OR_RETURN(auto client, StartClient(env, m, srv.port, true, false));
  ASSIGN_OR_RETURN(auto lsn, LsnReader::Open(Paths(r).index_file()));
  ASSIGN_OR_RETURN(double t_sync, WaitReplica(*lsn, slot->last_lsn(), 60, 0.001, client.get()));
  (void)t_sync;
  RETURN_IF_ERROR(SyncFileSystem(env.dir));
  // Sampler: master vs replica LSN every 100 ms.
  std::atomic<bool> stop{false};
  std::vector<std::tuple<double, uint64_t, uint64_t>> samples;
  absl::Status sampler_error;
  ASSIGN_OR_RETURN(auto lsn2, LsnReader::Open(Paths(r).index_file()));
  const double t0 = Now();
  std::thread sampler([&] {
    for (int k = 1; !stop; ++k) {
      SleepUntil(t0 + 0.1 * k);
      uint64_t ml = slot->last_lsn();
      auto rl = lsn2->Read();
      if (!rl.ok()) {
        sampler_error = rl.status();
        return;
      }
      samples.emplace_back(Now() - t0, ml, *rl);
    }
  });
  const double ccpu0 = client->Cpu(), scpu0 = srv.child->Cpu();
  absl::StatusOr<WriteRun> w = Write(*slot, reqs, env.flags.threads, 0);
  if (!w.ok()) {
    stop = true;
    sampler.join();
    return w.status();
  }
  const uint64_t last = slot->last_lsn();
  {
    ASSIGN_OR_RETURN(uint64_t at_end, lsn->Read());
    R.b_lag_at_end = last - std::min(last, at_end);
  }
  absl::StatusOr<double> t_caught = WaitReplica(*lsn, last, 120, 0.001, client.get());
  // one more second of samples after the writer stopped
  SleepUntil(std::max(Now(), (t_caught.ok() ? *t_caught : Now())) + 0.3);
  stop = true;
  sampler.join();
  RETURN_IF_ERROR(sampler_error);
  if (!t_caught.ok()) return t_caught.status();
  R.b_client_cpu = client->Cpu() - ccpu0;
  R.b_server_cpu = srv.child->Cpu() - scpu0;
  R.b_rate = reqs.size() / w->seconds();
  R.b_mbs = w->bytes / 1e6 / w->seconds();
  R.b_seconds = w->seconds();
  R.b_drain = *t_caught - w->t_end;
  // Lag in seconds at each sample: the age of the oldest record the replica
  // lacks (time since the master acknowledged LSN replica+1).
  const uint64_t lsn0 = *std::min_element(w->lsn.begin(), w->lsn.end());
  std::vector<double> ack_of(last - lsn0 + 1, w->t_start);
  for (size_t j = 0; j < w->lsn.size(); ++j) ack_of[w->lsn[j] - lsn0] = w->ack[j];
  const double ws = w->t_start - t0, we = w->t_end - t0;
  uint64_t rl_ws = 0, rl_we = 0;
  double t_ws = -1, t_we = -1;
  for (const auto& [t, ml, rl] : samples) {
    const uint64_t lag = ml - std::min(ml, rl);
    double lag_s = 0;
    if (rl < ml) {
      const uint64_t missing = std::max(rl + 1, lsn0);
      lag_s = t - (ack_of[missing - lsn0] - t0);
    }
    R.b_samples.emplace_back(t, ml, rl, lag_s);
    if (t > we) continue;
    if (t_ws < 0) t_ws = t, rl_ws = rl;
    t_we = t, rl_we = rl;
    R.b_max_lag = std::max(R.b_max_lag, lag);
    R.b_max_lag_s = std::max(R.b_max_lag_s, lag_s);
    if (t <= ws + (we - ws) / 3) {
      R.b_max_lag_first = std::max(R.b_max_lag_first, lag);
      R.b_max_lag_s_first = std::max(R.b_max_lag_s_first, lag_s);
    }
    if (t >= we - (we - ws) / 3) {
      R.b_max_lag_last = std::max(R.b_max_lag_last, lag);
      R.b_max_lag_s_last = std::max(R.b_max_lag_s_last, lag_s);
    }
  }
  R.b_replica_rate = t_we > t_ws ? (rl_we - rl_ws) / (t_we - t_ws) : NAN;
  std::string detail;
  ASSIGN_OR_RETURN(R.b_same, SameDigest(slot.get(), m, r, &detail));
  R.b_client_alive = !client->Exited();
  client->Stop(SIGTERM, 10);
  srv.child->Stop(SIGTERM, 10);
  // Keeps up: the replica is never more than ~1 s behind the writer (age of
  // its oldest missing record) and is level within 1 s of the last ack.
  R.b_keeps_up = R.b_client_alive && R.b_drain <= 1.0 && R.b_max_lag_s <= 1.0;
  R.b_done = true;
  std::printf("    writer alone %.0f msg/s; with rolling client %.0f msg/s; drain %.3f s; "
              "max lag %llu records; verify: %s\n",
              R.b_base_rate, R.b_rate, R.b_drain, (unsigned long long)R.b_max_lag,
              R.b_same ? "replica == master" : "MISMATCH");
  return absl::OkStatus();
}

// -- (c)
absl::Status PartC(Env& env, Results& R, double rate) {
  const uint64_t n = static_cast<uint64_t>(std::llround(rate * env.flags.lag_seconds));
  std::printf("[c] lag at %.0f msg/s for %.0f s (%llu msgs, %d pacing threads)  (load %s)\n",
              rate, env.flags.lag_seconds, (unsigned long long)n, env.flags.lag_threads,
              LoadAvg().c_str());
  std::fflush(stdout);
  ASSIGN_OR_RETURN(auto reqs, env.source.Load(0, n));
  ASSIGN_OR_RETURN(auto pair, FreshPair(env, absl::StrCat("c", static_cast<int>(rate))));
  auto [m, r] = pair;
  ASSIGN_OR_RETURN(auto slot, OpenMasterWithInboxes(m, env.flags.users));
  ASSIGN_OR_RETURN(Server srv, StartServer(env, r, 0));
  ASSIGN_OR_RETURN(auto client, StartClient(env, m, srv.port, true, false));
  ASSIGN_OR_RETURN(auto lsn, LsnReader::Open(Paths(r).index_file()));
  const uint64_t first = slot->last_lsn();
  RETURN_IF_ERROR(WaitReplica(*lsn, first, 60, 0.001, client.get()).status());
  RETURN_IF_ERROR(SyncFileSystem(env.dir));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  // Poller: when did each LSN first become visible on the replica?
  const uint64_t final_lsn = first + n;  // appends take one LSN each
  std::vector<double> seen(final_lsn + 1, -1);
  std::atomic<bool> writing_done{false};
  absl::Status poll_error;
  std::thread poller([&] {
    uint64_t have = first;
    double give_up = 0;
    for (;;) {
      auto v = lsn->Read();
      const double t = Now();
      if (!v.ok()) {
        poll_error = v.status();
        return;
      }
      for (uint64_t l = have + 1; l <= std::min<uint64_t>(*v, final_lsn); ++l) seen[l] = t;
      have = std::max(have, *v);
      if (have >= final_lsn) return;
      if (writing_done) {
        if (give_up == 0) give_up = t + 60;
        if (t > give_up) {
          poll_error = absl::DeadlineExceededError("replica did not get every LSN in 60 s");
          return;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  const double ccpu0 = client->Cpu(), scpu0 = srv.child->Cpu();
  absl::StatusOr<WriteRun> w = Write(*slot, reqs, env.flags.lag_threads, rate);
  writing_done = true;
  poller.join();
  RETURN_IF_ERROR(w.status());
  RETURN_IF_ERROR(poll_error);
  Results::Lag L;
  L.rate = rate;
  L.seconds = w->seconds();
  L.client_cpu = client->Cpu() - ccpu0;
  L.server_cpu = srv.child->Cpu() - scpu0;
  std::vector<double> lags;
  for (size_t j = 0; j < reqs.size(); ++j) {
    if (w->lsn[j] > final_lsn || seen[w->lsn[j]] < 0) {
      return absl::InternalError(absl::StrCat("LSN ", w->lsn[j], " never seen"));
    }
    lags.push_back(seen[w->lsn[j]] - w->ack[j]);
  }
  L.n = lags.size();
  L.achieved = reqs.size() / w->seconds();
  L.p50 = Percentile(lags, 0.5);
  L.p90 = Percentile(lags, 0.9);
  L.p99 = Percentile(lags, 0.99);
  L.p999 = Percentile(lags, 0.999);
  L.max = *std::max_element(lags.begin(), lags.end());
  L.min = *std::min_element(lags.begin(), lags.end());
  {
    std::vector<std::vector<double>> buckets;
    for (size_t j = 0; j < lags.size(); ++j) {
      size_t k = static_cast<size_t>(std::max(0.0, w->ack[j] - w->t_start));
      if (k >= buckets.size()) buckets.resize(k + 1);
      buckets[k].push_back(lags[j]);
    }
    for (const auto& b : buckets) {
      L.per_second.emplace_back(Percentile(b, 0.5),
                                b.empty() ? NAN : *std::max_element(b.begin(), b.end()));
    }
  }
  if (!env.flags.trace.empty()) {
    RETURN_IF_ERROR(MakeDirs(env.flags.trace));
    const std::string path = absl::StrFormat("%s/lag_%.0f.csv", env.flags.trace, rate);
    std::ofstream out(path);
    out << absl::StrFormat("# t_start CLOCK_MONOTONIC %.6f\n", w->t_start);
    out << "index,lsn,acked_s,visible_s,lag_ms,append_ms\n";
    for (size_t j = 0; j < lags.size(); ++j) {
      out << absl::StrFormat("%d,%d,%.6f,%.6f,%.3f,%.3f\n", j, w->lsn[j], w->ack[j] - w->t_start,
                             seen[w->lsn[j]] - w->t_start, lags[j] * 1e3, w->latency[j] * 1e3);
    }
  }
  L.append_p50 = Percentile(w->latency, 0.5);
  L.append_p99 = Percentile(w->latency, 0.99);
  std::string detail;
  ASSIGN_OR_RETURN(L.same, SameDigest(slot.get(), m, r, &detail));
  client->Stop(SIGTERM, 10);
  srv.child->Stop(SIGTERM, 10);
  R.c.push_back(L);
  std::printf("    achieved %.1f msg/s; lag p50 %.2f ms, p99 %.2f ms, max %.2f ms; append p50 "
              "%.2f ms; verify: %s\n",
              L.achieved, L.p50 * 1e3, L.p99 * 1e3, L.max * 1e3, L.append_p50 * 1e3,
              L.same ? "replica == master" : "MISMATCH");
  return absl::OkStatus();
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

// -- (d)
absl::Status PartD(Env& env, Results& R, double outage) {
  std::printf("[d] catch-up of %llu msgs after a replica outage (outage >= %.1f s)  (load %s)\n",
              (unsigned long long)env.flags.catchup, outage, LoadAvg().c_str());
  std::fflush(stdout);
  const uint64_t base = 14000, X = env.flags.catchup;
  ASSIGN_OR_RETURN(auto pair, FreshPair(env, absl::StrCat("d", static_cast<int>(outage * 10))));
  auto [m, r] = pair;
  {
    ASSIGN_OR_RETURN(auto slot, OpenMasterWithInboxes(m, env.flags.users));
    ASSIGN_OR_RETURN(auto pre, env.source.Load(0, base));
    RETURN_IF_ERROR(Write(*slot, pre, env.flags.threads, 0).status());
  }  // closed and reopened: the setup leaves nothing in flight (spool complete)
  ASSIGN_OR_RETURN(auto slot, Slot::Open(Paths(m), {}));
  ASSIGN_OR_RETURN(auto reqs, env.source.Load(base, base + X));
  const int port = env.flags.port ? env.flags.port : FreePort();
  ASSIGN_OR_RETURN(Server srv, StartServer(env, r, port));
  ASSIGN_OR_RETURN(auto client, StartClient(env, m, port, true, true));
  ASSIGN_OR_RETURN(auto lsn, LsnReader::Open(Paths(r).index_file()));
  RETURN_IF_ERROR(WaitReplica(*lsn, slot->last_lsn(), 120, 0.001, client.get()).status());
  RETURN_IF_ERROR(SyncFileSystem(env.dir));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  Results::CatchUp D;
  D.outage_target = outage;
  D.msgs = X;
  D.bytes = TotalBytes(reqs);
  const size_t client_lines_before = client->Lines().size();
  // Outage.
  const double t_down = Now();
  srv.child->Stop(SIGTERM, 10);
  D.server_stop_s = Now() - t_down;
  const double td0 = Now();
  RETURN_IF_ERROR(Write(*slot, reqs, env.flags.threads, 0).status());
  D.deliver_s = Now() - td0;
  const uint64_t last = slot->last_lsn();
  SleepUntil(t_down + outage);
  ASSIGN_OR_RETURN(uint64_t before, lsn->Read());
  const double t_restart = Now();
  D.down_s = t_restart - t_down;
  ASSIGN_OR_RETURN(Server srv2, StartServer(env, r, port));
  // Time of the first LSN movement and of the last LSN.
  double t_first = -1;
  double t_done = -1;
  const double end = Now() + 120;
  for (;;) {
    ASSIGN_OR_RETURN(uint64_t v, lsn->Read());
    const double t = Now();
    if (v > before && t_first < 0) t_first = t;
    if (v >= last) {
      t_done = t;
      break;
    }
    if (t > end) return absl::DeadlineExceededError("replica did not catch up in 120 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  D.listen_s = srv2.t_listening - t_restart;
  D.from_restart = t_done - t_restart;
  D.from_listen = t_done - srv2.t_listening;
  D.first_advance = t_first - t_restart;
  // The client's log: reconnect attempts and the connection that worked.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto lines = client->Lines();
  std::vector<std::string> waits, tl;
  for (size_t i = client_lines_before; i < lines.size(); ++i) {
    const auto& [t, l] = lines[i];
    std::smatch mm;
    static const std::regex retry(R"(retry_in=<([^>]*)>)");
    if (std::regex_search(l, mm, retry)) {
      ++D.retries;
      waits.push_back(mm[1].str());
    }
    if (l.find("sync connected") != std::string::npos && t >= t_restart &&
        D.connect_after_restart < 0) {
      D.connect_after_restart = t - t_restart;
      D.transfer = t_done - t;
    }
    std::string shortl = l.size() > 110 ? l.substr(0, 110) + "..." : l;
    tl.push_back(absl::StrFormat("      %+8.3f s  %s", t - t_down, shortl));
  }
  tl.push_back(absl::StrFormat("      %+8.3f s  (bench) sync_server restarted", t_restart - t_down));
  tl.push_back(absl::StrFormat("      %+8.3f s  (bench) sync_server listening",
                               srv2.t_listening - t_down));
  tl.push_back(absl::StrFormat("      %+8.3f s  (bench) replica holds LSN %llu", t_done - t_down,
                               (unsigned long long)last));
  std::stable_sort(tl.begin(), tl.end(), [](const std::string& x, const std::string& y) {
    return std::strtod(x.c_str(), nullptr) < std::strtod(y.c_str(), nullptr);
  });
  D.retry_waits = absl::StrJoin(waits, ",");
  D.timeline = absl::StrJoin(tl, "\n");
  std::string detail;
  ASSIGN_OR_RETURN(D.same, SameDigest(slot.get(), m, r, &detail));
  D.client_alive = !client->Exited();
  D.client_never_exited = D.client_alive;  // it was started once and checked only now
  client->Stop(SIGTERM, 10);
  R.client_connects_d = Stats(*client, "connects");
  srv2.child->Stop(SIGTERM, 10);
  R.d.push_back(D);
  std::printf("    down %.2f s; from restart %.3f s (%.0f msg/s), from listening %.3f s; "
              "client connected %.3f s after restart; client alive: %s; verify: %s\n",
              D.down_s, D.from_restart, X / D.from_restart, D.from_listen,
              D.connect_after_restart, D.client_alive ? "yes" : "NO",
              D.same ? "replica == master" : "MISMATCH");
  return absl::OkStatus();
}

// ---------------------------------------------------------------- Cyrus figures

struct Cyrus {
  bool have = false;
  std::map<std::string, double> median, min, max;
  std::string alive_while_down;  // "false", "true" or "?" per run, joined
  int runs = 0;
  std::string loads;
};

Cyrus ReadCyrus(const std::string& dir) {
  Cyrus c;
  if (dir.empty()) return c;
  absl::StatusOr<std::string> s = ReadFile(dir + "/summary.json");
  if (!s.ok()) {
    std::fprintf(stderr, "sync_bench: %s\n", std::string(s.status().message()).c_str());
    return c;
  }
  // summary.json: {"key": {"median": x, "min": y, "max": z}, ...} (json.dump, indent=1)
  static const std::regex re(
      R"re("([^"]+)":\s*\{\s*"median":\s*([-0-9.eE]+|NaN),\s*"min":\s*([-0-9.eE]+|NaN),\s*"max":\s*([-0-9.eE]+|NaN)\s*\})re");
  for (std::sregex_iterator it(s->begin(), s->end(), re), e; it != e; ++it) {
    c.median[(*it)[1]] = std::strtod((*it)[2].str().c_str(), nullptr);
    c.min[(*it)[1]] = std::strtod((*it)[3].str().c_str(), nullptr);
    c.max[(*it)[1]] = std::strtod((*it)[4].str().c_str(), nullptr);
  }
  c.have = !c.median.empty();
  std::vector<std::string> alive, loads;
  for (int n = 1; n < 100; ++n) {
    absl::StatusOr<std::string> run = ReadFile(absl::StrCat(dir, "/run", n, ".json"));
    if (!run.ok()) break;
    ++c.runs;
    std::smatch m;
    static const std::regex ra(R"("rolling_alive_while_down":\s*(true|false))");
    alive.push_back(std::regex_search(*run, m, ra) ? m[1].str() : "?");
    static const std::regex rl(R"re("load_start":\s*\[\s*"([0-9.]+)")re");
    loads.push_back(std::regex_search(*run, m, rl) ? m[1].str() : "?");
  }
  c.alive_while_down = absl::StrJoin(alive, ",");
  c.loads = absl::StrJoin(loads, ",");
  return c;
}

double Get(const Cyrus& c, const std::string& k) {
  auto it = c.median.find(k);
  return it == c.median.end() ? NAN : it->second;
}

// ---------------------------------------------------------------- report

std::string J(double v) { return std::isfinite(v) ? absl::StrFormat("%.6g", v) : "null"; }
std::string B(bool b) { return b ? "true" : "false"; }

void Report(const Env& env, const Results& R, const Cyrus& cy) {
  const char* kA = "initial sync msg/s";
  std::printf("\n=== sync_bench results (ours: real sync_client/sync_server processes) ===\n");
  std::printf("messages: %s\n", env.source.Describe().c_str());
  std::printf("file create probe, us/file: %.1f at start, %.1f at end (ext4 nojournal: slow "
              "after mass deletes)\n",
              env.probe_start_us, env.probe_end_us);
  if (cy.have) {
    std::printf("Cyrus: %s/summary.json, %d run(s), load at start %s\n", env.flags.cyrus.c_str(),
                cy.runs, cy.loads.c_str());
  } else {
    std::printf("Cyrus: no figures (give --cyrus DIR); ratios use nothing\n");
  }
  std::printf("\n%-52s %12s %12s %9s  %-16s %s\n", "figure", "ours", "Cyrus", "ratio", "bar",
              "result");
  auto row = [&](const std::string& name, double ours, double cyrus, const char* fmt,
                 const std::string& bar, const std::string& result) {
    std::string o = absl::StrFormat(fmt, ours);
    std::string c = std::isfinite(cyrus) ? absl::StrFormat(fmt, cyrus) : "-";
    std::string ratio = std::isfinite(cyrus) && cyrus != 0
                            ? absl::StrFormat("%.2fx", ours / cyrus)
                            : "-";
    std::printf("%-52s %12s %12s %9s  %-16s %s\n", name.c_str(), o.c_str(), c.c_str(),
                ratio.c_str(), bar.c_str(), result.c_str());
  };
  auto pf = [](bool b) { return std::string(b ? "PASS" : "FAIL"); };
  if (R.a_done) {
    const double rate = R.a_msgs / R.a_seconds;
    const double cr = Get(cy, kA);
    row("(a) initial full sync, s", R.a_seconds, Get(cy, "initial sync s"), "%.3f", "",
        "");
    row("(a) initial full sync, msg/s", rate, cr, "%.0f", ">= 10x Cyrus",
        std::isfinite(cr) ? pf(rate >= 10 * cr) : "n/a");
    row("(a) initial full sync, MB/s (message bytes)", R.a_bytes / 1e6 / R.a_seconds,
        Get(cy, "initial sync MB/s"), "%.1f", "", "");
    row("(a) sync_client CPU s", R.a_client_cpu, Get(cy, "initial sync client CPU s"), "%.2f", "", "");
    row("(a) replica side (sync_server) CPU s", R.a_server_cpu,
        Get(cy, "initial sync replica CPU s"), "%.2f", "", "");
  }
  if (R.b_done) {
    row("(b) writer alone, msg/s", R.b_base_rate, NAN, "%.0f", "", "");
    row("(b) writer with rolling client, msg/s", R.b_rate, NAN, "%.0f", "", "");
    row("(b) writer with client / alone", R.b_rate / R.b_base_rate, NAN, "%.2f", "", "");
    row("(b) replica apply rate while writing, msg/s", R.b_replica_rate, NAN, "%.0f", "", "");
    row("(b) max lag while writing, records", R.b_max_lag, NAN, "%.0f", "", "");
    row("(b) max lag first third / last third, records", R.b_max_lag_first, NAN, "%.0f", "", "");
    row("", R.b_max_lag_last, NAN, "%.0f", "", "");
    row("(b) max lag while writing, s (oldest missing)", R.b_max_lag_s, NAN, "%.3f", "", "");
    row("(b) max lag first third / last third, s", R.b_max_lag_s_first, NAN, "%.3f", "", "");
    row("", R.b_max_lag_s_last, NAN, "%.3f", "", "");
    row("(b) lag at the writer's last ack, records", R.b_lag_at_end, NAN, "%.0f", "", "");
    row("(b) last ack -> replica has last LSN, s", R.b_drain,
        Get(cy, "burst last 250 -> all on replica s"), "%.3f", "keeps up",
        pf(R.b_keeps_up));
  }
  for (const auto& L : R.c) {
    const bool main_rate = L.rate == 1000;
    const std::string p = absl::StrFormat("(c) %.0f msg/s: ", L.rate);
    // Cyrus's lag was measured at one rate: show it beside ours at that rate only.
    const double cyrus_rate = Get(cy, "lag achieved rate msg/s");
    const bool same_rate = std::fabs(cyrus_rate - L.rate) <= 0.1 * L.rate;
    auto cy_lag = [&](const char* k) { return same_rate ? Get(cy, k) : NAN; };
    row(p + "achieved rate, msg/s", L.achieved, same_rate ? cyrus_rate : NAN, "%.1f", "", "");
    row(p + "lag p50, ms", L.p50 * 1e3, cy_lag("lag p50 s") * 1e3, "%.2f", "", "");
    row(p + "lag p99, ms", L.p99 * 1e3, cy_lag("lag p99 s") * 1e3, "%.2f",
        main_rate ? "< 50 ms" : "", main_rate ? pf(L.p99 < 0.050) : "");
    row(p + "lag max, ms", L.max * 1e3, NAN, "%.2f", "", "");
    row(p + "master Append p50/p99, ms", L.append_p50 * 1e3, NAN, "%.2f", "", "");
    row("", L.append_p99 * 1e3, NAN, "%.2f", "", "");
  }
  for (const auto& D : R.d) {
    const std::string p = absl::StrFormat("(d) outage %.1f s: ", D.down_s);
    const double rate = D.msgs / D.from_restart;
    const double cr = Get(cy, "catch-up msg/s");
    row(p + "restart -> caught up, s", D.from_restart,
        Get(cy, "catch-up from restart s"), "%.3f", "", "");
    row(p + "catch-up msg/s (from restart)", rate, cr, "%.0f", ">= 10x Cyrus",
        std::isfinite(cr) ? pf(rate >= 10 * cr) : "n/a");
    row(p + "listening -> caught up, s", D.from_listen,
        Get(cy, "catch-up from listening s"), "%.3f", "", "");
    row(p + "catch-up msg/s (from listening)", D.msgs / D.from_listen,
        D.msgs / Get(cy, "catch-up from listening s"), "%.0f", "", "");
    row(p + "restart -> client reconnected, s", D.connect_after_restart, NAN, "%.3f", "", "");
    row(p + "reconnected -> caught up, s", D.transfer, NAN, "%.3f", "", "");
    row(p + "transfer msg/s (w/o backoff wait)", D.msgs / D.transfer, NAN, "%.0f", "", "");
    row(p + "rolling client exited on its own (0/1)", D.client_never_exited ? 0 : 1, NAN, "%.0f",
        "never", pf(D.client_never_exited));
  }
  if (cy.have) {
    std::printf("Cyrus rolling sync_client alive while the replica was down (per run): %s\n",
                cy.alive_while_down.c_str());
  }
  std::printf(
      "\nNotes: Cyrus's lag was sampled on 100 messages per run (LMTP 250 -> IMAP STATUS on the "
      "replica,\npolled every 10 ms); ours per message (1 ms index polls). Cyrus's (b)-analogue "
      "is its burst:\n2,000 msgs over 4 LMTP connections, last 250 -> all visible. MB = 10^6 "
      "bytes of message data.\n");

  // Details.
  if (R.b_done) {
    std::printf("\n(b) %llu msgs; samples every 100 ms: t s, master LSN, replica LSN, lag "
                "records, lag s\n",
                (unsigned long long)R.b_messages);
    const size_t stride = std::max<size_t>(1, R.b_samples.size() / 30);
    for (size_t i = 0; i < R.b_samples.size(); i += stride) {
      const auto& [t, ml, rl, ls] = R.b_samples[i];
      std::printf("      %6.2f %8llu %8llu %7lld %7.3f\n", t, (unsigned long long)ml,
                  (unsigned long long)rl, (long long)ml - (long long)rl, ls);
    }
    std::printf("    CPU during the run: sync_client %.2f s, sync_server %.2f s over %.2f s\n",
                R.b_client_cpu, R.b_server_cpu, R.b_seconds);
  }
  for (const auto& L : R.c) {
    std::printf("(c) %.0f msg/s: CPU sync_client %.2f s, sync_server %.2f s over %.1f s; "
                "lag p90 %.2f ms, p99.9 %.2f ms, min %.2f ms\n",
                L.rate, L.client_cpu, L.server_cpu, L.seconds, L.p90 * 1e3, L.p999 * 1e3,
                L.min * 1e3);
    std::string ps;
    for (size_t k = 0; k < L.per_second.size(); ++k) {
      absl::StrAppendFormat(&ps, " %d:%.0f/%.0f", k, L.per_second[k].first * 1e3,
                            L.per_second[k].second * 1e3);
    }
    std::printf("    per second of the run, lag p50/max ms:%s\n", ps.c_str());
  }
  for (const auto& D : R.d) {
    std::printf("\n(d) outage %.1f s: server stop %.3f s, appending %llu msgs while down %.3f s, "
                "restart -> listening %.3f s,\n    restart -> first replica LSN move %.3f s; "
                "client retries %d, backoff waits: %s\n    client log (t from SIGTERM to "
                "sync_server):\n%s\n",
                D.down_s, D.server_stop_s, (unsigned long long)D.msgs, D.deliver_s, D.listen_s,
                D.first_advance, D.retries, D.retry_waits.c_str(), D.timeline.c_str());
  }

  // JSON.
  std::string j = absl::StrCat("{\"load_start\":\"", env.load_start, "\",\"create_probe_us\":[",
                               J(env.probe_start_us), ",", J(env.probe_end_us),
                               "],\"messages\":", env.flags.messages, ",\"source\":\"",
                               env.flags.eml_dir.empty() ? "workload.h" : "workload.py-eml",
                               "\",\"threads\":", env.flags.threads);
  if (R.a_done) {
    absl::StrAppend(&j, ",\"a\":{\"seconds\":", J(R.a_seconds),
                    ",\"msgs_per_s\":", J(R.a_msgs / R.a_seconds),
                    ",\"MB_per_s\":", J(R.a_bytes / 1e6 / R.a_seconds),
                    ",\"client_cpu_s\":", J(R.a_client_cpu),
                    ",\"server_cpu_s\":", J(R.a_server_cpu), ",\"verified\":", B(R.a_same),
                    ",\"cyrus_msgs_per_s\":", J(Get(cy, kA)),
                    ",\"ratio\":", J(R.a_msgs / R.a_seconds / Get(cy, kA)), "}");
  }
  if (R.b_done) {
    absl::StrAppend(&j, ",\"b\":{\"writer_alone_msgs_per_s\":", J(R.b_base_rate),
                    ",\"writer_with_client_msgs_per_s\":", J(R.b_rate),
                    ",\"max_lag_records\":", R.b_max_lag, ",\"max_lag_s\":", J(R.b_max_lag_s),
                    ",\"replica_rate\":", J(R.b_replica_rate), ",\"n\":", R.b_messages,
                    ",\"lag_at_end_records\":", R.b_lag_at_end, ",\"drain_s\":", J(R.b_drain),
                    ",\"keeps_up\":", B(R.b_keeps_up), ",\"verified\":", B(R.b_same),
                    ",\"cyrus_burst_drain_s\":", J(Get(cy, "burst last 250 -> all on replica s")),
                    "}");
  }
  absl::StrAppend(&j, ",\"c\":[");
  for (size_t i = 0; i < R.c.size(); ++i) {
    const auto& L = R.c[i];
    const double cyrus_rate = Get(cy, "lag achieved rate msg/s");
    const bool same_rate = std::fabs(cyrus_rate - L.rate) <= 0.1 * L.rate;
    absl::StrAppend(&j, i ? "," : "", "{\"rate\":", J(L.rate), ",\"achieved\":", J(L.achieved),
                    ",\"n\":", L.n, ",\"p50_s\":", J(L.p50), ",\"p99_s\":", J(L.p99),
                    ",\"max_s\":", J(L.max), ",\"verified\":", B(L.same),
                    ",\"cyrus_p50_s\":", J(same_rate ? Get(cy, "lag p50 s") : NAN),
                    ",\"cyrus_p99_s\":", J(same_rate ? Get(cy, "lag p99 s") : NAN), "}");
  }
  absl::StrAppend(&j, "],\"d\":[");
  for (size_t i = 0; i < R.d.size(); ++i) {
    const auto& D = R.d[i];
    absl::StrAppend(
        &j, i ? "," : "", "{\"down_s\":", J(D.down_s), ",\"from_restart_s\":", J(D.from_restart),
        ",\"from_listening_s\":", J(D.from_listen),
        ",\"msgs_per_s\":", J(D.msgs / D.from_restart),
        ",\"reconnect_after_restart_s\":", J(D.connect_after_restart),
        ",\"transfer_s\":", J(D.transfer), ",\"retries\":", D.retries,
        ",\"client_never_exited\":", B(D.client_never_exited), ",\"verified\":", B(D.same),
        ",\"cyrus_msgs_per_s\":", J(Get(cy, "catch-up msg/s")),
        ",\"ratio\":", J(D.msgs / D.from_restart / Get(cy, "catch-up msg/s")),
        "}");
  }
  absl::StrAppend(&j, "]}");
  std::printf("\nJSON %s\n", j.c_str());
}

int Main(int argc, char** argv) {
  Env env;
  if (!ParseFlags(argc, argv, &env.flags)) return 2;
  SetLogQuiet(true);
  env.bin = env.flags.bin.empty()
                ? std::filesystem::canonical("/proc/self/exe").parent_path().string()
                : env.flags.bin;
  for (const char* b : {"sync_client", "sync_server"}) {
    if (::access(absl::StrCat(env.bin, "/", b).c_str(), X_OK) != 0) {
      std::fprintf(stderr, "sync_bench: no %s in %s (use --bin)\n", b, env.bin.c_str());
      return 2;
    }
  }
  if (absl::Status s = env.source.Init(env.flags); !s.ok()) {
    std::fprintf(stderr, "sync_bench: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  std::string tmpl = absl::StrCat(env.flags.parent, "/sync_bench.XXXXXX");
  if (mkdtemp(tmpl.data()) == nullptr) {
    std::fprintf(stderr, "sync_bench: mkdtemp %s: %s\n", tmpl.c_str(), strerror(errno));
    return 1;
  }
  env.dir = std::filesystem::canonical(tmpl).string();
  env.secret = env.dir + "/secret";
  {
    std::string key(32, '\0');
    std::ifstream ur("/dev/urandom", std::ios::binary);
    ur.read(key.data(), key.size());
    int fd = ::open(env.secret.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || !WriteAll(fd, key, env.secret).ok()) {
      std::fprintf(stderr, "sync_bench: cannot write %s\n", env.secret.c_str());
      return 1;
    }
    ::close(fd);
  }
  std::printf("directory: %s\nbinaries:  %s\nmessages:  %s\n%u CPUs, load %s\n\n",
              env.dir.c_str(), env.bin.c_str(), env.source.Describe().c_str(),
              std::thread::hardware_concurrency(), LoadAvg().c_str());
  env.load_start = LoadAvg();
  env.probe_start_us = CreateProbeMicros(env.dir + "/probe_start", 2000);
  std::printf("file create probe (open+write 8 KiB+close+rename, 2000 files): %.1f us/file\n\n",
              env.probe_start_us);
  Results R;
  const std::vector<std::string> parts = absl::StrSplit(env.flags.parts, ',');
  auto want = [&](const char* p) { return std::find(parts.begin(), parts.end(), p) != parts.end(); };
  absl::Status s;
  auto fail = [&](const char* part, const absl::Status& st) {
    std::fprintf(stderr, "sync_bench: part %s: %s\n", part, std::string(st.message()).c_str());
    return 1;
  };
  int rc = 0;
  if (want("a") && !(s = PartA(env, R)).ok()) rc = fail("a", s);
  if (want("b") && !(s = PartB(env, R)).ok()) rc = fail("b", s);
  if (want("c")) {
    for (double rate : env.flags.lag_rates) {
      if (rate > 0 && !(s = PartC(env, R, rate)).ok()) rc = fail("c", s);
    }
  }
  if (want("d")) {
    for (double o : env.flags.outages) {
      if (!(s = PartD(env, R, o)).ok()) rc = fail("d", s);
    }
  }
  env.probe_end_us = CreateProbeMicros(env.dir + "/probe_end", 2000);
  Report(env, R, ReadCyrus(env.flags.cyrus));
  if (!env.flags.keep) std::filesystem::remove_all(env.dir);
  return rc;
}

}  // namespace
}  // namespace mailrepl

int main(int argc, char** argv) { return mailrepl::Main(argc, argv); }
