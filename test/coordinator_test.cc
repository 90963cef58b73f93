// The coordinator: the Coordinator state machine on a real SQLite file in a
// temporary directory (with a fake clock for leases and liveness), the
// CoordinatorService long poll in-process, and the real `coordinatord`
// binary end to end over loopback with rpc::CallOnce.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "asio.hpp"
#include "catch2/catch.hpp"
#include "common/sqlite.h"
#include "coordinator/coordinator.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/promote.h"
#include "coordinator/schema.h"
#include "proto/coord.pb.h"
#include "proto/rpc.pb.h"
#include "rpc/rpc_client.h"
#include "test/coord_requests.h"
#include "test/process_util.h"
#include "test/test_util.h"

namespace mailrepl::coord {
namespace {

using testing::Process;
using testing::TempDir;
using testing::WaitFor;

constexpr int64_t kStart = 1'800'000'000'000;  // Unix ms

coordpb::Heartbeat Beat(const std::string& host, uint64_t known_version = 0,
                        uint64_t known_directory = 0) {
  coordpb::Heartbeat h;
  h.set_host(host);
  h.set_known_version(known_version);
  h.set_known_directory_version(known_directory);
  return h;
}

// A master's report: one replica at acked_lsn.
coordpb::SlotStatus MasterStatus(uint64_t slot, uint64_t last_lsn, uint64_t replica,
                                 uint64_t acked_lsn, bool connected = true,
                                 double lag_seconds = 0) {
  coordpb::SlotStatus s;
  s.set_slot_id(slot);
  s.set_role(coordpb::MASTER);
  s.set_epoch(1);
  s.set_last_lsn(last_lsn);
  coordpb::ReplicaProgress* p = s.add_replicas();
  p->set_slot_id(replica);
  p->set_acked_lsn(acked_lsn);
  p->set_connected(connected);
  p->set_lag_seconds(lag_seconds);
  return s;
}

// A Coordinator on a file in a fresh directory, with clocks the test moves:
// `now` is the decision clock (CoordinatorOptions::now_ms, monotonic in
// coordinatord), the wall clock reads now + wall_step_ms (a step of the
// wall clock moves only the latter).
class Fixture {
 public:
  // vouch_grace_ms 0: a forced promotion never waits longer for replicas
  // that did not learn its epoch than for the lease (most cases here).
  explicit Fixture(uint32_t lease_ms = 6000, uint32_t vouch_grace_ms = 0)
      : lease_ms_(lease_ms), vouch_grace_ms_(vouch_grace_ms) {
    Open();
  }

  void Open() {
    coordinator_.reset();
    auto c = Coordinator::Open(path(), {.cluster_id = "test", .lease_ms = lease_ms_,
                                        .now_ms = [this] { return now; },
                                        .wall_ms = [this] { return now + wall_step_ms; },
                                        .vouch_grace_ms = vouch_grace_ms_});
    INFO(c.status().ToString());
    REQUIRE(c.ok());
    coordinator_ = std::move(c).value();
  }
  void Close() { coordinator_.reset(); }

  std::string path() const { return dir_.Sub("coord.db"); }
  Coordinator& c() { return *coordinator_; }

  // h1: slots 1, 2; h2: slots 3, 4; h3: slots 5, 6.
  void RegisterThreeHosts() {
    REQUIRE(c().RegisterHost(Host("h1", {1, 2})).ok());
    REQUIRE(c().RegisterHost(Host("h2", {3, 4})).ok());
    REQUIRE(c().RegisterHost(Host("h3", {5, 6})).ok());
  }

  std::vector<coordpb::Event> Events(uint64_t store_id = 0) {
    coordpb::GetHistory h;
    h.set_store_id(store_id);
    auto r = c().GetHistory(h);
    REQUIRE(r.ok());
    return {r->events().begin(), r->events().end()};
  }

  coordpb::StoreStatus StoreState(uint64_t store_id) {
    auto r = c().GetStatus({});
    REQUIRE(r.ok());
    for (const auto& s : r->stores()) {
      if (s.store().store_id() == store_id) return s;
    }
    FAIL("no store " << store_id);
    return {};
  }

  int64_t now = kStart;
  int64_t wall_step_ms = 0;

