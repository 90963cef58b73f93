#include "tools/dev_cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "proto/coord.pb.h"
#include "replicad/config.h"
#include "rpc/rpc_client.h"
#include "transport/auth.h"
#include "tools/placement.h"

namespace mailrepl::tools {

namespace {

constexpr int kLmtpPort = 2424;
constexpr int kApiPort = 2425;
constexpr int kSyncPort = 2426;
constexpr int kCoordinatorPort = 7400;
constexpr int kSocketmapPort = 7401;
constexpr int kMetricsPort = 9100;

// Starts `argv` detached (own session), stdout and stderr appended to log.
absl::StatusOr<int> Spawn(const std::vector<std::string>& argv, const std::string& log) {
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "open", log);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    return ErrnoStatus(errno, "fork", argv[0]);
  }
  if (pid == 0) {
    ::setsid();
    const int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(fd);
  return pid;
}

constexpr absl::Duration kKillWait = absl::Seconds(5);  // for a process to go after SIGKILL

std::string CoordinatorDb(const std::string& dir) { return dir + "/coordinator.db"; }
std::string RunDir(const std::string& dir) { return dir + "/run"; }
std::string PidPath(const std::string& dir, const std::string& name) {
  return absl::StrCat(RunDir(dir), "/", name, ".pid");
}
std::string CmdlinePath(const std::string& dir, const std::string& name) {
  return absl::StrCat(RunDir(dir), "/", name, ".cmdline");
}

// A process of the cluster: the coordinator or one host's replicad.
struct Member {
  std::string name;    // coordinator, host1, ...
  std::string binary;  // the file name of its argv[0]
  std::string marker;  // an argument only this member's processes have: config or database
  std::string log;
  int up_pid = 0;      // cluster.json's: the process up started
  bool is_host = true;
};

// Hosts first: they go before the coordinator.
std::vector<Member> Members(const configpb::DevCluster& c) {
  std::vector<Member> members;
  for (const configpb::DevHost& h : c.hosts()) {
    members.push_back({h.name(), "replicad", h.config(), h.log(), h.pid(), true});
  }
  members.push_back({"coordinator", "coordinatord", CoordinatorDb(c.dir()), c.coordinator_log(),
                     c.coordinator_pid(), false});
  return members;
}

absl::StatusOr<Member> FindMember(const configpb::DevCluster& c, const std::string& name) {
  std::vector<std::string> names;
  for (const Member& m : Members(c)) {
    if (m.name == name) return m;
    names.push_back(m.name);
  }
  return absl::InvalidArgumentError(absl::StrCat("no `", name, "` in the dev cluster in ", c.dir(),
                                                 ": give one of ", absl::StrJoin(names, ", ")));
}

// NUL-terminated arguments, as in /proc/PID/cmdline.
std::vector<std::string> SplitCmdline(const std::string& raw) {
  std::vector<std::string> argv = absl::StrSplit(raw, absl::ByChar('\0'));
  if (!argv.empty() && argv.back().empty()) argv.pop_back();
  return argv;
}

// Whether pid runs m's binary with m's marker among its arguments: false
// for an exited process, a zombie (empty cmdline), or a pid reused by
// another program.
bool RunsAs(int pid, const Member& m) {
  if (pid <= 0) return false;
  absl::StatusOr<std::string> raw = ReadFile(absl::StrCat("/proc/", pid, "/cmdline"));
  if (!raw.ok()) return false;
  const std::vector<std::string> argv = SplitCmdline(*raw);
  if (argv.empty() || std::filesystem::path(argv[0]).filename() != m.binary) return false;
  return std::find(argv.begin() + 1, argv.end(), m.marker) != argv.end();
}

// The pid of m's running process, 0 if none: its pid file's (a stale one
// is removed), else cluster.json's (a cluster of an older replctl has no
// pid files).
int RunningPid(const std::string& dir, const Member& m) {
  const std::string file = PidPath(dir, m.name);
  if (absl::StatusOr<std::string> text = ReadFile(file); text.ok()) {
    int pid = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &pid) && RunsAs(pid, m)) return pid;
    ::unlink(file.c_str());
  }
  return RunsAs(m.up_pid, m) ? m.up_pid : 0;
}

