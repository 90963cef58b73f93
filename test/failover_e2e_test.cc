// Planned failover end to end: replctl drain/undrain/failover against a
// dev cluster under continuous LMTP load from smtplib.LMTP clients that
// record every answer, retry 4xx answers and look up the user's master
// again (as an MTA with a transport lookup would).
#include <signal.h>
#include <sys/stat.h>

#include <cstdlib>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "asio.hpp"
#include "catch2/catch.hpp"
#include "common/file_util.h"
#include "transport/net.h"
#include "test/cluster_harness.h"
#include "test/process_util.h"
#include "test/test_util.h"

namespace mailrepl::testing {
namespace {

// Masters per host, from the coordinator.
std::map<std::string, int> MastersPerHost(Cluster& c) {
  std::map<std::string, int> masters;
  auto s = c.Status();
  REQUIRE(s.ok());
  for (const auto& st : s->stores()) {
    for (const auto& m : st.store().members()) {
      if (m.slot_id() == st.store().master_slot_id()) ++masters[m.host()];
    }
  }
  return masters;
}

// The first line an LMTP server sends at ADDR:PORT ("" if nothing listens).
std::string Greeting(const std::string& address) {
  asio::io_context io;
  absl::StatusOr<asio::ip::tcp::endpoint> e = transport::ParseEndpoint(address);
  REQUIRE(e.ok());
  asio::ip::tcp::socket socket(io);
  asio::error_code ec;
  socket.connect(*e, ec);
  if (ec) return "";
  std::string line;
  asio::read_until(socket, asio::dynamic_buffer(line), "\r\n", ec);
  return line;
}

// The pids of the processes listening on ADDR:PORT (from ss).
std::set<int> Listeners(const std::string& address) {
  RunResult ss = Run({"/usr/bin/ss", "-Hltnp", "src", address});
  std::set<int> pids;
  for (size_t at = ss.out.find("pid="); at != std::string::npos;
       at = ss.out.find("pid=", at + 4)) {
    pids.insert(std::atoi(ss.out.c_str() + at + 4));
  }
  return pids;
}

TEST_CASE("a store's service address follows the master: after a failover it answers from the "
          "new master and the old master no longer listens on it",
          "[failover]") {
  Cluster c({.net = "127.0.19", .hosts = 2, .slots_per_host = 1});
  const configpb::DevStore& store = c.store(1);
  const std::string service = store.service_lmtp();
  REQUIRE_FALSE(service.empty());
  const std::string old_master = c.slot(store.master_slot_id()).host();
  const std::string new_master = c.slot(store.replica_slot_ids(0)).host();
  const std::string old_name = absl::StrCat("slot", store.master_slot_id());
  const std::string new_name = absl::StrCat("slot", store.replica_slot_ids(0));
  REQUIRE(WaitFor([&] { return absl::StrContains(Greeting(service), old_name); },
                  absl::Seconds(10), absl::Milliseconds(20)));
  CHECK(Listeners(service) == std::set<int>{c.PidOf(old_master)});
  // Mail sent to the service address lands on the master.
  RunResult swaks = Run({"/usr/bin/python3", "-c",
                         "import smtplib,sys\n"
                         "h,p=sys.argv[1].rsplit(':',1)\n"
                         "s=smtplib.LMTP(h,int(p))\n"
                         "r=s.sendmail('a@x','user0@x','Subject: t\\r\\nMessage-ID: <svc1@x>\\r\\n\\r\\nhi\\r\\n')\n"
                         "s.quit()\n",
                         service});
  INFO(swaks.out << swaks.err);
  CHECK(swaks.exit == 0);

  RunResult failover = c.Replctl({"failover", "1"});
  INFO(failover.out << failover.err);
  REQUIRE(failover.exit == 0);
  CHECK(WaitFor([&] { return absl::StrContains(Greeting(service), new_name); }, absl::Seconds(10),
                absl::Milliseconds(20)));
  CHECK(Listeners(service) == std::set<int>{c.PidOf(new_master)});
  // The API service address moved along.
  CHECK(WaitFor([&] { return Listeners(store.service_api()) == std::set<int>{c.PidOf(new_master)}; },
                absl::Seconds(10), absl::Milliseconds(20)));
}

// The lines the hook script of HooksScript() logged, in order.
std::vector<std::string> HookLines(const std::string& dir) {
  absl::StatusOr<std::string> log = ReadFile(dir + "/hooks.log");
  if (!log.ok()) return {};
  return absl::StrSplit(*log, '\n', absl::SkipEmpty());
}

// Index of the first line of `lines` that starts with `prefix`, or -1.
int LineStarting(const std::vector<std::string>& lines, const std::string& prefix) {
  for (size_t i = 0; i < lines.size(); ++i) {
    if (absl::StartsWith(lines[i], prefix)) return static_cast<int>(i);
  }
  return -1;
}

int CountStarting(const std::vector<std::string>& lines, const std::string& prefix) {
  int n = 0;
  for (const std::string& l : lines) n += absl::StartsWith(l, prefix) ? 1 : 0;
  return n;
}

TEST_CASE("promote and demote hooks run with store, slot and service addresses; a failing demote "
          "hook aborts the planned failover and the old master takes writes again",
          "[failover][hooks]") {
  TempDir hooks;
  const std::string script = hooks.Sub("hook");
  REQUIRE(WriteFileAtomically(
              script, absl::StrCat("#!/bin/sh\n"
                                   "echo \"$1 $2 $3 $4 $5 env=$MAILREPL_EVENT/$MAILREPL_STORE/"
                                   "$MAILREPL_SLOT\" >> ",
                                   hooks.path(), "/hooks.log\n"
                                   "if [ \"$1\" = demote ] && [ -e ", hooks.path(),
                                   "/fail-demote ]; then\n"
                                   "  echo 'cannot remove the address' >&2; exit 3\n"
                                   "fi\n"))
              .ok());
  REQUIRE(::chmod(script.c_str(), 0755) == 0);
  Cluster c({.net = "127.0.20",
             .hosts = 2,
             .slots_per_host = 1,
             .promote_hook = script,
             .demote_hook = script});
  const configpb::DevStore& store = c.store(1);
  const uint64_t m = store.master_slot_id();
  const uint64_t r = store.replica_slot_ids(0);
  const std::string addresses = absl::StrCat(store.service_lmtp(), " ", store.service_api());
  const std::string promoted_m = absl::StrCat("promote 1 ", m, " ", addresses, " env=promote/1/", m);
  const std::string demoted_m = absl::StrCat("demote 1 ", m, " ", addresses, " env=demote/1/", m);
  const std::string promoted_r = absl::StrCat("promote 1 ", r, " ", addresses, " env=promote/1/", r);
  const std::string demoted_r = absl::StrCat("demote 1 ", r, " ", addresses);
  REQUIRE(WaitFor([&] { return LineStarting(HookLines(hooks.path()), promoted_m) >= 0; },
                  absl::Seconds(10), absl::Milliseconds(20)));
  CHECK(LineStarting(HookLines(hooks.path()), absl::StrCat("promote 1 ", r)) < 0);

  // A planned failover: the old master's demote hook ends before the new
  // master's promote hook starts (the coordinator switches only then).
  RunResult failover = c.Replctl({"failover", "1"});
  INFO(failover.out << failover.err);
  REQUIRE(failover.exit == 0);
  REQUIRE(WaitFor([&] { return LineStarting(HookLines(hooks.path()), promoted_r) >= 0; },
                  absl::Seconds(10), absl::Milliseconds(20)));
  std::vector<std::string> lines = HookLines(hooks.path());
  INFO(absl::StrJoin(lines, "\n"));
  REQUIRE(LineStarting(lines, demoted_m) >= 0);
  CHECK(LineStarting(lines, demoted_m) < LineStarting(lines, promoted_r));

  // The demote hook fails now: the failover back is aborted, nothing changed.
  REQUIRE(WriteFileAtomically(hooks.Sub("fail-demote"), "").ok());
  RunResult back = c.Replctl({"failover", "1"});
  INFO(back.out << back.err);
  CHECK(back.exit != 0);
  CHECK(absl::StrContains(back.out + back.err, "could not be demoted"));
  CHECK(absl::StrContains(back.out + back.err, "exited 3"));
  auto status = c.Status();
  REQUIRE(status.ok());
  CHECK(status->stores(0).store().master_slot_id() == r);
  CHECK(!status->stores(0).store().fenced());
  CHECK(absl::StrContains(c.Replctl({"history"}).out, "failover_aborted"));
  // Unfenced, the master holds its addresses again (promote hook) and takes mail.
  CHECK(WaitFor([&] { return CountStarting(HookLines(hooks.path()), promoted_r) == 2; },
                absl::Seconds(10), absl::Milliseconds(20)));
  CHECK(CountStarting(HookLines(hooks.path()), demoted_r) == 1);
  CHECK(CountStarting(HookLines(hooks.path()), absl::StrCat("promote 1 ", m)) == 1);
  const auto after = c.Deliver(WorkloadEml(2000), 0, 10, 1, 10);
  INFO("not acknowledged:\n" << Cluster::NotAcked(after));
  CHECK(Cluster::Count(after, 250) == 10);
  c.CheckAckedOnEverySlot(after);
}

TEST_CASE("a drain under continuous LMTP load keeps every acknowledged message, and 4xx answers "
          "succeed when retried",
          "[failover]") {
  Cluster c({.net = "127.0.10", .hosts = 3, .slots_per_host = 2});
  REQUIRE(MastersPerHost(c)["host1"] > 0);
  const std::string record = c.dir() + "/record";
  auto delivery = c.StartDelivery(WorkloadEml(2000), 0, 1500, 4, 60, record);
  REQUIRE(WaitFor([&] { return c.MasterLsnSum() > 200; }, absl::Seconds(60),
                  absl::Milliseconds(20)));

  RunResult drain = c.Replctl({"drain", "host1"});
  INFO(drain.out << drain.err);
  REQUIRE(drain.exit == 0);
  CHECK(absl::StrContains(drain.out, "stores moved"));
  CHECK(MastersPerHost(c)["host1"] == 0);

  REQUIRE(delivery->Wait(absl::Seconds(240)).has_value());
  INFO(delivery->Stdout() << delivery->Stderr());
  const auto results = Cluster::ReadRecord(record);
  REQUIRE(results.size() == 1500);
  INFO("not acknowledged:\n" << Cluster::NotAcked(results));
  CHECK(Cluster::NearlyAllAcked(results));
  c.CheckAckedOnEverySlot(results);

  // Undrain moves the masters back, and mail goes on.
  RunResult undrain = c.Replctl({"undrain", "host1"});
  INFO(undrain.out << undrain.err);
  REQUIRE(undrain.exit == 0);
  CHECK(MastersPerHost(c)["host1"] > 0);
  const auto after = c.Deliver(WorkloadEml(2000), 1500, 200, 4, 30);
  INFO("not acknowledged:\n" << Cluster::NotAcked(after));
  CHECK(Cluster::Count(after, 250) == 200);
  c.CheckAckedOnEverySlot(after);

  // The history shows every switch.
  RunResult history = c.Replctl({"history"});
  CHECK(absl::StrContains(history.out, "failover_begin"));
  CHECK(absl::StrContains(history.out, "drain host1"));
  CHECK(absl::StrContains(history.out, "undrain host1"));
}

TEST_CASE("a planned failover that cannot finish rolls back: the old master takes writes again",
          "[failover]") {
  Cluster c({.net = "127.0.11", .hosts = 2, .slots_per_host = 1});
  const configpb::DevStore& store = c.store(1);
  const std::string replica_host = c.slot(store.replica_slot_ids(0)).host();
  // The replica stops applying, so it lacks what the master takes next.
  c.Signal(replica_host, SIGSTOP);
  const auto before = c.Deliver(WorkloadEml(2000), 0, 20, 1, 0);
  REQUIRE(Cluster::Count(before, 250) == 20);

  RunResult failover = c.Replctl({"failover", "1", "--timeout-ms", "1500"});
  INFO(failover.out << failover.err);
  CHECK(failover.exit != 0);
  auto status = c.Status();
  REQUIRE(status.ok());
  CHECK(status->stores(0).store().master_slot_id() == store.master_slot_id());
  CHECK(status->stores(0).store().epoch() == store.epoch());
  CHECK(!status->stores(0).store().fenced());
  RunResult history = c.Replctl({"history"});
  CHECK(absl::StrContains(history.out, "failover_aborted"));

  // The old master was unfenced: it takes mail again.
  c.Signal(replica_host, SIGCONT);
  const auto after = c.Deliver(WorkloadEml(2000), 20, 20, 1, 10);
  INFO("not acknowledged:\n" << Cluster::NotAcked(after));
  CHECK(Cluster::Count(after, 250) == 20);
  // And a failover now succeeds.
  RunResult again = c.Replctl({"failover", "1"});
  INFO(again.out << again.err);
  CHECK(again.exit == 0);
  auto status2 = c.Status();
  REQUIRE(status2.ok());
  CHECK(status2->stores(0).store().master_slot_id() == store.replica_slot_ids(0));
  CHECK(status2->stores(0).store().epoch() == store.epoch() + 1);
  std::map<int, Cluster::Outcome> all = before;
  all.insert(after.begin(), after.end());
  c.CheckAckedOnEverySlot(all);
}

}  // namespace
}  // namespace mailrepl::testing