 private:
  TempDir dir_;
  uint32_t lease_ms_;
  uint32_t vouch_grace_ms_;
  std::unique_ptr<Coordinator> coordinator_;
};

// --- schema ---

TEST_CASE("a new database is migrated to the current schema version with one cluster row",
          "[coordinator]") {
  Fixture f;
  CHECK(f.c().cluster_id() == "test");
  CHECK(f.c().lease_ms() == 6000);
  CHECK(f.c().versions() == Versions{1, 1});
  f.Close();
  auto db = sqlite::Database::Open(f.path(), true);
  REQUIRE(db.ok());
  CHECK(SchemaVersion(**db).value() == CurrentSchemaVersion());
  CHECK(CurrentSchemaVersion() >= 1);
}

TEST_CASE("a database with a newer schema version is refused, naming the file",
          "[coordinator]") {
  TempDir dir;
  const std::string path = dir.Sub("coord.db");
  REQUIRE(Coordinator::Open(path, {}).ok());
  {
    auto db = sqlite::Database::Open(path, true);
    REQUIRE(db.ok());
    REQUIRE((*db)->Exec(absl::StrCat("PRAGMA user_version = ", CurrentSchemaVersion() + 1)).ok());
  }
  auto c = Coordinator::Open(path, {});
  REQUIRE(absl::IsFailedPrecondition(c.status()));
  CHECK(absl::StrContains(c.status().message(), path));
  CHECK(absl::StrContains(c.status().message(), "newer"));
  // Untouched: still the newer version.
  auto db = sqlite::Database::Open(path, true);
  REQUIRE(db.ok());
  CHECK(SchemaVersion(**db).value() == CurrentSchemaVersion() + 1);
}

TEST_CASE("an SQLite file of something else is refused", "[coordinator]") {
  TempDir dir;
  const std::string path = dir.Sub("other.db");
  {
    auto db = sqlite::Database::Open(path, true);
    REQUIRE(db.ok());
    REQUIRE((*db)->Exec("CREATE TABLE mail (x)").ok());
  }
  auto c = Coordinator::Open(path, {});
  REQUIRE(absl::IsFailedPrecondition(c.status()));
  CHECK(absl::StrContains(c.status().message(), path));
}

TEST_CASE("a second coordinator on the same database is refused", "[coordinator]") {
  Fixture f;
  auto second = Coordinator::Open(f.path(), {});
  REQUIRE(absl::IsFailedPrecondition(second.status()));
  CHECK(absl::StrContains(second.status().message(), "another coordinatord"));
}

TEST_CASE("a database of another cluster is refused", "[coordinator]") {
  Fixture f;
  f.Close();
  auto c = Coordinator::Open(f.path(), {.cluster_id = "other"});
  REQUIRE(absl::IsFailedPrecondition(c.status()));
  CHECK(absl::StrContains(c.status().message(), "'test'"));
}

// --- hosts and stores ---

TEST_CASE("a slot id owned by another host is refused, naming both hosts", "[coordinator]") {
  Fixture f;
  REQUIRE(f.c().RegisterHost(Host("h1", {1, 2})).ok());
  const Versions before = f.c().versions();
  auto r = f.c().RegisterHost(Host("h2", {3, 2}));
  REQUIRE(absl::IsFailedPrecondition(r.status()));
  CHECK(absl::StrContains(r.status().message(), "h1"));
  CHECK(absl::StrContains(r.status().message(), "h2"));
  CHECK(absl::StrContains(r.status().message(), "slot 2"));
  // Nothing changed: h2 and its slot 3 were not recorded.
  CHECK(f.c().versions() == before);
  auto status = f.c().GetStatus({});
  REQUIRE(status.ok());
  REQUIRE(status->hosts_size() == 1);
  CHECK(status->hosts(0).host() == "h1");
}

TEST_CASE("registering a host returns its slots, all idle, and the whole directory",
          "[coordinator]") {
  Fixture f;
  auto r = f.c().RegisterHost(Host("h1", {2, 1}));
  REQUIRE(r.ok());
  const coordpb::Assignments& a = r->assignments();
  CHECK(a.cluster_id() == "test");
  CHECK(a.lease_ms() == 6000);
  CHECK(a.version() == 2);
  CHECK(a.users_included());
  REQUIRE(a.slots_size() == 2);
  CHECK(a.slots(0).slot_id() == 1);
  CHECK(a.slots(0).role() == coordpb::ROLE_NONE);
  CHECK_FALSE(a.slots(0).has_store());
  // Registering again unchanged does not change the topology.
  REQUIRE(f.c().RegisterHost(Host("h1", {1, 2})).ok());
  CHECK(f.c().versions().topology == 2);
  // A changed address does.
  coordpb::RegisterHost changed = Host("h1", {1, 2});
  changed.mutable_slots(0)->set_lmtp_address("10.9.9.9:24");
  REQUIRE(f.c().RegisterHost(changed).ok());
  CHECK(f.c().versions().topology == 3);
}

TEST_CASE("a new store starts at epoch 1 with the first slot as master", "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  auto r = f.c().CreateStore(Store({3, 1, 5}));
  REQUIRE(r.ok());
  const coordpb::StoreInfo& s = r->store();
  CHECK(s.store_id() == 1);
  CHECK(s.epoch() == 1);
  CHECK(s.master_slot_id() == 3);
  CHECK_FALSE(s.fenced());
  CHECK(s.durability() == coordpb::ASYNC);
  REQUIRE(s.members_size() == 3);
  CHECK(s.members(0).slot_id() == 3);
  CHECK(s.members(0).host() == "h2");
  CHECK(s.members(0).lmtp_address() == "10.0.0.3:24");

  // The next one gets the next id; an explicit master is honoured.
  coordpb::CreateStore second = Store({2, 4});
  second.set_master_slot_id(4);
  second.set_durability(coordpb::SYNC);
  auto r2 = f.c().CreateStore(second);
  REQUIRE(r2.ok());
  CHECK(r2->store().store_id() == 2);
  CHECK(r2->store().master_slot_id() == 4);
  CHECK(r2->store().durability() == coordpb::SYNC);

  // Host h1's assignments: slot 1 replica of store 1, slot 2 replica of store 2.
  auto a = f.c().HeartbeatAnswer("h1", 0, 0);
  REQUIRE(a.ok());
  REQUIRE(a->assignments().slots_size() == 2);
  CHECK(a->assignments().slots(0).role() == coordpb::REPLICA);
  CHECK(a->assignments().slots(0).store().store_id() == 1);
  CHECK(a->assignments().slots(1).role() == coordpb::REPLICA);
  CHECK(a->assignments().slots(1).store().store_id() == 2);
  auto b = f.c().HeartbeatAnswer("h2", 0, 0);
  REQUIRE(b.ok());
  CHECK(b->assignments().slots(0).role() == coordpb::MASTER);   // slot 3
  CHECK(b->assignments().slots(1).role() == coordpb::MASTER);   // slot 4
  auto c = f.c().HeartbeatAnswer("h3", 0, 0);
  REQUIRE(c.ok());
  CHECK(c->assignments().slots(0).role() == coordpb::REPLICA);  // slot 5
  CHECK(c->assignments().slots(1).role() == coordpb::ROLE_NONE);  // slot 6
}

TEST_CASE("a store cannot have two slots on one host", "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  const Versions before = f.c().versions();
  auto r = f.c().CreateStore(Store({1, 3, 2}));
  REQUIRE(absl::IsFailedPrecondition(r.status()));
  CHECK(absl::StrContains(r.status().message(), "h1"));
  CHECK(absl::StrContains(r.status().message(), "different hosts"));
  CHECK(f.c().versions() == before);
  CHECK(f.c().GetStatus({})->stores_size() == 0);
}

TEST_CASE("a store needs at least two slots", "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  CHECK(absl::IsInvalidArgument(f.c().CreateStore(Store({1})).status()));
  CHECK(absl::IsInvalidArgument(f.c().CreateStore(Store({})).status()));
  CHECK(absl::IsInvalidArgument(f.c().CreateStore(Store({1, 1})).status()));
  CHECK(f.c().GetStatus({})->stores_size() == 0);
}

TEST_CASE("a store refuses an unknown slot and a master that is not a member",
          "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  auto unknown = f.c().CreateStore(Store({1, 99}));
  REQUIRE(absl::IsNotFound(unknown.status()));
  CHECK(absl::StrContains(unknown.status().message(), "slot 99"));
  coordpb::CreateStore bad_master = Store({1, 3});
  bad_master.set_master_slot_id(5);
  CHECK(absl::IsInvalidArgument(f.c().CreateStore(bad_master).status()));
  CHECK(f.c().GetStatus({})->stores_size() == 0);
}

TEST_CASE("a slot belongs to at most one store", "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  auto r = f.c().CreateStore(Store({5, 3}));
  REQUIRE(absl::IsFailedPrecondition(r.status()));
  CHECK(absl::StrContains(r.status().message(), "slot 3 is already in store 1"));
  auto dup = f.c().CreateStore(Store({2, 4}, 1));
  CHECK(absl::IsAlreadyExists(dup.status()));
  CHECK(f.c().GetStatus({})->stores_size() == 1);
}

// --- users ---

TEST_CASE("assigning users moves them between stores and records both sides",
          "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  REQUIRE(f.c().CreateStore(Store({2, 5})).ok());
  const uint64_t dir0 = f.c().versions().directory;
  auto r = f.c().AssignUsers(Users({"alice", "bob", "carol.x_y-z"}, 1));
  REQUIRE(r.ok());
  CHECK(r->assigned() == 3);
  CHECK(f.c().versions().directory == dir0 + 1);
  auto moved = f.c().AssignUsers(Users({"bob", "dave"}, 2));
  REQUIRE(moved.ok());
  CHECK(f.c().versions().directory == dir0 + 2);

  auto bob = f.c().LookupUser([] { coordpb::LookupUser l; l.set_user("bob"); return l; }());
  REQUIRE(bob.ok());
  CHECK(bob->found());
  CHECK(bob->store_id() == 2);
  CHECK(bob->epoch() == 1);
  CHECK(bob->master().slot_id() == 2);
  CHECK(bob->master().host() == "h1");
  CHECK(f.StoreState(1).users() == 2);
  CHECK(f.StoreState(2).users() == 2);

  // Events on both stores.
  auto to2 = f.Events(2);
  REQUIRE_FALSE(to2.empty());
  CHECK(to2.back().kind() == "assign_users");
  CHECK(absl::StrContains(to2.back().detail(), "moved from store 1: bob"));
  auto from1 = f.Events(1);
  CHECK(from1.back().kind() == "move_users_out");
  CHECK(absl::StrContains(from1.back().detail(), "bob"));

  // Assigning users where they already are changes nothing.
  const size_t events = f.Events().size();
  REQUIRE(f.c().AssignUsers(Users({"alice"}, 1)).ok());
  CHECK(f.c().versions().directory == dir0 + 2);
  CHECK(f.Events().size() == events);
}

TEST_CASE("a bad user name is refused and nothing is assigned", "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  const Versions before = f.c().versions();
  const size_t events = f.Events().size();
  const std::vector<std::string> bad_names = {
      "Alice", "bob+x", "a/b", "..", ".hidden", "", "eve@example.com", std::string(65, 'a'),
      std::string("nul\0x", 5), "sp ace"};
  for (const std::string& bad : bad_names) {
    INFO(bad);
    auto r = f.c().AssignUsers(Users({"good", bad}, 1));
    REQUIRE(absl::IsInvalidArgument(r.status()));
    CHECK(absl::StrContains(r.status().message(), "user name"));
  }
  CHECK(absl::IsNotFound(f.c().AssignUsers(Users({"good"}, 7)).status()));
  CHECK(f.c().versions() == before);
  CHECK(f.Events().size() == events);
  coordpb::LookupUser l;
  l.set_user("good");
  CHECK_FALSE(f.c().LookupUser(l)->found());
  CHECK(f.c().AssignUsers(Users({std::string(64, 'a')}, 1)).ok());
}

// Whether a status message can travel in the RPC Reply (a proto3 string:
// the client's parser refuses one that is not UTF-8).
bool ReachesTheClient(absl::string_view message) {
  rpcpb::Reply sent;
  sent.set_message(std::string(message));
  rpcpb::Reply got;
  return got.ParseFromString(sent.SerializeAsString()) && got.message() == message;
}

TEST_CASE("a refusal quoting a long user or host name of multi-byte characters reaches the "
          "client",
          "[coordinator]") {
  // Such refusals showed the first 20 (user) or 40 (host) bytes of the
  // name: cut through a UTF-8 character, the Reply was not valid and the
  // client failed to parse it (found by test/fuzz/rpc_fuzzer).
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  auto accents = [](std::string s, size_t n) {
    while (n-- > 0) s += "\xc3\xa9";  // e-acute, two bytes
    return s;
  };
  for (const char* start : {"a", "ab"}) {
    const std::string user = accents(start, 40);
    INFO(absl::CEscape(user));
    auto assigned = f.c().AssignUsers(Users({user}, 1));
    REQUIRE(absl::IsInvalidArgument(assigned.status()));
    CHECK(absl::StrContains(assigned.status().message(), "bytes long"));
    CHECK(ReachesTheClient(assigned.status().message()));
    coordpb::LookupUser l;
    l.set_user(user + "@example.com");
    auto looked_up = f.c().LookupUser(l);
    REQUIRE(absl::IsInvalidArgument(looked_up.status()));
    CHECK(ReachesTheClient(looked_up.status().message()));
    auto registered = f.c().RegisterHost(Host(accents(start, 130), {9}));
    REQUIRE(absl::IsInvalidArgument(registered.status()));
    CHECK(absl::StrContains(registered.status().message(), "longer than 255 bytes"));
    CHECK(ReachesTheClient(registered.status().message()));
  }
}

TEST_CASE("the argument checks that need no database refuse what the calls refuse",
          "[coordinator]") {
  // CheckRequestArguments (the checks each call makes before its
  // transaction, for the RPC fuzzer) against the calls themselves.
  Fixture f;
  f.RegisterThreeHosts();
  std::vector<coordpb::Request> bad(8);
  *bad[0].mutable_register_host() = Host("", {7});
  *bad[1].mutable_register_host() = Host("h4", {7, 7});
  bad[2].mutable_lookup_user()->set_user("a/b");
  *bad[3].mutable_create_store() = Store({1});
  *bad[4].mutable_create_store() = Store({1, 3});
  bad[4].mutable_create_store()->set_master_slot_id(5);
  *bad[5].mutable_assign_users() = Users({"good", "Bad"}, 1);
  bad[6].mutable_set_durability()->set_durability(static_cast<coordpb::Durability>(9));
  bad[7].mutable_record_salvage()->set_slot_id(1);  // no LSN range
  for (const coordpb::Request& r : bad) {
    INFO(r.ShortDebugString());
    const absl::Status pure = CheckRequestArguments(r);
    CHECK(absl::IsInvalidArgument(pure));
    absl::Status call;
    switch (r.op_case()) {
      case coordpb::Request::kRegisterHost:
        call = f.c().RegisterHost(r.register_host()).status();
        break;
      case coordpb::Request::kLookupUser:
        call = f.c().LookupUser(r.lookup_user()).status();
        break;
      case coordpb::Request::kCreateStore:
        call = f.c().CreateStore(r.create_store()).status();
        break;
      case coordpb::Request::kAssignUsers:
        call = f.c().AssignUsers(r.assign_users()).status();
        break;
      case coordpb::Request::kSetDurability:
        call = f.c().SetDurability(r.set_durability()).status();
        break;
      case coordpb::Request::kRecordSalvage:
        call = f.c().RecordSalvage(r.record_salvage()).status();
        break;
      default:
        FAIL("unexpected op");
    }
    CHECK(call == pure);
  }
  coordpb::Request good;
  *good.mutable_register_host() = Host("h4", {7, 8});
  CHECK(CheckRequestArguments(good).ok());
  CHECK(CheckRequestArguments(coordpb::Request()).ok());  // nothing to check: Dispatch refuses it
}

TEST_CASE("lookup accepts user, user+folder and user@domain in any case", "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  REQUIRE(f.c().AssignUsers(Users({"alice"}, 1)).ok());
  for (const char* name : {"alice", "alice+lists", "Alice@Example.COM", "ALICE+x@example.com"}) {
    INFO(name);
    coordpb::LookupUser l;
    l.set_user(name);
    auto r = f.c().LookupUser(l);
    REQUIRE(r.ok());
    CHECK(r->found());
    CHECK(r->store_id() == 1);
    CHECK(r->master().slot_id() == 1);
  }
  coordpb::LookupUser missing;
  missing.set_user("nobody@example.com");
  auto r = f.c().LookupUser(missing);
  REQUIRE(r.ok());
  CHECK_FALSE(r->found());
  coordpb::LookupUser bad;
  bad.set_user("a/b@example.com");
  CHECK(absl::IsInvalidArgument(f.c().LookupUser(bad).status()));
  CHECK(NormalizeUser("Bob+Folder@Domain") == "bob");
}

// --- heartbeats, leases, state ---

TEST_CASE("a heartbeat from an unregistered host is refused", "[coordinator]") {
  Fixture f;
  REQUIRE(f.c().RegisterHost(Host("h1", {1})).ok());
  REQUIRE(f.c().RegisterHost(Host("h2", {3})).ok());
  CHECK(absl::IsNotFound(f.c().Heartbeat(Beat("nobody")).status()));
  // A status for a slot of another host is refused too, and not recorded.
  coordpb::Heartbeat wrong = Beat("h1");
  *wrong.add_slots() = MasterStatus(3, 10, 1, 10);
  auto r = f.c().Heartbeat(wrong);
  REQUIRE(absl::IsNotFound(r.status()));
  CHECK(absl::StrContains(r.status().message(), "h2"));
}

TEST_CASE("a heartbeat renews the leases of the stores mastered on its host",
          "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());   // master on h1
  REQUIRE(f.c().CreateStore(Store({4, 2})).ok());   // master on h2
  CHECK(f.StoreState(1).lease_expires_ms() == 0);   // no heartbeat since
  f.now += 1000;
  REQUIRE(f.c().Heartbeat(Beat("h1")).ok());
  CHECK(f.StoreState(1).lease_expires_ms() == f.now + 6000);
  CHECK(f.StoreState(2).lease_expires_ms() == 0);   // h2 did not beat
  f.now += 2000;
  REQUIRE(f.c().RegisterHost(Host("h2", {3, 4})).ok());  // registering renews too
  CHECK(f.StoreState(2).lease_expires_ms() == f.now + 6000);
  CHECK(f.StoreState(1).lease_expires_ms() == f.now - 2000 + 6000);
  // Leases are not topology: the version did not move.
  const Versions v = f.c().versions();
  f.now += 10;
  REQUIRE(f.c().Heartbeat(Beat("h1", v.topology, v.directory)).ok());
  CHECK(f.c().versions() == v);
}

TEST_CASE("status shows times on the wall clock while liveness and leases follow the "
          "monotonic clock",
          "[coordinator][clock]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  REQUIRE(f.c().Heartbeat(Beat("h1")).ok());
  const int64_t beat = f.now;
  // The wall clock steps an hour ahead: nothing expires, nothing dies.
  f.wall_step_ms = 3'600'000;
  f.now += 5000;
  auto r = f.c().GetStatus({});
  REQUIRE(r.ok());
  CHECK(r->answered_ms() == f.now + f.wall_step_ms);
  REQUIRE(r->hosts(0).host() == "h1");
  CHECK(r->hosts(0).alive());
  // Shown as Unix ms on the wall clock at the moment of answering.
  CHECK(r->hosts(0).last_heartbeat_ms() == beat + f.wall_step_ms);
  CHECK(r->stores(0).lease_expires_ms() == beat + 6000 + f.wall_step_ms);
  CHECK(r->stores(0).state() != "down");
  // The history keeps the wall clock.
  REQUIRE(f.c().Heartbeat(Beat("h2")).ok());
  REQUIRE(f.c().RegisterHost(Host("h2", {3, 4})).ok());
  CHECK(f.Events().back().time_ms() == f.now + f.wall_step_ms);
  // The monotonic clock alone decides: h1 dies one lease period after it beat.
  f.now = beat + 6001;
  CHECK_FALSE(f.c().GetStatus({})->hosts(0).alive());
  CHECK(f.StoreState(1).state() == "down");
}

TEST_CASE("a heartbeat reply carries slots only when the topology changed and users only "
          "when the directory changed",
          "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  Versions v = f.c().versions();
  auto same = f.c().Heartbeat(Beat("h1", v.topology, v.directory));
  REQUIRE(same.ok());
  CHECK_FALSE(same->changed());
  CHECK(same->assignments().slots_size() == 0);
  CHECK_FALSE(same->assignments().users_included());
  CHECK(same->assignments().version() == v.topology);
  CHECK(same->assignments().directory_version() == v.directory);
  CHECK(same->assignments().lease_ms() == 6000);
  CHECK(same->assignments().cluster_id() == "test");

  REQUIRE(f.c().AssignUsers(Users({"alice"}, 1)).ok());
  auto dir = f.c().Heartbeat(Beat("h1", v.topology, v.directory));
  REQUIRE(dir.ok());
  CHECK_FALSE(dir->changed());
  CHECK(dir->assignments().slots_size() == 0);
  CHECK(dir->assignments().users_included());
  REQUIRE(dir->assignments().users_size() == 1);
  CHECK(dir->assignments().users(0).user() == "alice");

  v = f.c().versions();
  coordpb::SetDurability d;
  d.set_store_id(1);
  d.set_durability(coordpb::SYNC);
  REQUIRE(f.c().SetDurability(d).ok());
  auto topo = f.c().Heartbeat(Beat("h1", v.topology, v.directory));
  REQUIRE(topo.ok());
  CHECK(topo->changed());
  CHECK_FALSE(topo->assignments().users_included());
  REQUIRE(topo->assignments().slots_size() == 2);
  CHECK(topo->assignments().slots(0).store().durability() == coordpb::SYNC);
}

TEST_CASE("status shows which roles and users each host's last heartbeat said it holds",
          "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  const Versions before = f.c().versions();
  REQUIRE(f.c().Heartbeat(Beat("h1", before.topology, before.directory)).ok());
  REQUIRE(f.c().AssignUsers(Users({"alice"}, 1)).ok());
  REQUIRE(f.c().Heartbeat(Beat("h2", before.topology, before.directory)).ok());
  const Versions now = f.c().versions();
  REQUIRE(now.directory == before.directory + 1);
  REQUIRE(f.c().Heartbeat(Beat("h2", now.topology, now.directory)).ok());
  auto status = f.c().GetStatus({});
  REQUIRE(status.ok());
  CHECK(status->version() == now.topology);
  CHECK(status->directory_version() == now.directory);
  std::map<std::string, std::pair<uint64_t, uint64_t>> known;
  for (const auto& h : status->hosts()) {
    known[h.host()] = {h.known_version(), h.known_directory_version()};
  }
  CHECK(known["h1"] == std::pair(before.topology, before.directory));  // behind on users
  CHECK(known["h2"] == std::pair(now.topology, now.directory));        // current
  CHECK(known["h3"] == std::pair<uint64_t, uint64_t>(0, 0));            // never beat
}

TEST_CASE("store state is ok, lagging, fenced or down from the hosts' reports",
          "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());  // master slot 1 on h1, replica 3 on h2
  auto beat = [&](const std::string& host, std::optional<coordpb::SlotStatus> s) {
    coordpb::Heartbeat h = Beat(host);
    if (s) *h.add_slots() = *s;
    auto r = f.c().Heartbeat(h);
    INFO(r.status().ToString());
    REQUIRE(r.ok());
  };
  beat("h2", std::nullopt);
  beat("h1", MasterStatus(1, 5000, 3, 4500));
  CHECK(f.StoreState(1).state() == "ok");
  CHECK(f.StoreState(1).lag_records() == 500);
  CHECK(f.StoreState(1).slots_size() == 1);

  beat("h1", MasterStatus(1, 5000, 3, 3999));
  CHECK(f.StoreState(1).state() == "lagging");
  CHECK(f.StoreState(1).lag_records() == 1001);

  beat("h1", MasterStatus(1, 5000, 3, 5000, true, 5.5));
  CHECK(f.StoreState(1).state() == "lagging");
  CHECK(f.StoreState(1).lag_seconds() == 5.5);

  beat("h1", MasterStatus(1, 5000, 3, 5000, /*connected=*/false));
  CHECK(f.StoreState(1).state() == "lagging");

  coordpb::SlotStatus fenced = MasterStatus(1, 5000, 3, 5000);
  fenced.set_fenced(true);
  beat("h1", fenced);
  CHECK(f.StoreState(1).state() == "fenced");

  beat("h1", MasterStatus(1, 5000, 3, 5000));
  CHECK(f.StoreState(1).state() == "ok");

  // The replica's host stops heartbeating: lagging.
  f.now += 4000;
  beat("h1", MasterStatus(1, 5000, 3, 5000));
  f.now += 3000;  // h2 last heard 7 s ago, h1 3 s ago; lease 6 s
  beat("h1", MasterStatus(1, 5000, 3, 5000));
  CHECK(f.StoreState(1).state() == "lagging");

  // The master's host stops heartbeating: down.
  f.now += 6001;
  auto status = f.c().GetStatus({});
  REQUIRE(status.ok());
  CHECK(status->stores(0).state() == "down");
  for (const auto& h : status->hosts()) CHECK_FALSE(h.alive());
  beat("h1", MasterStatus(1, 5000, 3, 5000));
  CHECK(f.c().GetStatus({})->hosts(0).alive());
}

// --- events and durability of the database ---

TEST_CASE("every change appends an event and bumps a version; history is newest last",
          "[coordinator]") {
  Fixture f;
  CHECK(f.Events().empty());
  f.RegisterThreeHosts();  // 3 events, topology 1 -> 4
  CHECK(f.c().versions().topology == 4);
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  REQUIRE(f.c().CreateStore(Store({2, 5})).ok());
  REQUIRE(f.c().AssignUsers(Users({"alice"}, 2)).ok());
  coordpb::SetDurability d;
  d.set_store_id(1);
  d.set_durability(coordpb::SYNC);
  REQUIRE(f.c().SetDurability(d).ok());
  REQUIRE(f.c().SetDurability(d).ok());  // no change: no event, no bump
  CHECK(f.c().versions() == Versions{7, 2});

  auto all = f.Events();
  REQUIRE(all.size() == 7);
  std::vector<std::string> kinds;
  for (const auto& e : all) kinds.push_back(e.kind());
  CHECK(kinds == std::vector<std::string>{"register_host", "register_host", "register_host",
                                          "create_store", "create_store", "assign_users",
                                          "set_durability"});
  for (size_t i = 1; i < all.size(); ++i) CHECK(all[i].id() > all[i - 1].id());
  CHECK(all[3].store_id() == 1);
  CHECK(absl::StrContains(all[3].detail(), "epoch 1"));
  CHECK(all[3].time_ms() == kStart);

  auto store1 = f.Events(1);
  REQUIRE(store1.size() == 2);
  CHECK(store1[0].kind() == "create_store");
  CHECK(store1[1].kind() == "set_durability");
  coordpb::GetHistory limited;
  limited.set_limit(2);
  auto last2 = f.c().GetHistory(limited);
  REQUIRE(last2.ok());
  REQUIRE(last2->events_size() == 2);
  CHECK(last2->events(0).kind() == "assign_users");
  CHECK(last2->events(1).kind() == "set_durability");
}

TEST_CASE("the events table refuses updates and deletes", "[coordinator]") {
  Fixture f;
  REQUIRE(f.c().RegisterHost(Host("h1", {1})).ok());
  f.Close();
  auto db = sqlite::Database::Open(f.path(), true);
  REQUIRE(db.ok());
  CHECK_FALSE((*db)->Exec("UPDATE events SET detail = 'x'").ok());
  CHECK_FALSE((*db)->Exec("DELETE FROM events").ok());
}

TEST_CASE("reopening the database keeps everything", "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3, 5})).ok());
  REQUIRE(f.c().AssignUsers(Users({"alice", "bob"}, 1)).ok());
  coordpb::Heartbeat h = Beat("h1");
  *h.add_slots() = MasterStatus(1, 77, 3, 70);
  REQUIRE(f.c().Heartbeat(h).ok());
  const Versions v = f.c().versions();
  auto before = f.c().GetStatus({});
  REQUIRE(before.ok());
  const size_t events = f.Events().size();

  f.Open();  // closes, then opens again
  CHECK(f.c().versions() == v);
  CHECK(f.c().cluster_id() == "test");
  auto after = f.c().GetStatus({});
  REQUIRE(after.ok());
  CHECK(after->SerializeAsString() == before->SerializeAsString());
  CHECK(f.Events().size() == events);
  coordpb::LookupUser l;
  l.set_user("bob");
  CHECK(f.c().LookupUser(l)->store_id() == 1);
}

TEST_CASE("a new lease period is stored, sent to hosts and recorded", "[coordinator]") {
  Fixture f;
  REQUIRE(f.c().RegisterHost(Host("h1", {1})).ok());
  const Versions v = f.c().versions();
  f.Close();
  auto c = Coordinator::Open(f.path(), {.lease_ms = 9000});
  REQUIRE(c.ok());
  CHECK((*c)->lease_ms() == 9000);
  CHECK((*c)->versions().topology == v.topology + 1);
  auto hb = (*c)->Heartbeat(Beat("h1", v.topology, v.directory));
  REQUIRE(hb.ok());
  CHECK(hb->changed());
  CHECK(hb->assignments().lease_ms() == 9000);
  coordpb::GetHistory all;
  CHECK((*c)->GetHistory(all)->events().rbegin()->kind() == "set_lease_ms");
}

// --- the long poll, in-process ---

// Runs service.Handle(request) as a coroutine on io; done tells when it ended.
struct PendingCall {
  absl::StatusOr<std::string> result = absl::UnknownError("not finished");
  bool done = false;
};

void StartCall(asio::io_context& io, CoordinatorService& service, const coordpb::Request& r,
               PendingCall* call) {
  asio::co_spawn(
      io,
      [&service, bytes = r.SerializeAsString(), call]() -> asio::awaitable<void> {
        // Named first: GCC 12 mishandles temporaries inside co_await.
        const rpc::RpcPeer peer{"test", "test"};
        asio::awaitable<absl::StatusOr<std::string>> pending = service.Handle(bytes, peer);
        call->result = co_await std::move(pending);
        call->done = true;
      },
      asio::detached);
}

coordpb::Response Parse(const absl::StatusOr<std::string>& bytes) {
  INFO(bytes.status().ToString());
  REQUIRE(bytes.ok());
  coordpb::Response r;
  REQUIRE(r.ParseFromString(*bytes));
  return r;
}

TEST_CASE("a waiting heartbeat is woken by a change and answers with the new assignments",
          "[coordinator]") {
  Fixture f(60000);
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  asio::io_context io;
  CoordinatorService service(io, f.c());
  const Versions v = f.c().versions();
  coordpb::Request req;
  *req.mutable_heartbeat() = Beat("h1", v.topology, v.directory);
  req.mutable_heartbeat()->set_wait_ms(10000);
  PendingCall call;
  const absl::Time start = absl::Now();
  StartCall(io, service, req, &call);
  io.poll();
  REQUIRE_FALSE(call.done);
  REQUIRE(service.waiting() == 1);

  coordpb::SetDurability d;  // a topology change
  d.set_store_id(1);
  d.set_durability(coordpb::SYNC);
  REQUIRE(f.c().SetDurability(d).ok());
  io.run();
  REQUIRE(call.done);
  CHECK(absl::Now() - start < absl::Seconds(5));
  coordpb::Response r = Parse(call.result);
  CHECK(r.heartbeat().changed());
  CHECK(r.heartbeat().assignments().version() == v.topology + 1);
  REQUIRE(r.heartbeat().assignments().slots_size() == 2);
  CHECK(r.heartbeat().assignments().slots(0).store().durability() == coordpb::SYNC);
  CHECK(service.waiting() == 0);
  CHECK(service.stats().heartbeats_woken == 1);
}

TEST_CASE("a heartbeat waits at most half the lease period, then answers unchanged",
          "[coordinator]") {
  Fixture f(200);  // wait capped at 100 ms
  REQUIRE(f.c().RegisterHost(Host("h1", {1})).ok());
  asio::io_context io;
  CoordinatorService service(io, f.c());
  const Versions v = f.c().versions();
  coordpb::Request req;
  *req.mutable_heartbeat() = Beat("h1", v.topology, v.directory);
  req.mutable_heartbeat()->set_wait_ms(10000);
  PendingCall call;
  const absl::Time start = absl::Now();
  StartCall(io, service, req, &call);
  io.run();
  REQUIRE(call.done);
  const absl::Duration took = absl::Now() - start;
  CHECK(took >= absl::Milliseconds(90));
  CHECK(took < absl::Seconds(5));
  coordpb::Response r = Parse(call.result);
  CHECK_FALSE(r.heartbeat().changed());
  CHECK(r.heartbeat().assignments().slots_size() == 0);
}

TEST_CASE("shutting the service down answers every waiting heartbeat", "[coordinator]") {
  Fixture f(60000);
  REQUIRE(f.c().RegisterHost(Host("h1", {1})).ok());
  REQUIRE(f.c().RegisterHost(Host("h2", {2})).ok());
  asio::io_context io;
  CoordinatorService service(io, f.c());
  const Versions v = f.c().versions();
  PendingCall a, b;
  for (auto [host, call] : {std::pair{"h1", &a}, std::pair{"h2", &b}}) {
    coordpb::Request req;
    *req.mutable_heartbeat() = Beat(host, v.topology, v.directory);
    req.mutable_heartbeat()->set_wait_ms(10000);
    StartCall(io, service, req, call);
  }
  io.poll();
  REQUIRE(service.waiting() == 2);
  const absl::Time start = absl::Now();
  service.Shutdown();
  io.run();
  CHECK(absl::Now() - start < absl::Seconds(5));
  CHECK(a.done);
  CHECK(b.done);
  CHECK_FALSE(Parse(a.result).heartbeat().changed());
}

TEST_CASE("an unparsable or empty request is refused", "[coordinator]") {
  Fixture f;
  asio::io_context io;
  CoordinatorService service(io, f.c());
  PendingCall garbage, empty;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        const rpc::RpcPeer peer;
        asio::awaitable<absl::StatusOr<std::string>> first =
            service.Handle("\xff\xff\xff\xff garbage", peer);
        garbage.result = co_await std::move(first);
        asio::awaitable<absl::StatusOr<std::string>> second = service.Handle("", peer);
        empty.result = co_await std::move(second);
      },
      asio::detached);
  io.run();
  CHECK(absl::IsInvalidArgument(garbage.result.status()));
  CHECK(absl::IsInvalidArgument(empty.result.status()));
}

