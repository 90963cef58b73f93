// `replctl dev-cluster stop|start|restart NAME` and `down`, with the real
// binaries: one host's replicad (or the coordinator) stops, starts again
// with the command line `up` used and restarts; every process started on
// the way is tracked in DIR/run and stopped by `down`; a pid file whose
// process is gone or is another program is ignored and removed.
#include <signal.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"
#include "common/file_util.h"
#include "test/cluster_harness.h"
#include "test/process_util.h"
#include "test/test_util.h"

namespace mailrepl::testing {
namespace {

// The arguments of a running process; empty once it is gone (or a zombie).
std::vector<std::string> Cmdline(int pid) {
  absl::StatusOr<std::string> raw = ReadFile(absl::StrCat("/proc/", pid, "/cmdline"));
  if (!raw.ok() || raw->empty()) return {};
  std::vector<std::string> argv = absl::StrSplit(*raw, absl::ByChar('\0'));
  if (argv.back().empty()) argv.pop_back();
  return argv;
}

// Every running process whose command line names something in dir.
std::vector<int> ProcessesOf(const std::string& dir) {
  std::vector<int> found;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    int pid;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    for (const std::string& arg : Cmdline(pid)) {
      if (absl::StartsWith(arg, dir + "/")) {
        found.push_back(pid);
        break;
      }
    }
  }
  return found;
}

bool RunsInCluster(int pid, const std::string& dir) {
  for (const std::string& arg : Cmdline(pid)) {
    if (absl::StartsWith(arg, dir + "/")) return true;
  }
  return false;
}

// The pid in DIR/run/NAME.pid; 0 without that file.
int PidFile(const std::string& dir, const std::string& name) {
  absl::StatusOr<std::string> text = ReadFile(absl::StrCat(dir, "/run/", name, ".pid"));
  int pid = 0;
  if (!text.ok() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &pid)) return 0;
  return pid;
}

// `replctl dev-cluster ARGS --dir DIR`.
RunResult DevCluster(const std::string& dir, std::vector<std::string> args) {
  args.insert(args.begin(), {Bin("replctl"), "dev-cluster"});
  args.insert(args.end(), {"--dir", dir});
  return Run(args, absl::Seconds(90));
}

// Whether the coordinator counts the host alive, with a heartbeat later
// than after_ms (the coordinator's clock).
bool Alive(Cluster& c, const std::string& host, int64_t after_ms = 0) {
  absl::StatusOr<coordpb::GetStatusReply> s = c.Status();
  if (!s.ok()) return false;
  for (const coordpb::HostStatus& h : s->hosts()) {
    if (h.host() == host) return h.alive() && h.last_heartbeat_ms() > after_ms;
  }
  return false;
}