// Polls until pid no longer runs as m (reaping it if it is our child) or
// the deadline; whether it is gone.
bool WaitGone(int pid, const Member& m, absl::Time deadline) {
  for (;;) {
    ::waitpid(pid, nullptr, WNOHANG);  // only our own children (up's cleanup) need it
    if (!RunsAs(pid, m)) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));  // polling interval, not a wait for a condition
  }
}

struct Running {
  Member member;
  int pid;
};

// SIGTERM to every one at once, SIGKILL to those still running after
// grace; removes the pid file of each one gone. One line per process.
absl::StatusOr<std::vector<std::string>> StopAll(const std::string& dir,
                                                 const std::vector<Running>& running,
                                                 absl::Duration grace) {
  for (const Running& r : running) ::kill(r.pid, SIGTERM);
  const absl::Time deadline = absl::Now() + grace;
  std::vector<std::string> lines, stuck;
  for (const Running& r : running) {
    const std::string what = absl::StrCat(r.member.name, " (pid ", r.pid, ")");
    if (WaitGone(r.pid, r.member, deadline)) {
      lines.push_back(absl::StrCat(what, " stopped"));
    } else {
      ::kill(r.pid, SIGKILL);
      if (!WaitGone(r.pid, r.member, absl::Now() + kKillWait)) {
        stuck.push_back(what);
        continue;  // its pid file stays: it still runs
      }
      lines.push_back(absl::StrCat(what, " did not exit within ", absl::FormatDuration(grace),
                                   " of SIGTERM: sent SIGKILL; stopped"));
    }
    ::unlink(PidPath(dir, r.member.name).c_str());
  }
  if (!stuck.empty()) {
    return absl::InternalError(absl::StrCat(
        absl::StrJoin(stuck, ", "), " still running ", absl::FormatDuration(kKillWait),
        " after SIGKILL (uninterruptible sleep? see `ps -o pid,stat,wchan -p PID`); their pid "
        "files stay in ", RunDir(dir), ": run the command again once they are gone"));
  }
  return lines;
}

// DIR/run/lock, held (flock) while one command changes the cluster's
// processes; released when destroyed. Not inherited by what it spawns.
class DirLock {
 public:
  static absl::StatusOr<DirLock> Take(const std::string& dir) {
    RETURN_IF_ERROR(MakeDirs(RunDir(dir)));
    const std::string path = RunDir(dir) + "/lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus(errno, "open", path);
    int r;
    do {
      r = ::flock(fd, LOCK_EX);  // another dev-cluster command on DIR: it ends within its deadlines
    } while (r != 0 && errno == EINTR);
    if (r != 0) {
      const int err = errno;
      ::close(fd);
      return ErrnoStatus(err, "flock", path);
    }
    return DirLock(fd);
  }
  DirLock(DirLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  DirLock& operator=(DirLock&&) = delete;
  ~DirLock() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  explicit DirLock(int fd) : fd_(fd) {}
  int fd_;
};

// Records argv as m's command line (for start), starts it, records its pid.
absl::StatusOr<int> SpawnMember(const std::string& dir, const Member& m,
                                const std::vector<std::string>& argv) {
  const std::string nul(1, '\0');
  RETURN_IF_ERROR(
      WriteFileAtomically(CmdlinePath(dir, m.name), absl::StrCat(absl::StrJoin(argv, nul), nul)));
  ASSIGN_OR_RETURN(int pid, Spawn(argv, m.log));
  if (absl::Status s = WriteFileAtomically(PidPath(dir, m.name), absl::StrCat(pid, "\n"));
      !s.ok()) {
    ::kill(pid, SIGKILL);  // untracked, `down` could not stop it
    ::waitpid(pid, nullptr, 0);
    return s;
  }
  return pid;
}

absl::StatusOr<std::vector<std::string>> ReadCmdline(const std::string& dir, const Member& m) {
  const std::string file = CmdlinePath(dir, m.name);
  absl::StatusOr<std::string> raw = ReadFile(file);
  if (!raw.ok() && !absl::IsNotFound(raw.status())) return raw.status();
  std::vector<std::string> argv;
  if (raw.ok()) argv = SplitCmdline(*raw);
  if (argv.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no command line for ", m.name, " in ", file, " (a cluster made by an older replctl): "
        "`replctl dev-cluster down --dir ", dir, "`, then `up` again"));
  }
  return argv;
}