// --- consistency checks (RecordCheck, `replctl check`) ---

coordpb::RecordCheck CheckOf(uint64_t store_id, const std::string& result,
                             const std::string& summary = "", bool deep = false) {
  coordpb::RecordCheck r;
  r.set_store_id(store_id);
  r.set_result(result);
  r.set_summary(summary);
  r.set_deep(deep);
  return r;
}

// The number of rows of the checks table (the coordinator must be closed).
int64_t CheckRows(const std::string& path) {
  auto db = sqlite::Database::Open(path, true);
  REQUIRE(db.ok());
  auto st = (*db)->Prepare("SELECT count(*) FROM checks");
  REQUIRE(st.ok());
  auto row = st->Step();
  REQUIRE(row.ok());
  REQUIRE(*row);
  return st->ColumnInt(0);
}

TEST_CASE("a recorded check is shown in status and history and does not bump versions",
          "[coordinator][check]") {
  Fixture f(60000);
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  REQUIRE(f.c().CreateStore(Store({2, 5})).ok());
  CHECK_FALSE(f.StoreState(1).has_last_check());
  const Versions v = f.c().versions();
  const size_t events = f.Events().size();

  // A heartbeat waiting for a change, and the check through the service.
  asio::io_context io;
  CoordinatorService service(io, f.c());
  coordpb::Request beat;
  *beat.mutable_heartbeat() = Beat("h1", v.topology, v.directory);
  beat.mutable_heartbeat()->set_wait_ms(10000);
  PendingCall waiting;
  StartCall(io, service, beat, &waiting);
  io.poll();
  REQUIRE(service.waiting() == 1);

  f.now += 5000;
  coordpb::Request record;
  *record.mutable_record_check() = CheckOf(1, "differs", "store 1: 2 mailboxes differ", true);
  PendingCall call;
  StartCall(io, service, record, &call);
  io.restart();
  io.poll();
  REQUIRE(call.done);
  CHECK(Parse(call.result).has_record_check());

  // No version moved, so the waiting heartbeat was not woken.
  CHECK(f.c().versions() == v);
  CHECK_FALSE(waiting.done);
  CHECK(service.waiting() == 1);
  CHECK(service.stats().heartbeats_woken == 0);
  auto hb = f.c().Heartbeat(Beat("h2", v.topology, v.directory));
  REQUIRE(hb.ok());
  CHECK_FALSE(hb->changed());
  CHECK_FALSE(hb->assignments().users_included());

  const coordpb::StoreStatus s1 = f.StoreState(1);
  REQUIRE(s1.has_last_check());
  CHECK(s1.last_check().time_ms() == kStart + 5000);
  CHECK(s1.last_check().result() == "differs");
  CHECK(s1.last_check().summary() == "store 1: 2 mailboxes differ");
  CHECK(s1.last_check().deep());
  CHECK_FALSE(f.StoreState(2).has_last_check());

  auto all = f.Events();
  REQUIRE(all.size() == events + 1);
  const coordpb::Event& e = all.back();
  CHECK(e.kind() == "check");
  CHECK(e.store_id() == 1);
  CHECK(e.time_ms() == kStart + 5000);
  CHECK(absl::StrContains(e.detail(), "differs"));
  CHECK(absl::StrContains(e.detail(), "deep"));
  CHECK(absl::StrContains(e.detail(), "store 1: 2 mailboxes differ"));
  CHECK(f.Events(2).back().kind() == "create_store");

  service.Shutdown();
  io.restart();
  io.run();
  REQUIRE(waiting.done);
  CHECK_FALSE(Parse(waiting.result).heartbeat().changed());
}

