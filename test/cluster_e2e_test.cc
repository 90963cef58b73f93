// A real cluster end to end: `replctl dev-cluster up` starts coordinatord
// and one replicad per host on loopback addresses; real LMTP clients
// (smtplib.LMTP through tools/lmtp_deliver.py, and swaks) deliver; the
// tests kill, freeze and restart processes and check what was
// acknowledged against what the slots hold, through the client API.
#include <signal.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"
#include "test/cluster_harness.h"

namespace mailrepl::testing {
namespace {

TEST_CASE("every message smtplib.LMTP got a 250 for is on its store's master and replica",
          "[cluster]") {
  Cluster c({.net = "127.0.3"});
  std::string summary;
  const auto results = c.Deliver(WorkloadEml(2000), 0, 400, 4, 0, &summary);
  INFO(summary);
  REQUIRE(results.size() == 400);
  INFO("not acknowledged:\n" << Cluster::NotAcked(results));
  CHECK(Cluster::Count(results, 250) == 400);
  c.CheckAckedOnEverySlot(results);

  // The metrics show the replication figures of every master.
  const std::string metrics = c.Http("host1", "/metrics");
  CHECK(absl::StrContains(metrics, "mailrepl_replica_lag_records{"));
  CHECK(absl::StrContains(metrics, "mailrepl_slot_lsn{"));
  // The sum of a family's samples on host1.
  auto sum = [&metrics](absl::string_view family) {
    double total = 0;
    for (absl::string_view line : absl::StrSplit(metrics, '\n')) {
      if (!absl::StartsWith(line, absl::StrCat(family, "{"))) continue;
      double v = 0;
      if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) total += v;
    }
    return total;
  };
  // Bytes sent count the open sync connection too, not only closed ones.
  CHECK(sum("mailrepl_replica_sent_bytes_total") > 0);
  // Group commits: at least one, each of at least one record, and the
  // fdatasync time they took.
  const double commits = sum("mailrepl_slot_commits_total");
  CHECK(commits > 0);
  CHECK(sum("mailrepl_slot_committed_records_total") >= commits);
  CHECK(sum("mailrepl_slot_commit_sync_seconds_total") > 0);
  CHECK(absl::StrContains(c.Http("host1", "/health"), "coordinator connected"));
}

TEST_CASE("swaks delivers over LMTP; a replica, another store's slot and unknown users are refused",
          "[cluster]") {
  Cluster c({.net = "127.0.4"});
  const configpb::DevStore& store = c.store(c.StoreOf("user0"));
  const configpb::DevSlot& master = c.slot(store.master_slot_id());
  const configpb::DevSlot& replica = c.slot(store.replica_slot_ids(0));
  auto swaks = [](const configpb::DevSlot& slot, const std::string& to) {
    const std::string ip = slot.lmtp().substr(0, slot.lmtp().rfind(':'));
    const std::string port = slot.lmtp().substr(slot.lmtp().rfind(':') + 1);
    return Run({"/usr/bin/swaks", "--protocol", "LMTP", "--server", ip, "--port", port, "--to",
                to, "--from", "sender@example.test", "--body", "hello from swaks",
                "--timeout", "20"});
  };
  RunResult ok = swaks(master, "user0@example.test");
  INFO(ok.out);
  CHECK(ok.exit == 0);
  CHECK(absl::StrContains(ok.out, "<-  250 2.1.5"));

  RunResult on_replica = swaks(replica, "user0@example.test");
  INFO(on_replica.out);
  CHECK(absl::StrContains(on_replica.out, "451 4.3.0"));
  CHECK(absl::StrContains(on_replica.out, master.lmtp()));  // names the master

  std::string other_user;
  for (const auto& [user, s] : c.info().users()) {
    if (s != store.store_id()) other_user = user;
  }
  RunResult elsewhere = swaks(master, other_user + "@example.test");
  INFO(elsewhere.out);
  CHECK(absl::StrContains(elsewhere.out, "451 4.3.0"));

  RunResult unknown = swaks(master, "nosuchuser@example.test");
  INFO(unknown.out);
  CHECK(absl::StrContains(unknown.out, "550 5.1.1"));

  // The message swaks delivered reached the replica.
  REQUIRE(c.WaitCaughtUp(absl::Seconds(30)));
  apipb::Request list;
  list.mutable_list_messages()->set_mailbox("user/user0");
  auto on_master = c.Api(master.slot_id(), list);
  auto on_replica_api = c.Api(replica.slot_id(), list);
  REQUIRE(on_master.ok());
  REQUIRE(on_replica_api.ok());
  CHECK(on_master->messages_size() == 1);
  CHECK(on_replica_api->messages_size() == 1);
}

TEST_CASE("killing and restarting a replicad and the coordinator mid-delivery loses nothing "
          "acknowledged",
          "[cluster]") {
  Cluster c({.net = "127.0.5"});
  const std::string record = c.dir() + "/record";
  auto delivery = c.StartDelivery(WorkloadEml(2000), 0, 1200, 4, 120, record);
  auto lsn_sum = [&] { return c.MasterLsnSum(); };
  REQUIRE(WaitFor([&] { return lsn_sum() > 150; }, absl::Seconds(60), absl::Milliseconds(20)));
  c.Signal("host2", SIGKILL);
  c.Restart("host2");
  c.Signal("coordinator", SIGKILL);
  REQUIRE(WaitFor([&] { return lsn_sum() == 0; }, absl::Seconds(10)));  // it is gone
  c.Restart("coordinator");
  REQUIRE(delivery->Wait(absl::Seconds(240)).has_value());
  INFO(delivery->Stdout() << delivery->Stderr());
  const auto results = Cluster::ReadRecord(record);
  REQUIRE(results.size() == 1200);
  // With retries every message ends acknowledged; the test's point is
  // that each acknowledged one is stored on master and replica.
  INFO("not acknowledged:\n" << Cluster::NotAcked(results));
  CHECK(Cluster::NearlyAllAcked(results));
  c.CheckAckedOnEverySlot(results);
}

TEST_CASE("with the coordinator down, masters keep taking mail past the lease period",
          "[cluster]") {
  Cluster c({.net = "127.0.6", .lease_ms = 1500});
  c.Signal("coordinator", SIGKILL);
  // Wait until every host has heard nothing from the coordinator for
  // longer than the lease.
  for (const auto& h : c.info().hosts()) {
    REQUIRE(WaitFor(
        [&] {
          const std::string m = c.Http(h.name(), "/metrics");
          const size_t at = m.find("mailrepl_coordinator_silence_seconds{");
          if (at == std::string::npos) return false;
          const size_t value = m.find("} ", at);
          return std::stod(m.substr(value + 2)) > 2.0;
        },
        absl::Seconds(30), absl::Milliseconds(100)));
  }
  const auto results = c.Deliver(WorkloadEml(2000), 0, 200, 4, 0);
  INFO("not acknowledged:\n" << Cluster::NotAcked(results));
  CHECK(Cluster::Count(results, 250) == 200);
  // Replication goes on too (the check reads replicas through the API).
  std::map<std::string, std::set<int>> by_user;
  for (const auto& [i, o] : results) by_user[o.user].insert(i);
  for (const auto& [user, indexes] : by_user) {
    const configpb::DevStore& store = c.store(c.StoreOf(user));
    CHECK(WaitFor([&] { return c.IndexesOn(store.replica_slot_ids(0), user) == indexes; },
                  absl::Seconds(30), absl::Milliseconds(50)));
  }
}

TEST_CASE("a master cut off from the coordinator and its replicas fences itself within the lease",
          "[cluster]") {
  const int lease_ms = 2000;
  Cluster c({.net = "127.0.7", .hosts = 2, .slots_per_host = 1, .lease_ms = lease_ms});
  const configpb::DevStore& store = c.store(1);
  apipb::Request get_slot;
  get_slot.mutable_get_slot();
  auto takes_writes = [&] {
    auto r = c.Api(store.master_slot_id(), get_slot);
    return r.ok() && r->slot().master();
  };
  REQUIRE(takes_writes());
  const std::string replica_host = c.slot(store.replica_slot_ids(0)).host();
  const absl::Time cut = absl::Now();
  c.Signal("coordinator", SIGSTOP);
  c.Signal(replica_host, SIGSTOP);
  REQUIRE(WaitFor([&] { return !takes_writes(); }, absl::Milliseconds(lease_ms * 3),
                  absl::Milliseconds(20)));
  const absl::Duration fenced_after = absl::Now() - cut;
  INFO("fenced after " << absl::FormatDuration(fenced_after));
  CHECK(fenced_after <= absl::Milliseconds(lease_ms + 1500));
  // LMTP answers 4xx now, never 250.
  const auto refused = c.Deliver(WorkloadEml(2000), 0, 5, 1, 0);
  for (const auto& [i, o] : refused) {
    if (c.StoreOf(o.user) == store.store_id()) CHECK(o.code == 451);
  }
  // The replica comes back: the master hears from it and takes writes again.
  c.Signal(replica_host, SIGCONT);
  CHECK(WaitFor(takes_writes, absl::Seconds(20), absl::Milliseconds(20)));
  c.Signal("coordinator", SIGCONT);
}

TEST_CASE("client API writes with a stale epoch, or on a replica, are refused", "[cluster]") {
  Cluster c({.net = "127.0.8", .hosts = 2, .slots_per_host = 1});
  const configpb::DevStore& store = c.store(1);
  apipb::Request get_slot;
  get_slot.mutable_get_slot();
  auto state = c.Api(store.master_slot_id(), get_slot);
  REQUIRE(state.ok());
  const uint64_t epoch = state->slot().epoch();
  REQUIRE(epoch >= 1);
  auto create = [&](uint64_t slot, uint64_t e, const std::string& name) {
    apipb::Request r;
    r.set_epoch(e);
    r.mutable_create_mailbox()->set_name(name);
    return c.Api(slot, r);
  };
  CHECK(absl::IsFailedPrecondition(create(store.master_slot_id(), 0, "user/a").status()));
  auto stale = create(store.master_slot_id(), epoch + 5, "user/a");
  CHECK(absl::IsFailedPrecondition(stale.status()));
  CHECK(absl::StrContains(stale.status().message(), "stale epoch"));
  CHECK(absl::IsFailedPrecondition(
      create(store.replica_slot_ids(0), epoch, "user/a").status()));
  auto ok = create(store.master_slot_id(), epoch, "user/a");
  REQUIRE(ok.ok());
  // Only the accepted write reached the replica.
  REQUIRE(c.WaitCaughtUp(absl::Seconds(30)));
  apipb::Request list;
  list.mutable_list_mailboxes()->set_prefix("user/a");
  auto listed = c.Api(store.replica_slot_ids(0), list);
  REQUIRE(listed.ok());
  CHECK(listed->mailboxes_size() == 1);
}

TEST_CASE("SIGTERM stops a replicad cleanly mid-delivery, and every 250 it gave is kept",
          "[cluster]") {
  Cluster c({.net = "127.0.12", .hosts = 2, .slots_per_host = 2});
  // Run host1 as the test's own child, to see its exit status.
  c.Signal("host1", SIGKILL);
  c.Restart("host1");
  REQUIRE(c.WaitCaughtUp(absl::Seconds(30)));
  const std::string record = c.dir() + "/record";
  auto delivery = c.StartDelivery(WorkloadEml(2000), 0, 600, 4, 60, record);
  REQUIRE(WaitFor([&] { return c.MasterLsnSum() > 200; }, absl::Seconds(60),
                  absl::Milliseconds(20)));
  REQUIRE(c.StopRestarted("host1", SIGTERM, absl::Seconds(15)) == 0);  // exits 0
  c.Restart("host1");
  REQUIRE(delivery->Wait(absl::Seconds(240)).has_value());
  const auto results = Cluster::ReadRecord(record);
  REQUIRE(results.size() == 600);
  INFO("not acknowledged:\n" << Cluster::NotAcked(results));
  CHECK(Cluster::NearlyAllAcked(results));
  c.CheckAckedOnEverySlot(results);
}

}  // namespace
}  // namespace mailrepl::testing