// The last lines of a log, for an error message.
std::string LogTail(const std::string& log) {
  constexpr off_t kTail = 2048;
  const int fd = ::open(log.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "(no log)";
  struct stat st;
  std::string text(kTail, '\0');
  ssize_t n = -1;
  if (::fstat(fd, &st) == 0) {
    n = ::pread(fd, text.data(), kTail, std::max<off_t>(0, st.st_size - kTail));
  }
  ::close(fd);
  if (n <= 0) return "(empty log)";
  text.resize(n);
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipWhitespace());
  if (lines.size() > 3) lines.erase(lines.begin(), lines.end() - 3);
  return absl::StrJoin(lines, " | ");
}

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("was killed by signal ", WTERMSIG(status));
  return "ended";
}

absl::Status WriteClusterFile(const configpb::DevCluster& c) {
  std::string json;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  if (!google::protobuf::util::MessageToJsonString(c, &json, o).ok()) {
    return absl::InternalError("cannot encode cluster.json");
  }
  return WriteFileAtomically(c.dir() + "/cluster.json", json);
}

rpc::RpcClientOptions CoordinatorOptions(const configpb::DevCluster& c, const std::string& secret) {
  return {.address = c.coordinator(),
          .service = "coordinator",
          .secret = secret,
          .client = "replctl dev-cluster"};
}

absl::StatusOr<coordpb::Response> Call(const configpb::DevCluster& c, const std::string& secret,
                                       const coordpb::Request& request) {
  return rpc::CallOnce<coordpb::Response>(CoordinatorOptions(c, secret), request,
                                          absl::Seconds(10));
}

// Polls GetStatus until done(status) or the deadline; the last error or
// `waiting_for` in the timeout message.
absl::StatusOr<coordpb::GetStatusReply> WaitForStatus(
    const configpb::DevCluster& c, const std::string& secret, absl::Time deadline,
    const std::string& waiting_for,
    const std::function<bool(const coordpb::GetStatusReply&)>& done) {
  coordpb::Request request;
  request.mutable_get_status();
  std::string last = "no answer yet";
  for (;;) {
    absl::StatusOr<coordpb::Response> r = Call(c, secret, request);
    if (r.ok() && done(r->get_status())) return r->get_status();
    if (!r.ok()) last = std::string(r.status().message());
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("timed out waiting for ", waiting_for, " (", last,
                        "); see the logs in ", c.dir(), "/logs"));
    }
    absl::SleepFor(absl::Milliseconds(100));  // polling interval, not a wait for a condition
  }
}

// cluster.json of the cluster in dir (a directory, or its cluster.json).
absl::StatusOr<configpb::DevCluster> LoadCluster(const std::string& dir) {
  absl::StatusOr<configpb::DevCluster> c = ReadClusterFile(dir);
  if (absl::IsNotFound(c.status())) {
    return absl::NotFoundError(absl::StrCat("no dev cluster in ", dir, " (no cluster.json): ",
                                            "start one with `replctl dev-cluster up --dir ", dir,
                                            "`"));
  }
  if (!c.ok()) return c.status();
  std::error_code ec;
  const std::filesystem::path given = std::filesystem::is_directory(dir, ec)
                                          ? std::filesystem::path(dir)
                                          : std::filesystem::path(dir).parent_path();
  if (!std::filesystem::equivalent(given.empty() ? "." : given, c->dir(), ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        given.string(), "/cluster.json describes the cluster in ", c->dir(),
        ": a dev cluster cannot be moved (its configs name that directory); give --dir ",
        c->dir()));
  }
  return c;
}