TEST_CASE("a check of an unknown store or with an unknown result is refused and records "
          "nothing",
          "[coordinator][check]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  const Versions v = f.c().versions();
  const size_t events = f.Events().size();

  auto unknown_store = f.c().RecordCheck(CheckOf(42, "consistent"));
  CHECK(absl::IsNotFound(unknown_store.status()));
  CHECK(absl::StrContains(unknown_store.status().message(), "store 42"));

  for (const std::string result : {"ok", "Consistent", "", "differs "}) {
    INFO("result '" << result << "'");
    auto r = f.c().RecordCheck(CheckOf(1, result, "summary"));
    CHECK(absl::IsInvalidArgument(r.status()));
    CHECK(absl::StrContains(r.status().message(), absl::StrCat("'", result, "'")));
    CHECK(absl::StrContains(r.status().message(), "consistent, differs, repaired, unchecked"));
  }
  {
    // Through the service too: the error reaches the caller. (The service
    // must end before the Coordinator it listens to is closed.)
    asio::io_context io;
    CoordinatorService service(io, f.c());
    coordpb::Request req;
    *req.mutable_record_check() = CheckOf(7, "repaired");
    PendingCall call;
    StartCall(io, service, req, &call);
    io.run();
    REQUIRE(call.done);
    CHECK(absl::IsNotFound(call.result.status()));
    CHECK(service.stats().errors == 1);
  }

  CHECK_FALSE(f.StoreState(1).has_last_check());
  CHECK(f.Events().size() == events);
  CHECK(f.c().versions() == v);
  f.Close();
  CHECK(CheckRows(f.path()) == 0);
}

TEST_CASE("only the last check per store is kept, and it survives reopening the database",
          "[coordinator][check]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  REQUIRE(f.c().CreateStore(Store({2, 5})).ok());
  REQUIRE(f.c().RecordCheck(CheckOf(1, "differs", "first", true)).ok());
  f.now += 3'600'000;
  REQUIRE(f.c().RecordCheck(CheckOf(1, "repaired", "second")).ok());
  f.now += 1000;
  REQUIRE(f.c().RecordCheck(CheckOf(2, "unchecked", "host h3 is down")).ok());
  auto before = f.c().GetStatus({});
  REQUIRE(before.ok());

  const coordpb::StoreStatus s1 = f.StoreState(1);
  REQUIRE(s1.has_last_check());
  CHECK(s1.last_check().result() == "repaired");
  CHECK(s1.last_check().summary() == "second");
  CHECK(s1.last_check().time_ms() == kStart + 3'600'000);
  CHECK_FALSE(s1.last_check().deep());
  CHECK(f.StoreState(2).last_check().result() == "unchecked");
  // The history keeps every check.
  std::vector<std::string> details;
  for (const auto& e : f.Events(1)) {
    if (e.kind() == "check") details.push_back(e.detail());
  }
  REQUIRE(details.size() == 2);
  CHECK(absl::StrContains(details[0], "first"));
  CHECK(absl::StrContains(details[1], "second"));

  f.Close();
  CHECK(CheckRows(f.path()) == 2);  // one per store
  f.Open();
  auto after = f.c().GetStatus({});
  REQUIRE(after.ok());
  CHECK(after->SerializeAsString() == before->SerializeAsString());
}

// --- salvage (RecordSalvage, docs/operations.md "Rejoin and salvage") ---

coordpb::RecordSalvage SalvageOf(uint64_t store_id, uint64_t slot_id, uint64_t from,
                                 uint64_t to) {
  coordpb::RecordSalvage r;
  r.set_store_id(store_id);
  r.set_slot_id(slot_id);
  r.set_from_lsn(from);
  r.set_to_lsn(to);
  r.set_fork_lsn(from - 1);
  r.set_messages(7);
  r.set_appended(6);
  r.set_already_there(1);
  r.set_master_slot_id(3);
  return r;
}

TEST_CASE("a salvage is recorded once in the history, a repeated report adds nothing, and "
          "no version moves",
          "[coordinator][salvage]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  const auto versions = f.c().versions();
  auto first = f.c().RecordSalvage(SalvageOf(1, 1, 12, 40));
  REQUIRE(first.ok());
  CHECK(first->recorded());
  auto again = f.c().RecordSalvage(SalvageOf(1, 1, 12, 40));
  REQUIRE(again.ok());
  CHECK_FALSE(again->recorded());
  // Another range of the same slot is another salvage.
  auto other = f.c().RecordSalvage(SalvageOf(1, 1, 41, 45));
  REQUIRE(other.ok());
  CHECK(other->recorded());
  std::vector<std::string> details;
  for (const auto& e : f.Events(1)) {
    if (e.kind() == "salvage") details.push_back(e.detail());
  }
  REQUIRE(details.size() == 2);
  CHECK(details[0] ==
        "slot 1 LSN 12-40 (fork point 11): 7 messages set aside, 6 appended to master slot 3 "
        "with new UIDs, 1 already there");
  CHECK(f.c().versions() == versions);

  CHECK(f.c().RecordSalvage(SalvageOf(42, 1, 12, 40)).status().code() ==
        absl::StatusCode::kNotFound);
  coordpb::RecordSalvage empty = SalvageOf(1, 1, 12, 40);
  empty.set_to_lsn(5);
  CHECK(f.c().RecordSalvage(empty).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a database of schema version 1 gains the checks table when opened",
          "[coordinator][check]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  f.Close();
  {
    // What the release of schema 1 left: no checks table, no service
    // addresses, version 1.
    auto db = sqlite::Database::Open(f.path(), true);
    REQUIRE(db.ok());
    REQUIRE((*db)->Exec("DROP TABLE checks;"
                        " ALTER TABLE stores DROP COLUMN service_lmtp;"
                        " ALTER TABLE stores DROP COLUMN service_api;"
                        " PRAGMA user_version = 1").ok());
  }
  f.Open();
  CHECK_FALSE(f.StoreState(1).has_last_check());
  REQUIRE(f.c().RecordCheck(CheckOf(1, "consistent", "store 1: consistent")).ok());
  CHECK(f.StoreState(1).last_check().result() == "consistent");
  f.Close();
  auto db = sqlite::Database::Open(f.path(), true);
  REQUIRE(db.ok());
  CHECK(SchemaVersion(**db).value() == CurrentSchemaVersion());
}

// --- removals ---

TEST_CASE("a store is removed only without users and, unless forced, without data; its slots go "
          "idle",
          "[coordinator][topology]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  REQUIRE(f.c().AssignUsers(Users({"alice"}, 1)).ok());
  coordpb::RemoveStore remove;
  remove.set_store_id(1);
  remove.set_force(true);
  auto users = f.c().RemoveStore(remove);
  REQUIRE_FALSE(users.ok());
  CHECK(absl::StrContains(users.status().message(), "still has 1 users (alice"));
  CHECK(absl::StrContains(users.status().message(), "assign-users"));

  // Move alice away; the master reported records: data.
  REQUIRE(f.c().RegisterHost(Host("h4", {7, 8})).ok());
  REQUIRE(f.c().CreateStore(Store({5, 7})).ok());
  REQUIRE(f.c().AssignUsers(Users({"alice"}, 2)).ok());
  coordpb::Heartbeat beat = Beat("h1");
  *beat.add_slots() = MasterStatus(1, 42, 3, 42);
  REQUIRE(f.c().Heartbeat(beat).ok());
  remove.set_force(false);
  const uint64_t epoch = f.StoreState(1).store().epoch();
  auto data = f.c().RemoveStore(remove);
  REQUIRE_FALSE(data.ok());
  CHECK(absl::StrContains(data.status().message(), "holds data (slot 1@h1 reported LSN 42)"));
  CHECK(absl::StrContains(data.status().message(), "--force"));
  CHECK(f.StoreState(1).store().epoch() == epoch);  // still there

  remove.set_force(true);
  auto removed = f.c().RemoveStore(remove);
  INFO(removed.status().ToString());
  REQUIRE(removed.ok());
  CHECK(removed->store().store_id() == 1);
  auto status = f.c().GetStatus({});
  REQUIRE(status.ok());
  REQUIRE(status->stores_size() == 1);
  CHECK(status->stores(0).store().store_id() == 2);
  // Both slots are idle in their hosts' assignments.
  for (const std::string host : {"h1", "h2"}) {
    auto a = f.c().HeartbeatAnswer(host, 0, 0);
    REQUIRE(a.ok());
    REQUIRE(a->assignments().slots_size() == 2);
    CHECK(a->assignments().slots(0).role() == coordpb::ROLE_NONE);
  }
  const auto events = f.Events(1);
  REQUIRE_FALSE(events.empty());
  CHECK(events.back().kind() == "remove_store");
  CHECK(absl::StrContains(events.back().detail(), "forced, slot 1@h1 reported LSN 42"));
  // A removed store is gone, and its slots can form a new one.
  CHECK(f.c().RemoveStore(remove).status().code() == absl::StatusCode::kNotFound);
  CHECK(f.c().CreateStore(Store({1, 3})).ok());
}

TEST_CASE("a slot or host in a store, or a live host, cannot be removed; an idle one can",
          "[coordinator][topology]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  coordpb::RemoveSlot slot;
  slot.set_slot_id(1);
  auto member = f.c().RemoveSlot(slot);
  REQUIRE_FALSE(member.ok());
  CHECK(absl::StrContains(member.status().message(), "slot 1@h1 is a member of store 1"));
  slot.set_slot_id(99);
  CHECK(f.c().RemoveSlot(slot).status().code() == absl::StatusCode::kNotFound);
  slot.set_slot_id(2);
  REQUIRE(f.c().RemoveSlot(slot).ok());
  // Slot 2 is gone from h1's assignments.
  auto a = f.c().HeartbeatAnswer("h1", 0, 0);
  REQUIRE(a.ok());
  REQUIRE(a->assignments().slots_size() == 1);
  CHECK(a->assignments().slots(0).slot_id() == 1);

  coordpb::RemoveHost host;
  host.set_host("h2");
  auto in_store = f.c().RemoveHost(host);
  REQUIRE_FALSE(in_store.ok());
  CHECK(absl::StrContains(in_store.status().message(), "holds slot 3 of store 1"));
  host.set_host("h3");
  auto alive = f.c().RemoveHost(host);
  REQUIRE_FALSE(alive.ok());
  CHECK(absl::StrContains(alive.status().message(), "is alive"));
  f.now += 60001;  // h3 silent for longer than the lease
  auto removed = f.c().RemoveHost(host);
  INFO(removed.status().ToString());
  REQUIRE(removed.ok());
  CHECK(removed->slots_removed() == 2);
  auto status = f.c().GetStatus({});
  REQUIRE(status.ok());
  for (const auto& h : status->hosts()) CHECK(h.host() != "h3");
  CHECK(f.Events().back().kind() == "remove_host");
  host.set_host("h9");
  CHECK(f.c().RemoveHost(host).status().code() == absl::StatusCode::kNotFound);
  // A store over a removed slot is refused.
  CHECK_FALSE(f.c().CreateStore(Store({5, 4})).ok());
}

// --- planned failover, in-process ---

// A master's report during a failover: last_lsn, fenced_lsn and one
// ReplicaProgress per (slot, acked_lsn).
coordpb::SlotStatus FencedMaster(uint64_t slot, uint64_t last_lsn, uint64_t fenced_lsn,
                                 std::vector<std::pair<uint64_t, uint64_t>> acked,
                                 uint64_t epoch = 1) {
  coordpb::SlotStatus s;
  s.set_slot_id(slot);
  s.set_role(coordpb::MASTER);
  s.set_epoch(epoch);
  s.set_last_lsn(last_lsn);
  s.set_fenced(true);
  s.set_fenced_lsn(fenced_lsn);
  for (auto [replica, lsn] : acked) {
    coordpb::ReplicaProgress* p = s.add_replicas();
    p->set_slot_id(replica);
    p->set_acked_lsn(lsn);
    p->set_connected(true);
  }
  return s;
}

coordpb::SlotStatus SlotReportOf(uint64_t slot, coordpb::Role role, uint64_t epoch,
                                 uint64_t last_lsn) {
  coordpb::SlotStatus s;
  s.set_slot_id(slot);
  s.set_role(role);
  s.set_epoch(epoch);
  s.set_last_lsn(last_lsn);
  return s;
}

coordpb::Failover FailoverOf(uint64_t store_id, uint64_t to_slot_id = 0,
                             uint32_t timeout_ms = 0, const std::string& reason = "test") {
  coordpb::Failover f;
  f.set_store_id(store_id);
  f.set_to_slot_id(to_slot_id);
  f.set_timeout_ms(timeout_ms);
  f.set_reason(reason);
  return f;
}

// The service in-process on a Fixture (lease 60 s, hosts h1..h3) whose
// fake hosts heartbeat from the test. Nothing sleeps: the test moves the
// fake clock and delivers heartbeats, then runs the ready handlers.
class FailoverBench {
 public:
  explicit FailoverBench(uint32_t vouch_grace_ms = 0)
      : f(60000, vouch_grace_ms), service(io, f.c()) {
    f.RegisterThreeHosts();
  }

  // A heartbeat as a host sends it while its status changes (wait_ms 0),
  // through the service, from a host that holds topology known_version;
  // then every handler that became ready runs.
  void Report(const std::string& host, std::vector<coordpb::SlotStatus> slots,
              uint64_t known_version = 0) {
    coordpb::Request req;
    *req.mutable_heartbeat() = Beat(host, known_version);
    for (auto& s : slots) *req.mutable_heartbeat()->add_slots() = s;
    PendingCall call;
    StartCall(io, service, req, &call);
    Poll();
    INFO(call.result.status().ToString());
    REQUIRE(call.done);
    REQUIRE(call.result.ok());
  }

  void Start(const coordpb::Failover& request, PendingCall* call) {
    coordpb::Request req;
    *req.mutable_failover() = request;
    StartCall(io, service, req, call);
    Poll();
  }

  // Runs every ready handler (poll() stops the context once it runs out
  // of work; restart() lets the next one run).
  void Poll() {
    io.restart();
    io.poll();
  }

  coordpb::StoreInfo StoreNow(uint64_t store_id) { return f.StoreState(store_id).store(); }

  std::vector<std::string> Kinds(uint64_t store_id) {
    std::vector<std::string> kinds;
    for (const auto& e : f.Events(store_id)) kinds.push_back(e.kind());
    return kinds;
  }

  Fixture f;
  asio::io_context io;
  CoordinatorService service;
};

TEST_CASE("a store's preferred slot is the master it was created with", "[coordinator]") {
  Fixture f;
  f.RegisterThreeHosts();
  coordpb::CreateStore second = Store({2, 4, 6});
  second.set_master_slot_id(4);
  auto r = f.c().CreateStore(second);
  REQUIRE(r.ok());
  CHECK(r->store().preferred_slot_id() == 4);
  CHECK(r->store().members(0).slot_id() == 4);  // the master first, then the others in order
  CHECK(r->store().members(1).slot_id() == 2);
  CHECK(r->store().members(2).slot_id() == 6);
  auto a = f.c().HeartbeatAnswer("h1", 0, 0);
  REQUIRE(a.ok());
  CHECK(a->assignments().slots(1).store().preferred_slot_id() == 4);
  CHECK(f.StoreState(1).store().preferred_slot_id() == 4);
}

TEST_CASE("a planned failover fences the master, waits for the replica to hold the fenced "
          "LSN, and switches master and epoch in one step",
          "[coordinator][failover]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3})).ok());  // master 1@h1, replica 3@h2
  b.Report("h1", {MasterStatus(1, 100, 3, 100)});
  const uint64_t version = b.f.c().versions().topology;

  PendingCall call;
  b.Start(FailoverOf(1, 3, 0, "drain h1"), &call);
  REQUIRE_FALSE(call.done);
  CHECK(b.service.failovers_waiting() == 1);
  CHECK(b.f.c().versions().topology == version + 1);  // wakes the master's long poll
  CHECK(b.StoreNow(1).fenced());
  CHECK(b.f.StoreState(1).state() == "switching");
  CHECK(b.StoreNow(1).master_slot_id() == 1);

  // The master still drains (fenced, no fenced_lsn yet), then reports X =
  // 130 with the replica at 120: not enough.
  b.f.now += 10;
  b.Report("h1", {FencedMaster(1, 130, 0, {{3, 120}})});
  b.f.now += 10;
  b.Report("h1", {FencedMaster(1, 130, 130, {{3, 120}})});
  REQUIRE_FALSE(call.done);
  CHECK(b.StoreNow(1).master_slot_id() == 1);
  CHECK(b.StoreNow(1).fenced());

  // The replica's own report shows it holds 130: the switch commits.
  b.f.now += 10;
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 130)});
  coordpb::StoreInfo after = b.StoreNow(1);
  CHECK(after.master_slot_id() == 3);
  CHECK(after.epoch() == 2);
  CHECK_FALSE(after.fenced());
  CHECK(after.preferred_slot_id() == 1);
  CHECK(b.f.StoreState(1).lease_expires_ms() == b.f.now + 60000);
  CHECK(b.f.c().versions().topology == version + 2);
  auto h2 = b.f.c().HeartbeatAnswer("h2", 0, 0);
  REQUIRE(h2.ok());
  CHECK(h2->assignments().slots(0).role() == coordpb::MASTER);
  CHECK(h2->assignments().slots(0).store().epoch() == 2);
  auto h1 = b.f.c().HeartbeatAnswer("h1", 0, 0);
  REQUIRE(h1.ok());
  CHECK(h1->assignments().slots(0).role() == coordpb::REPLICA);

  // The reply waits until the new master serves: its report from before
  // the switch (REPLICA) does not count, a fenced one neither.
  REQUIRE_FALSE(call.done);
  b.f.now += 10;
  coordpb::SlotStatus not_yet = SlotReportOf(3, coordpb::MASTER, 2, 130);
  not_yet.set_fenced(true);
  b.Report("h2", {not_yet});
  REQUIRE_FALSE(call.done);
  b.Report("h2", {SlotReportOf(3, coordpb::MASTER, 2, 130)});
  REQUIRE(call.done);
  coordpb::Response r = Parse(call.result);
  CHECK(r.failover().store().master_slot_id() == 3);
  CHECK(r.failover().store().epoch() == 2);
  CHECK(r.failover().from_slot_id() == 1);
  CHECK(r.failover().switch_lsn() == 130);
  CHECK(r.failover().took_ms() == 40);
  CHECK(b.service.failovers_waiting() == 0);
  CHECK(b.Kinds(1) == std::vector<std::string>{"create_store", "failover_begin", "failover"});
}