namespace mailrepl::testing {
namespace {

TEST_CASE("many failovers under load: no acknowledged message is lost and every slot of a store "
          "ends with the same log history",
          "[failover]") {
  Cluster c({.net = "127.0.13", .hosts = 3, .slots_per_host = 2});
  const std::string record = c.dir() + "/record";
  auto delivery = c.StartDelivery(WorkloadEml(2000), 0, 1500, 4, 60, record);
  REQUIRE(WaitFor([&] { return c.MasterLsnSum() > 100; }, absl::Seconds(60),
                  absl::Milliseconds(20)));
  // Fail over stores in a fixed pseudo-random order while mail flows.
  const int stores = c.info().stores_size();
  uint64_t x = 12345;
  int switched = 0;
  for (int round = 0; round < 8; ++round) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    const uint64_t store = 1 + (x >> 33) % stores;
    RunResult f = c.Replctl({"failover", absl::StrCat(store)});
    INFO(f.out << f.err);
    CHECK(f.exit == 0);
    switched += f.exit == 0;
  }
  CHECK(switched == 8);
  REQUIRE(delivery->Wait(absl::Seconds(240)).has_value());
  const auto results = Cluster::ReadRecord(record);
  REQUIRE(results.size() == 1500);
  INFO("not acknowledged:\n" << Cluster::NotAcked(results));
  CHECK(Cluster::NearlyAllAcked(results));
  c.CheckAckedOnEverySlot(results);