absl::StatusOr<std::vector<std::string>> DownLocked(const configpb::DevCluster& c,
                                                    absl::Duration grace) {
  std::vector<Running> running;
  for (const Member& m : Members(c)) {
    if (const int pid = RunningPid(c.dir(), m); pid != 0) running.push_back({m, pid});
  }
  return StopAll(c.dir(), running, grace);
}

absl::StatusOr<std::string> StopLocked(const configpb::DevCluster& c, const Member& m,
                                       absl::Duration grace) {
  const int pid = RunningPid(c.dir(), m);
  if (pid == 0) return absl::StrCat(m.name, " is not running: nothing to stop");
  ASSIGN_OR_RETURN(std::vector<std::string> lines, StopAll(c.dir(), {{m, pid}}, grace));
  return lines.at(0);
}

// Whether m, started after the coordinator answered at before_ms (its
// clock), is ready: a host registered (a heartbeat since), the
// coordinator answers.
bool Ready(const Member& m, const coordpb::GetStatusReply& s, int64_t before_ms) {
  if (!m.is_host) return true;
  for (const coordpb::HostStatus& h : s.hosts()) {
    if (h.host() == m.name) return h.alive() && h.last_heartbeat_ms() > before_ms;
  }
  return false;
}

absl::StatusOr<std::string> StartLocked(const configpb::DevCluster& c, const Member& m,
                                        absl::Duration timeout) {
  if (const int pid = RunningPid(c.dir(), m); pid != 0) {
    return absl::StrCat(m.name, " is already running (pid ", pid, "): nothing to start");
  }
  ASSIGN_OR_RETURN(std::vector<std::string> argv, ReadCmdline(c.dir(), m));
  ASSIGN_OR_RETURN(std::string secret, transport::LoadSecret(c.secret_file()));
  coordpb::Request get_status;
  get_status.mutable_get_status();
  int64_t before_ms = 0;
  std::string unanswered;  // why a host is started without waiting for it
  if (m.is_host) {
    absl::StatusOr<coordpb::Response> r = Call(c, secret, get_status);
    if (r.ok()) {
      before_ms = r->get_status().answered_ms();
    } else {
      unanswered = std::string(r.status().message());
    }
  }
  ASSIGN_OR_RETURN(const int pid, SpawnMember(c.dir(), m, argv));
  const std::string what = absl::StrCat(m.name, " (pid ", pid, ")");
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      ::unlink(PidPath(c.dir(), m.name).c_str());
      return absl::AbortedError(absl::StrCat(
          what, " ", DescribeExit(status), " right after it started: ", LogTail(m.log), "; see ",
          m.log, m.is_host ? absl::StrCat(" (a replicad started by hand with ", m.marker,
                                          " is not tracked: if one runs, stop it first)")
                           : ""));
    }
    if (!unanswered.empty()) {
      return absl::StrCat(what, " started; not waiting for it to register: the coordinator at ",
                          c.coordinator(), " does not answer (", unanswered, ")");
    }
    absl::StatusOr<coordpb::Response> r = Call(c, secret, get_status);
    if (r.ok() && Ready(m, r->get_status(), before_ms)) {
      return absl::StrCat(what, m.is_host ? " started and registered with the coordinator"
                                          : " started and answers");
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          what, " runs but ",
          m.is_host ? "has not registered with the coordinator" : "does not answer", " after ",
          absl::FormatDuration(timeout), " (", r.ok() ? "no heartbeat yet" : r.status().message(),
          "); it stays tracked in ", PidPath(c.dir(), m.name), ": see ", m.log));
    }
    absl::SleepFor(absl::Milliseconds(50));  // polling interval, not a wait for a condition
  }
}

}  // namespace

absl::StatusOr<configpb::DevCluster> ReadClusterFile(const std::string& path) {
  std::string file = path;
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) file = path + "/cluster.json";
  ASSIGN_OR_RETURN(std::string json, ReadFile(file));
  configpb::DevCluster c;
  google::protobuf::util::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  if (!google::protobuf::util::JsonStringToMessage(json, &c, o).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file, " is not a cluster.json"));
  }
  return c;
}