TEST_CASE("a failover that times out unfences the store and changes nothing else",
          "[coordinator][failover]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3})).ok());
  b.Report("h1", {MasterStatus(1, 100, 3, 100)});
  const int64_t lease_before = b.f.StoreState(1).lease_expires_ms();

  SECTION("the replica does not catch up") {
    PendingCall call;
    b.Start(FailoverOf(1, 0, 1000, "manual"), &call);
    b.Report("h1", {FencedMaster(1, 130, 130, {{3, 120}})});
    REQUIRE_FALSE(call.done);
    b.f.now += 999;
    b.Report("h3", {});
    REQUIRE_FALSE(call.done);
    b.f.now += 1;  // the deadline: the next report (any host) ends it
    b.Report("h3", {});
    REQUIRE(call.done);
    INFO(call.result.status().ToString());
    CHECK(absl::IsDeadlineExceeded(call.result.status()));
    CHECK(absl::StrContains(call.result.status().message(),
                            "replica slot 3@h2 had LSN 120 of 130 after 1s"));
    CHECK(absl::StrContains(call.result.status().message(), "store 1"));
    const std::vector<coordpb::Event> events = b.f.Events(1);
    REQUIRE(events.size() == 3);
    CHECK(events[1].kind() == "failover_begin");
    CHECK(events[2].kind() == "failover_aborted");
    CHECK(absl::StrContains(events[2].detail(), "replica slot 3@h2 had LSN 120 of 130 after 1s"));
  }
  SECTION("the master never reports its fenced LSN") {
    PendingCall call;
    b.Start(FailoverOf(1, 3, 500), &call);
    b.Report("h1", {FencedMaster(1, 130, 0, {{3, 130}})});
    b.f.now += 501;
    b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 130)});
    REQUIRE(call.done);
    CHECK(absl::IsDeadlineExceeded(call.result.status()));
    CHECK(absl::StrContains(call.result.status().message(),
                            "master slot 1@h1 reported no fenced LSN"));
    CHECK(b.Kinds(1).back() == "failover_aborted");
  }
  coordpb::StoreInfo after = b.StoreNow(1);
  CHECK(after.master_slot_id() == 1);
  CHECK(after.epoch() == 1);
  CHECK_FALSE(after.fenced());
  CHECK(b.f.StoreState(1).state() != "switching");
  CHECK(b.f.StoreState(1).lease_expires_ms() >= lease_before);  // renewed by h1, not moved
  auto h1 = b.f.c().HeartbeatAnswer("h1", 0, 0);
  CHECK(h1->assignments().slots(0).role() == coordpb::MASTER);
  CHECK_FALSE(h1->assignments().slots(0).store().fenced());
  CHECK(b.service.failovers_waiting() == 0);
  // The store can fail over again.
  PendingCall again;
  b.Start(FailoverOf(1, 3), &again);
  CHECK(b.StoreNow(1).fenced());
  b.service.Shutdown();
  b.io.restart();
  b.io.run();
}

TEST_CASE("a failover picks the most caught-up replica when no target is given",
          "[coordinator][failover]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3, 5})).ok());  // replicas 3@h2, 5@h3

  // Ties go to the lowest slot id; a replica the master does not mention is at 0.
  b.Report("h1", {MasterStatus(1, 100, 5, 100)});
  auto plan = b.f.c().BeginFailover(FailoverOf(1));
  REQUIRE(plan.ok());
  CHECK(plan->to_slot_id == 5);
  REQUIRE(b.f.c().AbortFailover(*plan, "test").ok());
  coordpb::SlotStatus tie = MasterStatus(1, 100, 5, 100);
  *tie.add_replicas() = tie.replicas(0);
  tie.mutable_replicas(1)->set_slot_id(3);
  b.Report("h1", {tie});
  plan = b.f.c().BeginFailover(FailoverOf(1));
  REQUIRE(plan.ok());
  CHECK(plan->to_slot_id == 3);
  REQUIRE(b.f.c().AbortFailover(*plan, "test").ok());

  // Slot 5 ahead: chosen; the master's progress alone shows it holds X.
  b.Report("h1", {FencedMaster(1, 100, 0, {{3, 90}, {5, 100}})});
  PendingCall call;
  b.Start(FailoverOf(1), &call);
  b.Report("h1", {FencedMaster(1, 100, 100, {{3, 90}, {5, 100}})});
  CHECK(b.StoreNow(1).master_slot_id() == 5);
  CHECK(b.StoreNow(1).epoch() == 2);
  b.Report("h3", {SlotReportOf(5, coordpb::MASTER, 2, 100)});
  REQUIRE(call.done);
  coordpb::Response r = Parse(call.result);
  CHECK(r.failover().switch_lsn() == 100);
  CHECK(r.failover().from_slot_id() == 1);
}

TEST_CASE("a second failover of a store in progress is refused", "[coordinator][failover]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3})).ok());
  REQUIRE(b.f.c().CreateStore(Store({2, 4})).ok());
  PendingCall first, second, other;
  b.Start(FailoverOf(1, 3), &first);
  b.Start(FailoverOf(1, 3), &second);
  REQUIRE(second.done);
  CHECK(absl::IsFailedPrecondition(second.result.status()));
  CHECK(absl::StrContains(second.result.status().message(),
                          "a failover or promotion of store 1 is in progress"));
  CHECK_FALSE(first.done);

  // Another store fails over at the same time.
  b.Start(FailoverOf(2, 0, 0, "drain h1"), &other);
  CHECK_FALSE(other.done);
  CHECK(b.service.failovers_waiting() == 2);
  b.Report("h1", {FencedMaster(2, 7, 7, {{4, 7}})});
  CHECK(b.StoreNow(2).master_slot_id() == 4);
  CHECK(b.StoreNow(1).master_slot_id() == 1);
  CHECK(b.StoreNow(1).fenced());
  b.Report("h2", {SlotReportOf(4, coordpb::MASTER, 2, 7)});
  REQUIRE(other.done);
  CHECK(Parse(other.result).failover().store().master_slot_id() == 4);
  CHECK_FALSE(first.done);

  // Shutting down aborts the failover that has not switched.
  b.service.Shutdown();
  b.io.restart();
  b.io.run();
  REQUIRE(first.done);
  CHECK(absl::IsUnavailable(first.result.status()));
  CHECK(absl::StrContains(first.result.status().message(), "shutting down"));
  CHECK_FALSE(b.StoreNow(1).fenced());
  CHECK(b.StoreNow(1).epoch() == 1);
}

TEST_CASE("a failover to a slot of a dead host is refused", "[coordinator][failover]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3, 5})).ok());
  b.f.now += 50000;
  b.Report("h1", {});
  b.Report("h3", {});
  b.f.now += 10001;  // h2 last heard 60.001 s ago; lease 60 s
  PendingCall call;
  b.Start(FailoverOf(1, 3), &call);
  REQUIRE(call.done);
  CHECK(absl::IsUnavailable(call.result.status()));
  CHECK(absl::StrContains(call.result.status().message(), "host h2 is not alive"));
  CHECK(absl::StrContains(call.result.status().message(), "store 1"));
  CHECK_FALSE(b.StoreNow(1).fenced());
  CHECK(b.Kinds(1) == std::vector<std::string>{"create_store"});

  // The live replica is accepted.
  PendingCall live;
  b.Start(FailoverOf(1, 5), &live);
  CHECK_FALSE(live.done);
  CHECK(b.StoreNow(1).fenced());
  b.service.Shutdown();
  b.io.restart();
  b.io.run();
}

TEST_CASE("a failover to the master, to a slot of another store or of an unknown store is "
          "refused",
          "[coordinator][failover]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3})).ok());
  for (auto [request, check] :
       std::vector<std::pair<coordpb::Failover, std::string>>{
           {FailoverOf(1, 1), "slot 1 is already the master of store 1"},
           {FailoverOf(1, 4), "slot 4 is not a member of store 1"},
           {FailoverOf(9), "store 9 does not exist"}}) {
    PendingCall call;
    b.Start(request, &call);
    REQUIRE(call.done);
    INFO(call.result.status().ToString());
    CHECK(absl::StrContains(call.result.status().message(), check));
    CHECK((absl::IsInvalidArgument(call.result.status()) ||
           absl::IsNotFound(call.result.status())));
  }
  CHECK_FALSE(b.StoreNow(1).fenced());
  CHECK(b.Kinds(1) == std::vector<std::string>{"create_store"});
}

TEST_CASE("reports from before the failover began do not count", "[coordinator][failover]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3})).ok());
  // Left over from an earlier failover: a fenced LSN, and the replica at it.
  // Same millisecond as the begin: the order of arrival decides, not the clock.
  b.Report("h1", {FencedMaster(1, 130, 130, {{3, 130}})});
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 130)});
  PendingCall call;
  b.Start(FailoverOf(1, 3), &call);
  CHECK_FALSE(call.done);
  CHECK(b.StoreNow(1).master_slot_id() == 1);

  // Later writes reached 140 before the fence.
  b.Report("h1", {FencedMaster(1, 140, 140, {{3, 130}})});
  CHECK(b.StoreNow(1).master_slot_id() == 1);
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 140)});
  CHECK(b.StoreNow(1).master_slot_id() == 3);
  b.Report("h2", {SlotReportOf(3, coordpb::MASTER, 2, 140)});
  REQUIRE(call.done);
  CHECK(Parse(call.result).failover().switch_lsn() == 140);
}