  // The history shows one new epoch per switch, strictly increasing per store.
  auto history = c.Replctl({"history", "--json"});
  REQUIRE(history.exit == 0);
  CHECK(absl::StrContains(history.out, "\"kind\": \"failover\""));

  // Every slot of a store holds the same state: same last LSN, epoch and
  // digests (two writers at one epoch would have made them differ).
  RunResult down = Run({Bin("replctl"), "dev-cluster", "down", "--dir", c.dir()});
  REQUIRE(down.exit == 0);
  for (const auto& store : c.info().stores()) {
    std::string first;
    for (uint64_t slot : c.Members(store.store_id())) {
      RunResult d = Run({Bin("mailctl"), "--slot", c.slot(slot).data(), "digest"});
      REQUIRE(d.exit == 0);
      RunResult v = Run({Bin("mailctl"), "--slot", c.slot(slot).data(), "verify"});
      INFO(v.out << v.err);
      CHECK(v.exit == 0);
      if (first.empty()) first = d.out;
      std::string differs;  // the lines that differ, for the failure message
      std::vector<std::string> a = absl::StrSplit(first, '\n'), b = absl::StrSplit(d.out, '\n');
      for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
        const std::string x = i < a.size() ? a[i] : "", y = i < b.size() ? b[i] : "";
        // Where a slot's own log starts is local (a replica bootstrapped
        // from a snapshot starts later); everything else is replicated state.
        if (x != y && !absl::StartsWith(x, "log_start_lsn")) {
          absl::StrAppend(&differs, "  ", x, "  |  ", y, "\n");
        }
      }
      INFO("store " << store.store_id() << " slot " << slot << " differs:\n" << differs);
      CHECK(differs.empty());
    }
  }
}

}  // namespace
}  // namespace mailrepl::testing