absl::StatusOr<configpb::DevCluster> DevClusterUp(const DevClusterOptions& options) {
  if (options.hosts < 2) return absl::InvalidArgumentError("--hosts must be at least 2");
  if (options.slots_per_host < 1) return absl::InvalidArgumentError("--slots-per-host must be >= 1");
  if (options.replicas < 1 || options.replicas >= options.hosts) {
    return absl::InvalidArgumentError("--replicas must be between 1 and hosts - 1");
  }
  if (options.hosts * options.slots_per_host > 180) {
    return absl::InvalidArgumentError("at most 180 slots (one loopback address each)");
  }
  if (options.durability != "async" && options.durability != "sync") {
    return absl::InvalidArgumentError("--durability is async or sync");
  }
  const std::string dir = std::filesystem::absolute(options.dir).lexically_normal().string();
  RETURN_IF_ERROR(MakeDirs(dir + "/logs"));
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Take(dir));
  if (absl::StatusOr<configpb::DevCluster> old = ReadClusterFile(dir); old.ok()) {
    std::vector<std::string> running;
    for (const Member& m : Members(*old)) {
      if (const int pid = RunningPid(dir, m); pid != 0) {
        running.push_back(absl::StrCat(m.name, " (pid ", pid, ")"));
      }
    }
    if (!running.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a cluster already runs in ", dir, " (", absl::StrJoin(running, ", "),
          "): `replctl dev-cluster down --dir ", dir, "` first"));
    }
  }

  configpb::DevCluster c;
  c.set_dir(dir);
  c.set_lease_ms(options.lease_ms);
  c.set_secret_file(dir + "/secret");
  c.set_coordinator(absl::StrCat(options.net, ".1:", kCoordinatorPort));
  c.set_socketmap(absl::StrCat(options.net, ".1:", kSocketmapPort));
  c.set_coordinator_log(dir + "/logs/coordinatord.log");
  if (!ReadFile(c.secret_file()).ok()) {
    RETURN_IF_ERROR(WriteFileAtomically(c.secret_file(),
                                        absl::BytesToHexString(transport::NewChallenge()) + "\n"));
  }
  if (::chmod(c.secret_file().c_str(), 0600) != 0) return ErrnoStatus(errno, "chmod 600", c.secret_file());
  ASSIGN_OR_RETURN(std::string secret, transport::LoadSecret(c.secret_file()));

  // Everything started so far is in cluster.json at every step, so that
  // `down` (or the cleanup below) can stop it.
  auto fail = [&](absl::Status s) {
    (void)WriteClusterFile(c);
    (void)DownLocked(c, absl::Seconds(5));
    return s;
  };
  ASSIGN_OR_RETURN(
      int coordinator_pid,
      SpawnMember(dir, Members(c).back(),
                  {options.bin_dir + "/coordinatord", "--db", CoordinatorDb(dir), "--listen",
                   c.coordinator(), "--secret-file", c.secret_file(), "--lease-ms",
                   absl::StrCat(options.lease_ms), "--vouch-grace-ms",
                   absl::StrCat(options.vouch_grace_ms), "--cluster-id", "dev",
                   "--socketmap-listen", c.socketmap()}));
  c.set_coordinator_pid(coordinator_pid);

  for (int h = 1; h <= options.hosts; ++h) {
    const std::string name = absl::StrCat("host", h);
    const std::string host_dir = absl::StrCat(dir, "/", name);
    configpb::ReplicadConfig rc;
    rc.set_host(name);
    rc.set_coordinator(c.coordinator());
    rc.set_secret_file(c.secret_file());
    rc.set_metrics_listen(absl::StrCat(options.net, ".", 200 + h, ":", kMetricsPort));
    rc.set_state_dir(host_dir + "/state");
    rc.set_promote_hook(options.promote_hook);
    rc.set_demote_hook(options.demote_hook);
    for (int k = 1; k <= options.slots_per_host; ++k) {
      const int slot_id = (h - 1) * options.slots_per_host + k;
      const std::string ip = absl::StrCat(options.net, ".", 10 + slot_id);
      configpb::SlotConfig* s = rc.add_slot();
      s->set_slot_id(slot_id);
      s->set_data(absl::StrCat(host_dir, "/slot", slot_id));
      s->set_lmtp_listen(absl::StrCat(ip, ":", kLmtpPort));
      s->set_api_listen(absl::StrCat(ip, ":", kApiPort));
      s->set_sync_listen(absl::StrCat(ip, ":", kSyncPort));
    }
    if (absl::Status s = replicad::ValidateReplicadConfig(rc, name); !s.ok()) return fail(s);
    std::string text;
    google::protobuf::TextFormat::PrintToString(rc, &text);
    if (absl::Status s = MakeDirs(host_dir); !s.ok()) return fail(s);
    configpb::DevHost* host = c.add_hosts();
    host->set_name(name);
    host->set_config(host_dir + "/replicad.conf");
    host->set_log(absl::StrCat(dir, "/logs/", name, ".log"));
    host->set_metrics(rc.metrics_listen());
    if (absl::Status s = WriteFileAtomically(
            host->config(),
            absl::StrCat("# replicad.conf written by replctl dev-cluster up\n", text));
        !s.ok()) {
      return fail(s);
    }
    for (const configpb::SlotConfig& s : rc.slot()) {
      configpb::DevSlot* d = c.add_slots();
      d->set_slot_id(s.slot_id());
      d->set_host(name);
      d->set_data(s.data());
      d->set_meta(s.meta());
      d->set_spool(s.spool());
      d->set_lmtp(s.lmtp_listen());
      d->set_api(s.api_listen());
      d->set_sync(s.sync_listen());
      d->set_metrics(rc.metrics_listen());
    }
    absl::StatusOr<int> pid =
        SpawnMember(dir, Members(c).at(c.hosts_size() - 1),
                    {options.bin_dir + "/replicad", "--config", host->config()});
    if (!pid.ok()) return fail(pid.status());
    host->set_pid(*pid);
  }
  if (absl::Status s = WriteClusterFile(c); !s.ok()) return fail(s);

  const absl::Time deadline = absl::Now() + options.timeout;
  const int total_slots = options.hosts * options.slots_per_host;
  absl::StatusOr<coordpb::GetStatusReply> registered = WaitForStatus(
      c, secret, deadline, "every host to register",
      [&](const coordpb::GetStatusReply& s) {
        int slots = 0;
        for (const auto& h : s.hosts()) slots += h.alive() ? h.slot_ids_size() : 0;
        return slots == total_slots;
      });
  if (!registered.ok()) return fail(registered.status());

  // Stores as `replctl plan` places them (tools/placement.h); its slot ids
  // are the ones numbered above.
  absl::StatusOr<Placement> placement =
      Plan(options.hosts, options.slots_per_host, options.replicas);
  if (!placement.ok()) return fail(placement.status());
  std::map<uint64_t, configpb::DevSlot*> by_id;
  for (configpb::DevSlot& d : *c.mutable_slots()) by_id[d.slot_id()] = &d;
  for (size_t i = 0; i < placement->stores.size(); ++i) {
    coordpb::Request request;
    coordpb::CreateStore* cs = request.mutable_create_store();
    cs->set_store_id(i + 1);
    for (uint64_t id : placement->stores[i].slot_ids) cs->add_slot_ids(id);
    cs->set_master_slot_id(cs->slot_ids(0));
    cs->set_durability(options.durability == "sync" ? coordpb::SYNC : coordpb::ASYNC);
    if (!options.service_net.empty()) {
      const std::string ip = absl::StrCat(options.service_net, ".", i + 1);
      cs->set_service_lmtp(absl::StrCat(ip, ":", kLmtpPort));
      cs->set_service_api(absl::StrCat(ip, ":", kApiPort));
    }
    absl::StatusOr<coordpb::Response> r = Call(c, secret, request);
    if (!r.ok()) return fail(r.status());
    const coordpb::StoreInfo& info = r->create_store().store();
    configpb::DevStore* ds = c.add_stores();
    ds->set_store_id(info.store_id());
    ds->set_master_slot_id(info.master_slot_id());
    ds->set_epoch(info.epoch());
    ds->set_durability(options.durability);
    ds->set_service_lmtp(info.service_lmtp());
    ds->set_service_api(info.service_api());
    for (uint64_t id : cs->slot_ids()) {
      configpb::DevSlot* d = by_id[id];
      d->set_store_id(info.store_id());
      d->set_role(id == info.master_slot_id() ? "master" : "replica");
      if (id == info.master_slot_id()) {
        ds->set_master_lmtp(d->lmtp());
        ds->set_master_api(d->api());
      } else {
        ds->add_replica_slot_ids(id);
      }
    }
  }
  // Users round-robin over the stores.
  std::map<uint64_t, std::vector<std::string>> users;
  for (int u = 0; u < options.users && c.stores_size() > 0; ++u) {
    const uint64_t store = c.stores(u % c.stores_size()).store_id();
    users[store].push_back(absl::StrCat("user", u));
    (*c.mutable_users())[absl::StrCat("user", u)] = store;
  }
  for (const auto& [store, names] : users) {
    coordpb::Request request;
    request.mutable_assign_users()->set_store_id(store);
    for (const std::string& n : names) request.mutable_assign_users()->add_users(n);
    absl::StatusOr<coordpb::Response> r = Call(c, secret, request);
    if (!r.ok()) return fail(r.status());
  }
  RETURN_IF_ERROR(WriteClusterFile(c));

  absl::StatusOr<coordpb::GetStatusReply> ready = WaitForStatus(
      c, secret, deadline,
      "every store to be ok (masters serving, replicas connected) and every host to hold the "
      "current roles and users",
      [&](const coordpb::GetStatusReply& s) {
        if (s.stores_size() != c.stores_size()) return false;
        for (const auto& h : s.hosts()) {
          if (h.known_version() != s.version() ||
              h.known_directory_version() != s.directory_version()) {
            return false;
          }
        }
        for (const auto& st : s.stores()) {
          if (st.state() != "ok") return false;
        }
        return true;
      });
  if (!ready.ok()) return fail(ready.status());
  return c;
}