TEST_CASE("the switch is recorded in the history", "[coordinator][failover]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3})).ok());
  PendingCall call;
  b.Start(FailoverOf(1, 0, 0, "drain h1"), &call);
  b.Report("h1", {FencedMaster(1, 130, 130, {{3, 130}})});
  b.Report("h2", {SlotReportOf(3, coordpb::MASTER, 2, 130)});
  REQUIRE(call.done);
  const std::vector<coordpb::Event> events = b.f.Events(1);
  REQUIRE(events.size() == 3);
  CHECK(events[1].kind() == "failover_begin");
  CHECK(events[1].detail() ==
        "from slot 1@h1 to slot 3@h2 at epoch 1, reason: drain h1; store fenced");
  CHECK(events[2].kind() == "failover");
  CHECK(events[2].detail() == "slot 1@h1 -> slot 3@h2 at LSN 130, epoch 1 -> 2, drain h1");
  CHECK(events[2].store_id() == 1);
  CHECK(events[2].time_ms() == b.f.now);
}

TEST_CASE("a switch the new master does not confirm stays committed and says so",
          "[coordinator][failover]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3})).ok());
  PendingCall call;
  b.Start(FailoverOf(1, 3, 1000), &call);
  b.Report("h1", {FencedMaster(1, 50, 50, {{3, 50}})});
  CHECK(b.StoreNow(1).master_slot_id() == 3);
  b.f.now += 1000 + 4999;
  b.Report("h1", {});
  REQUIRE_FALSE(call.done);
  b.f.now += 1;
  b.Report("h1", {});
  REQUIRE(call.done);
  INFO(call.result.status().ToString());
  CHECK(absl::IsDeadlineExceeded(call.result.status()));
  CHECK(absl::StrContains(call.result.status().message(), "is committed"));
  CHECK(b.StoreNow(1).master_slot_id() == 3);
  CHECK(b.StoreNow(1).epoch() == 2);
  CHECK(b.Kinds(1).back() == "failover");
}

TEST_CASE("a store left fenced by a stopped coordinatord is unfenced when it starts",
          "[coordinator][failover]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  REQUIRE(f.c().BeginFailover(FailoverOf(1, 3)).ok());
  f.Close();
  f.Open();
  CHECK_FALSE(f.StoreState(1).store().fenced());
  CHECK(f.StoreState(1).store().master_slot_id() == 1);
  CHECK(f.Events(1).back().kind() == "failover_aborted");
  CHECK(absl::StrContains(f.Events(1).back().detail(), "coordinatord stopped"));
}

// --- forced promotion, in-process ---

coordpb::Promote PromoteOf(uint64_t store_id, bool force = true, uint32_t timeout_ms = 0,
                           const std::string& reason = "host h1 lost") {
  coordpb::Promote p;
  p.set_store_id(store_id);
  p.set_force(force);
  p.set_timeout_ms(timeout_ms);
  p.set_reason(reason);
  return p;
}

void StartPromote(FailoverBench& b, const coordpb::Promote& request, PendingCall* call) {
  coordpb::Request req;
  *req.mutable_promote() = request;
  StartCall(b.io, b.service, req, call);
  b.Poll();
}

// Store 1: master 1@h1 (last report: LSN 130), replicas 3@h2 (120) and 5@h3
// (125). Then h1 goes silent for just over the 60 s lease while h2 and h3
// keep reporting: h1 is dead, h2 and h3 alive. Returns the topology version.
uint64_t LoseMasterHost(FailoverBench& b) {
  REQUIRE(b.f.c().CreateStore(Store({1, 3, 5})).ok());
  b.Report("h1", {MasterStatus(1, 130, 3, 120)});
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 120)});
  b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 1, 125)});
  b.f.now += 30000;
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 120)});
  b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 1, 125)});
  b.f.now += 30001;  // h1 last heard 60.001 s ago
  return b.f.c().versions().topology;
}

// The wait of a promotion that began now, h1's lease having expired.
constexpr int64_t kPromoteWaitMs = 60000 + kPromoteMarginMs;

// Store 1's forced promotion under way with the vouch grace given; h2
// applied the new epoch's topology at once.
class VouchWait {
 public:
  explicit VouchWait(int64_t grace_ms) : b_(grace_ms) {
    version = LoseMasterHost(b_);
    began_ = b_.f.now;
    StartPromote(b_, PromoteOf(1), &call_);
    REQUIRE_FALSE(call_.done);
    b_.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 120)}, version + 1);
  }
  // h3 reports at `at_ms` after the begin, naming topology `known`; then
  // the store's master.
  uint64_t H3ReportsAt(int64_t at_ms, uint64_t known) {
    b_.f.now = began_ + at_ms;
    b_.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 1, 125)}, known);
    return b_.StoreNow(1).master_slot_id();
  }
  uint64_t version = 0;  // before the promotion; version + 1 carries the new epoch

 private:
  FailoverBench b_;
  int64_t began_ = 0;
  PendingCall call_;
};

TEST_CASE("a forced promotion waits the vouch grace for a replica that did not learn the new "
          "epoch, and only a lease period after it did",
          "[coordinator][promote]") {
  // A replica vouches for the old master for at most a lease period at a
  // time, never after it applied the new epoch, and never past its own
  // coordinator contact + lease + grace (docs/operations.md "Why a fenced
  // master stops in time").
  constexpr int64_t kGraceMs = 20000;
  {
    // h3 reports, but from the old topology (its answers are lost, say):
    // it may still vouch for 1@h1 until the grace has passed.
    VouchWait w(kGraceMs);
    CHECK(w.H3ReportsAt(kPromoteWaitMs, w.version) == 1);
    CHECK(w.H3ReportsAt(kPromoteWaitMs + kGraceMs - 1, w.version) == 1);
    CHECK(w.H3ReportsAt(kPromoteWaitMs + kGraceMs, w.version) == 5);
  }
  {
    // h3 applies the new epoch 3 s after the begin: a vouch it gave before
    // lasts until a lease period after that, not the grace.
    VouchWait w(kGraceMs);
    CHECK(w.H3ReportsAt(3000, w.version + 1) == 1);
    CHECK(w.H3ReportsAt(3000 + kPromoteWaitMs - 1, w.version + 1) == 1);
    CHECK(w.H3ReportsAt(3000 + kPromoteWaitMs, w.version + 1) == 5);
  }
  {
    // A host naming a version this coordinator never issued (its database
    // was restored from an older backup) has not shown it applied the new
    // epoch: the promotion waits the whole grace for it.
    VouchWait w(kGraceMs);
    CHECK(w.H3ReportsAt(0, w.version + 50) == 1);
    CHECK(w.H3ReportsAt(kPromoteWaitMs + kGraceMs - 1, w.version + 50) == 1);
    CHECK(w.H3ReportsAt(kPromoteWaitMs + kGraceMs, w.version + 50) == 5);
  }
}

TEST_CASE("promote without --force is refused", "[coordinator][promote]") {
  FailoverBench b;
  LoseMasterHost(b);
  PendingCall call;
  StartPromote(b, PromoteOf(1, /*force=*/false), &call);
  REQUIRE(call.done);
  CHECK(absl::IsInvalidArgument(call.result.status()));
  CHECK(call.result.status().message() ==
        "promote is for a master whose host is gone; add --force, or use failover");
  CHECK(b.StoreNow(1).epoch() == 1);
  CHECK_FALSE(b.StoreNow(1).fenced());
  CHECK(b.Kinds(1) == std::vector<std::string>{"create_store"});

  PendingCall unknown;
  StartPromote(b, PromoteOf(9), &unknown);
  REQUIRE(unknown.done);
  CHECK(absl::IsNotFound(unknown.result.status()));
  CHECK(absl::StrContains(unknown.result.status().message(), "store 9 does not exist"));
}

TEST_CASE("promote refuses while the master's host is alive, saying when it will not be",
          "[coordinator][promote]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3})).ok());
  b.f.now += 45000;  // h1 last heard 45 s ago, within the 60 s lease period
  b.Report("h2", {});
  PendingCall call;
  StartPromote(b, PromoteOf(1), &call);
  REQUIRE(call.done);
  INFO(call.result.status().ToString());
  CHECK(absl::IsFailedPrecondition(call.result.status()));
  const std::string message(call.result.status().message());
  CHECK(absl::StrContains(message, "the master's host h1 is alive: its last heartbeat came 45s ago"));
  CHECK(absl::StrContains(message, "lease period (1m)"));
  CHECK(absl::StrContains(message, "promote will be possible in 15.001s, at "));
  CHECK(absl::StrContains(message, "add --wait"));
  CHECK(absl::StrContains(message, "use `replctl failover`"));
  CHECK(b.StoreNow(1).epoch() == 1);
  CHECK_FALSE(b.StoreNow(1).fenced());
  CHECK(b.StoreNow(1).master_slot_id() == 1);
  CHECK(b.Kinds(1) == std::vector<std::string>{"create_store"});
}

TEST_CASE("promote --wait waits until the master's host stops counting as alive, then promotes",
          "[coordinator][promote]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3, 5})).ok());
  b.Report("h1", {MasterStatus(1, 130, 3, 120)});
  const int64_t last_h1 = b.f.now;
  b.f.now += 20000;  // h1 dies: silent from here on
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 120)});
  b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 1, 125)});
  coordpb::Promote request = PromoteOf(1);
  request.set_wait(true);
  PendingCall call;
  StartPromote(b, request, &call);
  // Waiting: nothing begun while h1 still counts as alive.
  REQUIRE_FALSE(call.done);
  b.f.now = last_h1 + 60000;
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 120)});
  REQUIRE_FALSE(call.done);
  CHECK(b.StoreNow(1).epoch() == 1);
  CHECK_FALSE(b.StoreNow(1).fenced());
  // The lease period since h1's last heartbeat has passed: it begins.
  b.f.now = last_h1 + 60001;
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 120)});
  REQUIRE_FALSE(call.done);
  const int64_t began = b.f.now;
  CHECK(b.StoreNow(1).epoch() == 2);
  CHECK(b.StoreNow(1).fenced());
  // Then as without --wait: the lease period, the switch, the confirmation.
  b.f.now = began + kPromoteWaitMs;
  b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 1, 125)});
  CHECK(b.StoreNow(1).master_slot_id() == 5);
  b.f.now += 20;
  b.Report("h3", {SlotReportOf(5, coordpb::MASTER, 2, 126)});
  REQUIRE(call.done);
  INFO(call.result.status().ToString());
  REQUIRE(call.result.ok());
  CHECK(Parse(call.result).promote().store().master_slot_id() == 5);
}

TEST_CASE("promote --wait refuses a master's host that keeps sending heartbeats",
          "[coordinator][promote]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3})).ok());
  b.Report("h1", {MasterStatus(1, 130, 3, 120)});
  coordpb::Promote request = PromoteOf(1);
  request.set_wait(true);
  PendingCall call;
  StartPromote(b, request, &call);
  REQUIRE_FALSE(call.done);
  // h1 is alive: its heartbeats keep coming, past two lease periods.
  for (int i = 0; i < 5 && !call.done; ++i) {
    b.f.now += 30000;
    b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 120)});
    b.Report("h1", {MasterStatus(1, 130, 3, 120)});
  }
  REQUIRE(call.done);
  INFO(call.result.status().ToString());
  CHECK(absl::IsFailedPrecondition(call.result.status()));
  CHECK(absl::StrContains(call.result.status().message(), "the master's host h1 is alive"));
  CHECK(b.StoreNow(1).epoch() == 1);
  CHECK_FALSE(b.StoreNow(1).fenced());
  CHECK(b.Kinds(1) == std::vector<std::string>{"create_store"});
}

TEST_CASE("promote raises the epoch at once, waits the lease period, then switches to the "
          "most up-to-date live replica",
          "[coordinator][promote]") {
  FailoverBench b;
  const uint64_t version = LoseMasterHost(b);
  const int64_t began = b.f.now;
  PendingCall call;
  StartPromote(b, PromoteOf(1), &call);
  REQUIRE_FALSE(call.done);
  CHECK(b.service.failovers_waiting() == 1);

  // At once: epoch 2, fenced, the master unchanged; the bump wakes every
  // long poll, and the replicas' hosts learn epoch 2 (they then refuse the
  // old master at epoch 1).
  CHECK(b.f.c().versions().topology == version + 1);
  coordpb::StoreInfo during = b.StoreNow(1);
  CHECK(during.epoch() == 2);
  CHECK(during.fenced());
  CHECK(during.master_slot_id() == 1);
  CHECK(b.f.StoreState(1).state() == "switching");
  auto h2 = b.f.c().HeartbeatAnswer("h2", 0, 0);
  REQUIRE(h2.ok());
  CHECK(h2->assignments().slots(0).role() == coordpb::REPLICA);
  CHECK(h2->assignments().slots(0).store().epoch() == 2);
  CHECK(h2->assignments().slots(0).store().master_slot_id() == 1);

  // The replicas keep reporting; nothing switches before the lease period
  // (and the margin) since the begin has passed.
  b.f.now += 30000;
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 120)});
  b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 1, 125)});
  b.f.now = began + kPromoteWaitMs - 1;
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 120)});
  REQUIRE_FALSE(call.done);
  CHECK(b.StoreNow(1).master_slot_id() == 1);
  CHECK(b.StoreNow(1).fenced());

  // Then the live replica with the highest last_lsn of its own report
  // (5@h3 at 125, not 3@h2 at 120) becomes master at epoch 2.
  b.f.now += 1;
  b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 1, 125)});
  coordpb::StoreInfo after = b.StoreNow(1);
  CHECK(after.master_slot_id() == 5);
  CHECK(after.epoch() == 2);
  CHECK_FALSE(after.fenced());
  CHECK(b.f.StoreState(1).lease_expires_ms() == b.f.now + 60000);
  CHECK(b.f.c().versions().topology == version + 2);
  auto h3 = b.f.c().HeartbeatAnswer("h3", 0, 0);
  REQUIRE(h3.ok());
  CHECK(h3->assignments().slots(0).role() == coordpb::MASTER);
  CHECK(h3->assignments().slots(0).store().epoch() == 2);

  // The reply waits until the new master serves at epoch 2.
  REQUIRE_FALSE(call.done);
  b.f.now += 20;
  b.Report("h3", {SlotReportOf(5, coordpb::MASTER, 2, 126)});
  REQUIRE(call.done);
  coordpb::Response r = Parse(call.result);
  CHECK(r.promote().store().master_slot_id() == 5);
  CHECK(r.promote().store().epoch() == 2);
  CHECK(r.promote().from_slot_id() == 1);
  CHECK(r.promote().waited_ms() == kPromoteWaitMs);
  CHECK(r.promote().took_ms() == kPromoteWaitMs + 20);
  CHECK(b.service.failovers_waiting() == 0);
}