namespace mailrepl::testing {
namespace {

TEST_CASE("promote after SIGKILL of a master's whole host, in sync durability, loses nothing "
          "acknowledged",
          "[failover]") {
  const int lease_ms = 1500;
  // Two replicas per store: with host1 gone every store keeps a replica,
  // so sync durability can acknowledge throughout.
  Cluster c({.net = "127.0.14", .hosts = 3, .slots_per_host = 2, .replicas = 2,
             .lease_ms = lease_ms, .durability = "sync"});
  const std::string record = c.dir() + "/record";
  auto delivery = c.StartDelivery(WorkloadEml(2000), 0, 600, 4, 90, record);
  REQUIRE(WaitFor([&] { return c.MasterLsnSum() > 150; }, absl::Seconds(60),
                  absl::Milliseconds(20)));
  std::vector<uint64_t> orphaned;  // stores mastered on host1
  {
    auto s = c.Status();
    REQUIRE(s.ok());
    for (const auto& st : s->stores()) {
      for (const auto& m : st.store().members()) {
        if (m.slot_id() == st.store().master_slot_id() && m.host() == "host1") {
          orphaned.push_back(st.store().store_id());
        }
      }
    }
  }
  REQUIRE(!orphaned.empty());
  c.Signal("host1", SIGKILL);
  // The coordinator must see host1 gone before it promotes.
  REQUIRE(WaitFor(
      [&] {
        auto s = c.Status();
        if (!s.ok()) return false;
        for (const auto& h : s->hosts()) {
          if (h.host() == "host1") return !h.alive();
        }
        return false;
      },
      absl::Seconds(30), absl::Milliseconds(50)));
  for (uint64_t store : orphaned) {
    RunResult p = c.Replctl({"promote", absl::StrCat(store), "--force"});
    INFO(p.out << p.err);
    CHECK(p.exit == 0);
  }
  REQUIRE(delivery->Wait(absl::Seconds(240)).has_value());
  const auto results = Cluster::ReadRecord(record);
  REQUIRE(results.size() == 600);
  INFO("not acknowledged:\n" << Cluster::NotAcked(results));
  CHECK(Cluster::NearlyAllAcked(results));
  // Every acknowledged message is on its store's current master.
  auto s = c.Status();
  REQUIRE(s.ok());
  std::map<uint64_t, uint64_t> master_of;
  for (const auto& st : s->stores()) master_of[st.store().store_id()] = st.store().master_slot_id();
  std::map<std::string, std::set<int>> by_user;
  for (const auto& [i, o] : results) {
    if (o.code == 250) by_user[o.user].insert(i);
  }
  for (const auto& [user, indexes] : by_user) {
    const uint64_t master = master_of[c.StoreOf(user)];
    CHECK(c.slot(master).host() != "host1");
    const std::set<int> held = c.IndexesOn(master, user);
    for (int i : indexes) {
      INFO("message " << i << " to " << user << " on slot " << master);
      CHECK(held.contains(i));
    }
  }
  RunResult history = c.Replctl({"history"});
  CHECK(absl::StrContains(history.out, "promote"));
}

}  // namespace
}  // namespace mailrepl::testing