TEST_CASE("dev-cluster stops, starts and restarts one process as up ran it, and down stops "
          "every process it started",
          "[cluster]") {
  // ~Cluster runs `dev-cluster down`: nothing outlives a failed check.
  Cluster c({.net = "127.0.31", .hosts = 2, .slots_per_host = 2, .lease_ms = 1500});
  const std::string dir = c.dir();
  std::set<int> pids = {c.PidOf("coordinator"), c.PidOf("host1"), c.PidOf("host2")};
  for (const std::string name : {"coordinator", "host1", "host2"}) {
    INFO(name);
    CHECK(PidFile(dir, name) == c.PidOf(name));  // up records what it started
  }

  // stop host1: gone when stop returns; the coordinator notices; host2 runs on.
  const int host1 = c.PidOf("host1");
  const std::vector<std::string> host1_cmdline = Cmdline(host1);
  REQUIRE(!host1_cmdline.empty());
  RunResult stop = DevCluster(dir, {"stop", "host1"});
  INFO("stop: " << stop.out << stop.err);
  REQUIRE(stop.exit == 0);
  CHECK(absl::StrContains(stop.out, absl::StrCat("host1 (pid ", host1, ") stopped")));
  CHECK(!RunsInCluster(host1, dir));
  CHECK(PidFile(dir, "host1") == 0);
  CHECK(RunsInCluster(c.PidOf("host2"), dir));
  CHECK(WaitFor([&] { return !Alive(c, "host1"); }, absl::Seconds(10), absl::Milliseconds(50)));

  RunResult stopped = DevCluster(dir, {"stop", "host1"});
  INFO("stop again: " << stopped.out << stopped.err);
  CHECK(stopped.exit == 0);
  CHECK(absl::StrContains(stopped.out, "host1 is not running"));

  // start host1: the same command line, a new pid recorded, alive again.
  RunResult start = DevCluster(dir, {"start", "host1"});
  INFO("start: " << start.out << start.err);
  REQUIRE(start.exit == 0);
  const int host1_new = PidFile(dir, "host1");
  REQUIRE(host1_new != 0);
  pids.insert(host1_new);
  CHECK(Cmdline(host1_new) == host1_cmdline);
  CHECK(WaitFor([&] { return Alive(c, "host1"); }, absl::Seconds(10), absl::Milliseconds(50)));

  RunResult started = DevCluster(dir, {"start", "host1"});
  INFO("start again: " << started.out << started.err);
  CHECK(started.exit == 0);
  CHECK(absl::StrContains(started.out,
                          absl::StrCat("host1 is already running (pid ", host1_new, ")")));
  CHECK(PidFile(dir, "host1") == host1_new);

  // restart host2: a new process that registered after the restart began.
  const int host2 = c.PidOf("host2");
  absl::StatusOr<coordpb::GetStatusReply> before = c.Status();
  REQUIRE(before.ok());
  RunResult restart = DevCluster(dir, {"restart", "host2"});
  INFO("restart host2: " << restart.out << restart.err);
  REQUIRE(restart.exit == 0);
  const int host2_new = PidFile(dir, "host2");
  REQUIRE(host2_new != 0);
  pids.insert(host2_new);
  CHECK(host2_new != host2);
  CHECK(!RunsInCluster(host2, dir));
  CHECK(RunsInCluster(host2_new, dir));
  CHECK(WaitFor([&] { return Alive(c, "host2", before->answered_ms()); }, absl::Seconds(10),
                absl::Milliseconds(50)));

  // restart coordinator: its flags (lease, vouch grace, socketmap) as up gave them.
  const int coordinator = c.PidOf("coordinator");
  const std::vector<std::string> coordinator_cmdline = Cmdline(coordinator);
  RunResult restart_coordinator = DevCluster(dir, {"restart", "coordinator"});
  INFO("restart coordinator: " << restart_coordinator.out << restart_coordinator.err);
  REQUIRE(restart_coordinator.exit == 0);
  const int coordinator_new = PidFile(dir, "coordinator");
  REQUIRE(coordinator_new != 0);
  pids.insert(coordinator_new);
  CHECK(coordinator_new != coordinator);
  CHECK(Cmdline(coordinator_new) == coordinator_cmdline);
  CHECK(c.Status().ok());

  // down: every process ever started is gone, the restarted ones included.
  RunResult down = DevCluster(dir, {"down"});
  INFO("down: " << down.out << down.err);
  REQUIRE(down.exit == 0);
  for (int pid : pids) {
    INFO("pid " << pid);
    CHECK(!RunsInCluster(pid, dir));
  }
  CHECK(ProcessesOf(dir).empty());
  for (const std::string name : {"coordinator", "host1", "host2"}) {
    INFO(name);
    CHECK(PidFile(dir, name) == 0);
  }
}

TEST_CASE("a pid file naming another program is stale: stop and down leave that program alone "
          "and remove the file",
          "[cluster]") {
  TempDir tmp;
  const std::string dir = tmp.path();
  // A cluster.json as up writes it, with nothing running.
  REQUIRE(WriteFileAtomically(dir + "/cluster.json",
                              absl::StrCat(R"({"dir": ")", dir, R"(", "coordinator": )",
                                           R"("127.0.31.1:7400", "secret_file": ")", dir,
                                           R"(/secret", "hosts": [{"name": "host1", "config": ")",
                                           dir, R"(/host1/replicad.conf"}]})"))
              .ok());
  REQUIRE(MakeDirs(dir + "/run").ok());
  Process other({"/bin/sleep", "60"});
  for (const std::string name : {"host1", "coordinator"}) {
    REQUIRE(WriteFileAtomically(absl::StrCat(dir, "/run/", name, ".pid"),
                                absl::StrCat(other.pid(), "\n"))
                .ok());
  }

  RunResult stop = DevCluster(dir, {"stop", "host1"});
  INFO("stop: " << stop.out << stop.err);
  CHECK(stop.exit == 0);
  CHECK(absl::StrContains(stop.out, "host1 is not running"));
  CHECK(PidFile(dir, "host1") == 0);
  CHECK(other.Running());

  RunResult down = DevCluster(dir, {"down"});
  INFO("down: " << down.out << down.err);
  CHECK(down.exit == 0);
  CHECK(PidFile(dir, "coordinator") == 0);
  CHECK(other.Running());

  // Names not in cluster.json, and a directory without a cluster: could not run (2).
  RunResult unknown = DevCluster(dir, {"restart", "host9"});
  CHECK(unknown.exit == 2);
  CHECK(absl::StrContains(unknown.err, "host1, coordinator"));
  RunResult nothing = DevCluster(tmp.Sub("none"), {"start", "host1"});
  CHECK(nothing.exit == 2);
  CHECK(absl::StrContains(nothing.err, "no dev cluster in"));
}

}  // namespace
}  // namespace mailrepl::testing