TEST_CASE("promote reports what may be lost past the new master's last LSN and the old "
          "master's last report",
          "[coordinator][promote]") {
  FailoverBench b;
  LoseMasterHost(b);  // the old master reported 130, 60.001 s before the begin
  const int64_t began = b.f.now;

  SECTION("the new master lacks 126..130 at least") {
    PendingCall call;
    StartPromote(b, PromoteOf(1), &call);
    b.f.now = began + kPromoteWaitMs;
    b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 2, 125)});
    b.Report("h3", {SlotReportOf(5, coordpb::MASTER, 2, 126)});
    REQUIRE(call.done);
    coordpb::Response r = Parse(call.result);
    CHECK(r.promote().lost_from_lsn() == 126);
    CHECK(r.promote().lost_to_lsn() == 130);
    REQUIRE(r.promote().has_old_master_report());
    CHECK(r.promote().old_master_report().last_lsn() == 130);
    CHECK(r.promote().old_master_report().age_ms() == 60001);
    CHECK(absl::StrContains(
        b.f.Events(1).back().detail(),
        "may be lost: LSNs 126..130 and any later ones that the old master wrote; its last "
        "report (LSN 130, 60.0 s before the promotion began) is newer than the new master's"));
  }
  SECTION("a replica holding everything the old master reported: how many is unknown") {
    b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 130)});
    PendingCall call;
    StartPromote(b, PromoteOf(1), &call);
    b.f.now = began + kPromoteWaitMs;
    b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 130)});
    CHECK(b.StoreNow(1).master_slot_id() == 3);
    b.Report("h2", {SlotReportOf(3, coordpb::MASTER, 2, 131)});
    REQUIRE(call.done);
    coordpb::Response r = Parse(call.result);
    CHECK(r.promote().lost_from_lsn() == 131);
    CHECK(r.promote().lost_to_lsn() == 0);  // unknown, not "nothing"
    CHECK(r.promote().old_master_report().last_lsn() == 130);
    const std::string detail = b.f.Events(1).back().detail();
    CHECK(absl::StrContains(detail,
                            "may be lost: LSNs past 130 that the old master wrote; its last "
                            "report (LSN 130, 60.0 s before the promotion began) is not newer "
                            "than the new master's, so how many is unknown"));
    CHECK_FALSE(absl::StrContains(detail, "nothing lost"));
  }
}

TEST_CASE("promote reports an unknown loss when the old master's last report is older than the "
          "new master's",
          "[coordinator][promote]") {
  // The old master reported LSN 123, then lost the coordinator but kept
  // writing while replica 3@h2 still answered it: h2 reports 183.
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3, 5})).ok());
  b.Report("h1", {MasterStatus(1, 123, 3, 120)});
  b.f.now += 12300;
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 183)});
  b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 1, 150)});
  b.f.now += 47701;  // h1 last heard 60.001 s ago
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 183)});
  b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 1, 150)});
  const int64_t began = b.f.now;
  PendingCall call;
  StartPromote(b, PromoteOf(1), &call);
  REQUIRE_FALSE(call.done);
  b.f.now = began + kPromoteWaitMs;
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 2, 183)});
  CHECK(b.StoreNow(1).master_slot_id() == 3);
  b.Report("h2", {SlotReportOf(3, coordpb::MASTER, 2, 183)});
  REQUIRE(call.done);
  coordpb::Response r = Parse(call.result);
  CHECK(r.promote().lost_from_lsn() == 184);
  CHECK(r.promote().lost_to_lsn() == 0);  // not 123: that would read as an empty range
  REQUIRE(r.promote().has_old_master_report());
  CHECK(r.promote().old_master_report().last_lsn() == 123);
  CHECK(r.promote().old_master_report().age_ms() == 60001);
  CHECK(absl::StrContains(b.f.Events(1).back().detail(),
                          "may be lost: LSNs past 183 that the old master wrote; its last report "
                          "(LSN 123, 60.0 s before the promotion began) is not newer than the "
                          "new master's, so how many is unknown; they are salvaged when it "
                          "returns"));
}

TEST_CASE("a forced promotion waits the lease period on the coordinator's monotonic clock even "
          "if the wall clock jumps forward",
          "[coordinator][promote][clock]") {
  FailoverBench b;
  LoseMasterHost(b);
  const int64_t began = b.f.now;
  PendingCall call;
  StartPromote(b, PromoteOf(1), &call);
  REQUIRE_FALSE(call.done);

  // The coordinator's host steps its wall clock an hour ahead (say NTP, or
  // `date -s`): by that clock the lease ran out long ago. Nothing switches.
  b.f.wall_step_ms = 3'600'000;
  b.f.now += 10;
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 120)});
  b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 1, 125)});
  REQUIRE_FALSE(call.done);
  CHECK(b.StoreNow(1).master_slot_id() == 1);
  CHECK(b.StoreNow(1).fenced());
  b.f.now = began + kPromoteWaitMs - 1;
  b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 1, 125)});
  REQUIRE_FALSE(call.done);
  CHECK(b.StoreNow(1).master_slot_id() == 1);

  // The monotonic clock alone ends the wait.
  b.f.now += 1;
  b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 1, 125)});
  CHECK(b.StoreNow(1).master_slot_id() == 5);
  b.Report("h3", {SlotReportOf(5, coordpb::MASTER, 2, 126)});
  REQUIRE(call.done);
  coordpb::Response r = Parse(call.result);
  CHECK(r.promote().waited_ms() == kPromoteWaitMs);
  // The history shows the wall clock, stepped.
  const std::vector<coordpb::Event> events = b.f.Events(1);
  CHECK(events.back().kind() == "promote");
  CHECK(events.back().time_ms() == began + kPromoteWaitMs + 3'600'000);
}

TEST_CASE("promote with no live replica aborts and keeps the store usable",
          "[coordinator][promote]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3})).ok());  // master 1@h1, replica 3@h2
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 40)});

  b.f.now += 30000;
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 1, 40)});
  b.f.now += 30001;
  const int64_t began = b.f.now;
  PendingCall call;
  StartPromote(b, PromoteOf(1), &call);
  REQUIRE_FALSE(call.done);
  CHECK(b.StoreNow(1).epoch() == 2);

  SECTION("the replica's host dies during the wait") {
    b.f.now = began + kPromoteWaitMs;  // h2 last heard 61 s ago
    b.Report("h3", {});
    REQUIRE(call.done);
    INFO(call.result.status().ToString());
    CHECK(absl::IsUnavailable(call.result.status()));
    CHECK(absl::StrContains(call.result.status().message(),
                            "no replica of store 1 can become the master (slot 3@h2: host "
                            "not alive)"));
    CHECK(absl::StrContains(call.result.status().message(),
                            "its master is still slot 1@h1, at epoch 2"));
  }
  SECTION("coordinatord shuts down during the wait") {
    b.service.Shutdown();
    b.Poll();
    REQUIRE(call.done);
    CHECK(absl::IsUnavailable(call.result.status()));
    CHECK(absl::StrContains(call.result.status().message(), "shutting down"));
  }
  // Aborted: unfenced, the master kept at the new epoch (the replicas noted
  // it already; the old master begins it when it returns).
  CHECK(b.Kinds(1) ==
        std::vector<std::string>{"create_store", "promote_begin", "promote_aborted"});
  coordpb::StoreInfo after = b.StoreNow(1);
  CHECK_FALSE(after.fenced());
  CHECK(after.epoch() == 2);
  CHECK(after.master_slot_id() == 1);
  CHECK(b.f.StoreState(1).state() != "switching");
  CHECK(b.service.failovers_waiting() == 0);
  auto h1 = b.f.c().HeartbeatAnswer("h1", 0, 0);
  REQUIRE(h1.ok());
  CHECK(h1->assignments().slots(0).role() == coordpb::MASTER);
  CHECK(h1->assignments().slots(0).store().epoch() == 2);
  CHECK_FALSE(h1->assignments().slots(0).store().fenced());
  // Usable: the old master's host returns and serves; a planned failover
  // can begin again.
  b.Report("h1", {SlotReportOf(1, coordpb::MASTER, 2, 41)});
  b.Report("h2", {SlotReportOf(3, coordpb::REPLICA, 2, 41)});
  CHECK(b.f.StoreState(1).state() != "down");
  auto plan = b.f.c().BeginFailover(FailoverOf(1, 3));
  REQUIRE(plan.ok());
  CHECK(plan->epoch == 2);
  REQUIRE(b.f.c().AbortFailover(*plan, "test").ok());
}

TEST_CASE("promote with no live replica at the start is refused and changes nothing",
          "[coordinator][promote]") {
  FailoverBench b;
  REQUIRE(b.f.c().CreateStore(Store({1, 3})).ok());  // master 1@h1, replica 3@h2
  b.f.now += 60001;
  b.Report("h3", {});  // not a member
  PendingCall call;
  StartPromote(b, PromoteOf(1), &call);
  REQUIRE(call.done);
  CHECK(absl::IsUnavailable(call.result.status()));
  CHECK(absl::StrContains(call.result.status().message(),
                          "no replica's host is alive (slot 3@h2)"));
  CHECK(b.StoreNow(1).epoch() == 1);
  CHECK_FALSE(b.StoreNow(1).fenced());
  CHECK(b.Kinds(1) == std::vector<std::string>{"create_store"});
}

TEST_CASE("promote aborts when the master's host comes back during the wait",
          "[coordinator][promote]") {
  FailoverBench b;
  LoseMasterHost(b);
  PendingCall call;
  StartPromote(b, PromoteOf(1), &call);
  REQUIRE_FALSE(call.done);
  b.f.now += 1000;
  SECTION("by a heartbeat") {
    b.Report("h1", {MasterStatus(1, 130, 3, 120)});
  }
  SECTION("by registering again (a restart)") {
    REQUIRE(b.f.c().RegisterHost(Host("h1", {1, 2})).ok());
    b.Poll();
  }
  REQUIRE(call.done);
  INFO(call.result.status().ToString());
  CHECK(absl::IsFailedPrecondition(call.result.status()));
  CHECK(absl::StrContains(call.result.status().message(),
                          "the master's host h1 came back during the promotion: use `replctl "
                          "failover`"));
  coordpb::StoreInfo after = b.StoreNow(1);
  CHECK(after.master_slot_id() == 1);
  CHECK(after.epoch() == 2);
  CHECK_FALSE(after.fenced());
  CHECK(b.Kinds(1).back() == "promote_aborted");
}

TEST_CASE("a second promotion, or a failover, of a store being promoted is refused",
          "[coordinator][promote]") {
  FailoverBench b;
  LoseMasterHost(b);
  PendingCall first, second, failover;
  StartPromote(b, PromoteOf(1), &first);
  StartPromote(b, PromoteOf(1), &second);
  REQUIRE(second.done);
  CHECK(absl::IsFailedPrecondition(second.result.status()));
  CHECK(absl::StrContains(second.result.status().message(),
                          "a failover or promotion of store 1 is in progress"));
  b.Start(FailoverOf(1, 3), &failover);
  REQUIRE(failover.done);
  CHECK(absl::IsFailedPrecondition(failover.result.status()));
  CHECK_FALSE(first.done);
  CHECK(b.StoreNow(1).epoch() == 2);
  b.service.Shutdown();
  b.Poll();
  REQUIRE(first.done);
}

TEST_CASE("a promotion the new master does not confirm stays committed and says so",
          "[coordinator][promote]") {
  FailoverBench b;
  LoseMasterHost(b);
  const int64_t began = b.f.now;
  PendingCall call;
  StartPromote(b, PromoteOf(1, true, 2000), &call);
  b.f.now = began + kPromoteWaitMs;
  b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 2, 125)});
  CHECK(b.StoreNow(1).master_slot_id() == 5);
  b.f.now += 1999;
  coordpb::SlotStatus not_yet = SlotReportOf(5, coordpb::MASTER, 2, 125);
  not_yet.set_fenced(true);  // not serving yet
  b.Report("h3", {not_yet});
  REQUIRE_FALSE(call.done);
  b.f.now += 1;
  b.Report("h2", {});
  REQUIRE(call.done);
  INFO(call.result.status().ToString());
  CHECK(absl::IsDeadlineExceeded(call.result.status()));
  CHECK(absl::StrContains(call.result.status().message(), "is committed"));
  CHECK(b.StoreNow(1).master_slot_id() == 5);
  CHECK(b.StoreNow(1).epoch() == 2);
  CHECK(b.Kinds(1).back() == "promote");
}

TEST_CASE("the promotion is recorded in the history", "[coordinator][promote]") {
  FailoverBench b;
  LoseMasterHost(b);
  const int64_t began = b.f.now;
  PendingCall call;
  StartPromote(b, PromoteOf(1, true, 0, "h1 burned down"), &call);
  b.f.now = began + kPromoteWaitMs;
  b.Report("h3", {SlotReportOf(5, coordpb::REPLICA, 2, 125)});  // alive: switches to 5
  b.Report("h3", {SlotReportOf(5, coordpb::MASTER, 2, 126)});
  REQUIRE(call.done);
  const std::vector<coordpb::Event> events = b.f.Events(1);
  REQUIRE(events.size() == 3);
  CHECK(events[1].kind() == "promote_begin");
  CHECK(events[1].time_ms() == began);
  CHECK(events[1].detail() ==
        "old master slot 1@h1 (host gone; last reported LSN 130), epoch 1 -> 2, reason: h1 "
        "burned down; store fenced, waiting for the old master's lease to run out");
  CHECK(events[2].kind() == "promote");
  CHECK(events[2].store_id() == 1);
  CHECK(events[2].time_ms() == began + kPromoteWaitMs);
  CHECK(events[2].detail() ==
        "slot 1@h1 -> slot 5@h3, epoch 2; may be lost: LSNs 126..130 and any later ones that "
        "the old master wrote; its last report (LSN 130, 60.0 s before the promotion began) is "
        "newer than the new master's; they are salvaged when it returns; reason: h1 burned "
        "down");
}