absl::StatusOr<std::vector<std::string>> DevClusterDown(const std::string& dir,
                                                        absl::Duration grace) {
  absl::StatusOr<configpb::DevCluster> c = LoadCluster(dir);
  if (absl::IsNotFound(c.status())) return std::vector<std::string>{};
  if (!c.ok()) return c.status();
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Take(c->dir()));
  return DownLocked(*c, grace);
}

absl::StatusOr<std::string> DevClusterStop(const std::string& dir, const std::string& name,
                                           absl::Duration grace) {
  ASSIGN_OR_RETURN(configpb::DevCluster c, LoadCluster(dir));
  ASSIGN_OR_RETURN(Member m, FindMember(c, name));
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Take(c.dir()));
  return StopLocked(c, m, grace);
}

absl::StatusOr<std::string> DevClusterStart(const std::string& dir, const std::string& name,
                                            absl::Duration timeout) {
  ASSIGN_OR_RETURN(configpb::DevCluster c, LoadCluster(dir));
  ASSIGN_OR_RETURN(Member m, FindMember(c, name));
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Take(c.dir()));
  return StartLocked(c, m, timeout);
}

absl::StatusOr<std::vector<std::string>> DevClusterRestart(const std::string& dir,
                                                           const std::string& name,
                                                           absl::Duration grace,
                                                           absl::Duration timeout) {
  ASSIGN_OR_RETURN(configpb::DevCluster c, LoadCluster(dir));
  ASSIGN_OR_RETURN(Member m, FindMember(c, name));
  ASSIGN_OR_RETURN(DirLock lock, DirLock::Take(c.dir()));
  ASSIGN_OR_RETURN(std::string stopped, StopLocked(c, m, grace));
  ASSIGN_OR_RETURN(std::string started, StartLocked(c, m, timeout));
  return std::vector<std::string>{stopped, started};
}

}  // namespace mailrepl::tools