TEST_CASE("a store left fenced by a promotion when coordinatord stopped is unfenced at the new "
          "epoch",
          "[coordinator][promote]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  f.now += 6001;  // lease 6 s: every host is dead
  REQUIRE(f.c().RegisterHost(Host("h2", {3, 4})).ok());
  auto plan = f.c().BeginPromotion(PromoteOf(1));
  REQUIRE(plan.ok());
  CHECK(plan->epoch == 2);
  f.Close();
  f.Open();
  coordpb::StoreInfo after = f.StoreState(1).store();
  CHECK_FALSE(after.fenced());
  CHECK(after.epoch() == 2);
  CHECK(after.master_slot_id() == 1);
  CHECK(f.Events(1).back().kind() == "failover_aborted");
  CHECK(absl::StrContains(f.Events(1).back().detail(), "during the failover or promotion"));
}

TEST_CASE("times persisted before a reboot are capped when the database is opened",
          "[coordinator][clock]") {
  Fixture f;
  f.RegisterThreeHosts();
  REQUIRE(f.c().CreateStore(Store({1, 3})).ok());
  coordpb::Heartbeat h = Beat("h1");
  *h.add_slots() = MasterStatus(1, 77, 3, 70);
  REQUIRE(f.c().Heartbeat(h).ok());
  f.Close();
  // The machine rebooted: its monotonic clock starts again near 0, far
  // below the stored values (as Unix ms written by an older coordinatord
  // would be too).
  f.now = 20'000;
  f.Open();
  // A host last heard "in the future" counts as heard now, at most; its
  // lease runs at most one lease period from now; its report is not newer
  // than now.
  CHECK(f.StoreState(1).lease_expires_ms() == f.now + 6000);
  auto report = f.c().LastReport(1);
  REQUIRE(report.ok());
  REQUIRE(report->has_value());
  CHECK((*report)->arrived_ms == f.now);
  auto r = f.c().GetStatus({});
  REQUIRE(r.ok());
  CHECK(r->hosts(0).alive());
  CHECK(r->hosts(0).last_heartbeat_ms() == f.now);
  // So the hosts that stay silent die one lease period later and a forced
  // promotion can begin; it waits the lease period from its begin anyway.
  f.now += 6001;
  REQUIRE(f.c().RegisterHost(Host("h2", {3, 4})).ok());
  auto plan = f.c().BeginPromotion(PromoteOf(1));
  INFO(plan.status().ToString());
  REQUIRE(plan.ok());
  CHECK(plan->lease_expires_ms == 20'000 + 6000);
  CHECK(plan->from_report_age_ms == 6001);
}

// --- the real coordinatord ---

std::string Bin(const std::string& name) {
  const char* bin = std::getenv("MAILREPL_BIN");
  if (bin == nullptr) throw std::runtime_error("MAILREPL_BIN is not set");
  return absl::StrCat(bin, "/", name);
}

constexpr char kSecret[] = "e2e-secret-0123456789abcdef";

// coordinatord on a fresh database with lease 60 s (so the long poll may
// wait the full 10 s), its port parsed from its log line.
class Daemon {
 public:
  explicit Daemon(std::vector<std::string> extra = {}) {
    WriteSecret(secret_file(), kSecret);
    std::vector<std::string> argv = {Bin("coordinatord"), "--db",          db(),
                                     "--listen",          "127.0.0.1:0",   "--secret-file",
                                     secret_file(),       "--cluster-id",  "e2e",
                                     "--lease-ms",        "60000"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    process_ = std::make_unique<Process>(argv);
    REQUIRE(WaitFor([&] { return absl::StrContains(process_->Stderr(), "port=<") ||
                                 !process_->Running(); },
                    absl::Seconds(30)));
    const std::string err = process_->Stderr();
    INFO(process_->Describe());
    REQUIRE(absl::StrContains(err, "coordinatord listening"));
    const size_t at = err.find("port=<");
    REQUIRE(at != std::string::npos);
    REQUIRE(absl::SimpleAtoi(err.substr(at + 6, err.find('>', at) - at - 6), &port_));
  }
  ~Daemon() {
    if (process_->Running()) Stop();
  }

  // SIGTERM; coordinatord must exit 0.
  void Stop() {
    process_->Signal(SIGTERM);
    const std::optional<int> code = process_->Wait(absl::Seconds(20));
    INFO(process_->Describe());
    CHECK(code == 0);
  }

  std::string db() const { return dir_.Sub("coord.db"); }
  std::string secret_file() const { return dir_.Sub("secret"); }
  int port() const { return port_; }
  Process& process() { return *process_; }

  rpc::RpcClientOptions Options(const std::string& secret = kSecret) const {
    return {.address = absl::StrCat("127.0.0.1:", port_), .service = "coordinator",
            .secret = secret, .client = "coordinator_test"};
  }
  absl::StatusOr<coordpb::Response> Call(const coordpb::Request& r,
                                         absl::Duration timeout = absl::Seconds(10)) const {
    return rpc::CallOnce<coordpb::Response>(Options(), r, timeout);
  }
  coordpb::Response MustCall(const coordpb::Request& r) const {
    auto resp = Call(r);
    INFO(resp.status().ToString());
    REQUIRE(resp.ok());
    return *resp;
  }

 private:
  TempDir dir_;
  std::unique_ptr<Process> process_;
  int port_ = 0;
};

coordpb::Request Req(const coordpb::RegisterHost& r) {
  coordpb::Request q;
  *q.mutable_register_host() = r;
  return q;
}
coordpb::Request Req(const coordpb::CreateStore& r) {
  coordpb::Request q;
  *q.mutable_create_store() = r;
  return q;
}
coordpb::Request Req(const coordpb::Heartbeat& r) {
  coordpb::Request q;
  *q.mutable_heartbeat() = r;
  return q;
}
coordpb::Request StatusReq() {
  coordpb::Request q;
  q.mutable_get_status();
  return q;
}

TEST_CASE("coordinatord: a heartbeat long poll returns promptly when the topology changes",
          "[coordinator][e2e]") {
  Daemon d;
  auto reg = d.MustCall(Req(Host("h1", {1})));
  CHECK(reg.register_host().assignments().cluster_id() == "e2e");
  CHECK(reg.register_host().assignments().lease_ms() == 60000);
  d.MustCall(Req(Host("h2", {2})));
  auto created = d.MustCall(Req(Store({1, 2})));
  CHECK(created.create_store().store().epoch() == 1);
  const coordpb::GetStatusReply status = d.MustCall(StatusReq()).get_status();
  const uint64_t version = status.version();

  // h1 polls with the current versions; its report carries a marker LSN so
  // that the test can see the poll has reached the coordinator.
  coordpb::Heartbeat beat = Beat("h1", version, 1);
  beat.set_wait_ms(10000);
  *beat.add_slots() = MasterStatus(1, 4242, 2, 4242);
  std::atomic<bool> done{false};
  absl::StatusOr<coordpb::Response> polled = absl::UnknownError("not finished");
  absl::Time returned;
  std::thread poller([&] {
    polled = d.Call(Req(beat), absl::Seconds(30));
    returned = absl::Now();
    done = true;
  });
  const bool waiting = WaitFor(
      [&] {
        auto s = d.Call(StatusReq());
        if (!s.ok() || s->get_status().stores_size() != 1) return false;
        for (const auto& slot : s->get_status().stores(0).slots()) {
          if (slot.last_lsn() == 4242) return true;
        }
        return false;
      },
      absl::Seconds(10), absl::Milliseconds(20));
  CHECK(waiting);
  CHECK_FALSE(done.load());

  const absl::Time changed_at = absl::Now();
  coordpb::Request dur;
  dur.mutable_set_durability()->set_store_id(1);
  dur.mutable_set_durability()->set_durability(coordpb::SYNC);
  d.MustCall(dur);
  const bool returned_promptly = WaitFor([&] { return done.load(); }, absl::Seconds(5));
  poller.join();
  CHECK(returned_promptly);
  CHECK(returned - changed_at < absl::Seconds(5));  // the poll asked for 10 s
  INFO(polled.status().ToString());
  REQUIRE(polled.ok());
  const coordpb::HeartbeatReply& hb = polled->heartbeat();
  CHECK(hb.changed());
  CHECK(hb.assignments().version() > version);
  REQUIRE(hb.assignments().slots_size() == 1);
  CHECK(hb.assignments().slots(0).role() == coordpb::MASTER);
  CHECK(hb.assignments().slots(0).store().durability() == coordpb::SYNC);
  CHECK_FALSE(hb.assignments().users_included());

  // The lease of store 1 was renewed by the heartbeat.
  const auto after = d.MustCall(StatusReq()).get_status();
  CHECK(after.stores(0).lease_expires_ms() > 0);
  d.Stop();
}

TEST_CASE("coordinatord refuses a wrong secret and survives garbage bytes",
          "[coordinator][e2e]") {
  Daemon d;
  auto wrong = rpc::CallOnce<coordpb::Response>(d.Options("not-the-secret-0123456789"),
                                                StatusReq(), absl::Seconds(10));
  REQUIRE_FALSE(wrong.ok());
  CHECK(absl::IsUnauthenticated(wrong.status()));

  // Garbage on a raw connection: the coordinator closes that connection.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(d.port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  timeval tv{.tv_sec = 10, .tv_usec = 0};
  REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
  const std::string garbage = "GET / HTTP/1.0\r\n\r\n\x01\x02\x03 not a frame at all";
  REQUIRE(::send(fd, garbage.data(), garbage.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(garbage.size()));
  bool closed = false;
  char buf[4096];
  while (true) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) continue;  // the hello, then a reply naming the error
    closed = n == 0 || errno == ECONNRESET;
    break;  // EAGAIN: not closed within 10 s
  }
  ::close(fd);
  CHECK(closed);

  // The next good client works, and the daemon still runs.
  auto ok = d.Call(StatusReq());
  INFO(ok.status().ToString());
  CHECK(ok.ok());
  CHECK(ok->get_status().cluster_id() == "e2e");
  CHECK(d.process().Running());
  d.Stop();
  CHECK(absl::StrContains(d.process().Stderr(), "coordinatord stopped"));
}

TEST_CASE("coordinatord answers a waiting heartbeat and exits 0 on SIGTERM",
          "[coordinator][e2e]") {
  Daemon d;
  d.MustCall(Req(Host("h1", {1})));
  d.MustCall(Req(Host("h2", {2})));
  d.MustCall(Req(Store({1, 2})));
  const uint64_t version = d.MustCall(StatusReq()).get_status().version();
  coordpb::Heartbeat beat = Beat("h1", version, 1);
  beat.set_wait_ms(10000);
  *beat.add_slots() = MasterStatus(1, 777, 2, 777);
  std::atomic<bool> done{false};
  std::thread poller([&] {
    d.Call(Req(beat), absl::Seconds(30)).IgnoreError();
    done = true;
  });
  CHECK(WaitFor(
      [&] {
        auto s = d.Call(StatusReq());
        return s.ok() && s->get_status().stores_size() == 1 &&
               s->get_status().stores(0).slots_size() == 1 &&
               s->get_status().stores(0).slots(0).last_lsn() == 777;
      },
      absl::Seconds(10), absl::Milliseconds(20)));
  const absl::Time start = absl::Now();
  d.process().Signal(SIGTERM);
  const std::optional<int> code = d.process().Wait(absl::Seconds(5));
  CHECK(absl::Now() - start < absl::Seconds(5));
  INFO(d.process().Describe());
  CHECK(code == 0);
  CHECK(WaitFor([&] { return done.load(); }, absl::Seconds(10)));
  poller.join();
}

TEST_CASE("coordinatord exits 2 on bad flags, a bad secret file and a newer database",
          "[coordinator][e2e]") {
  TempDir dir;
  const std::string secret = dir.Sub("secret");
  WriteSecret(secret, kSecret);
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), Bin("coordinatord"));
    Process p(args);
    const std::optional<int> code = p.Wait(absl::Seconds(20));
    return std::pair{code.value_or(-1), p.Stderr()};
  };
  const std::string db = dir.Sub("coord.db");
  auto [c1, e1] = run({"--db", db, "--listen", "127.0.0.1:0"});
  CHECK(c1 == 2);
  CHECK(absl::StrContains(e1, "--secret-file"));
  auto [c2, e2] = run({"--db", db, "--listen", "127.0.0.1:0", "--secret-file", secret,
                       "--lease-ms", "abc"});
  CHECK(c2 == 2);
  CHECK(absl::StrContains(e2, "--lease-ms"));
  auto [c3, e3] = run({"--db", db, "--listen", "127.0.0.1:0", "--secret-file",
                       dir.Sub("missing")});
  CHECK(c3 == 2);
  CHECK(absl::StrContains(e3, "missing"));
  REQUIRE(Coordinator::Open(db, {}).ok());
  {
    auto sdb = sqlite::Database::Open(db, true);
    REQUIRE(sdb.ok());
    REQUIRE((*sdb)->Exec("PRAGMA user_version = 99").ok());
  }
  auto [c4, e4] = run({"--db", db, "--listen", "127.0.0.1:0", "--secret-file", secret});
  CHECK(c4 == 2);
  CHECK(absl::StrContains(e4, db));
  CHECK(absl::StrContains(e4, "newer"));
  auto [c5, e5] = run({"--help"});
  CHECK(c5 == 0);
}

}  // namespace
}  // namespace mailrepl::coord
