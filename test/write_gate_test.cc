// Unit tests of the write gate (replicad/write_gate.h): table-driven over
// role, epoch, fence and lease moments (docs/operations.md "Leases and
// fencing"). Times are BootNanos values given explicitly (the *At
// variants); the coordinator contact is a SinceBoot() duration, as the
// CoordinatorLink passes it.
#include "replicad/write_gate.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "common/clock.h"
#include "proto/coord.pb.h"

namespace mailrepl::replicad {
namespace {

constexpr int64_t kS = 1'000'000'000;  // one second in ns
constexpr absl::Duration kLease = absl::Seconds(6);
constexpr absl::Duration kGrace = absl::Seconds(30);

coordpb::StoreInfo Store(uint64_t epoch, uint64_t master_slot = 1) {
  coordpb::StoreInfo s;
  s.set_store_id(7);
  s.set_epoch(epoch);
  s.set_master_slot_id(master_slot);
  for (uint64_t id : {1, 2}) {
    coordpb::SlotInfo* m = s.add_members();
    m->set_slot_id(id);
    m->set_lmtp_address(absl::StrCat("127.0.0.", id, ":24"));
    m->set_api_address(absl::StrCat("127.0.0.", id, ":7001"));
  }
  return s;
}

// A gate of slot 1 with role, epoch and lease set; heard_s: the send time
// (seconds since boot) of the last answered heartbeat, 0 for never.
struct Moment {
  coordpb::Role role = coordpb::MASTER;
  uint64_t epoch = 3;
  bool fenced = false;
  uint64_t newer_epoch = 0;  // a replica said so (0: none)
  int64_t heard_s = 100;     // 0: never
  int64_t vouched_until_s = 0;
  bool stopping = false;
};

void Set(WriteGate& g, const Moment& m) {
  g.SetLease(kLease, kGrace);
  g.SetStore(Store(m.epoch));
  g.SetRole(m.role);
  g.SetEpoch(m.epoch);
  g.SetFenced(m.fenced);
  if (m.newer_epoch != 0) g.NoteNewerEpoch(m.newer_epoch);
  if (m.heard_s != 0) g.CoordinatorHeard(absl::Seconds(m.heard_s));
  if (m.vouched_until_s != 0) g.ReplicaVouched(m.vouched_until_s * kS);
  if (m.stopping) g.SetStopping();
}

TEST_CASE("the gate lets a write through only for a master holding its lease", "[write_gate]") {
  struct Case {
    std::string name;
    Moment m;
    uint64_t request_epoch;
    int64_t now_s;
    absl::StatusCode want;
    std::string says;  // part of the refusal
  };
  const std::vector<Case> cases = {
      {"a master heard 1 s ago writes", {}, 0, 101, absl::StatusCode::kOk, ""},
      {"a master writes at exactly its epoch", {}, 3, 101, absl::StatusCode::kOk, ""},
      {"a request of another epoch is refused", {}, 2, 101,
       absl::StatusCode::kFailedPrecondition, "stale epoch 2"},
      {"a replica refuses and names the master", {.role = coordpb::REPLICA}, 0, 101,
       absl::StatusCode::kFailedPrecondition, "not the master of store 7 (replica)"},
      {"an idle slot refuses", {.role = coordpb::ROLE_NONE}, 0, 101,
       absl::StatusCode::kFailedPrecondition, "(none)"},
      {"a fenced store refuses", {.fenced = true}, 0, 101, absl::StatusCode::kUnavailable,
       "switching masters"},
      {"a master told of a newer epoch refuses at once", {.newer_epoch = 4}, 0, 101,
       absl::StatusCode::kUnavailable, "knows epoch 4"},
      {"an older epoch from a replica does not fence", {.newer_epoch = 2}, 0, 101,
       absl::StatusCode::kOk, ""},
      {"a master that never heard from anyone refuses", {.heard_s = 0}, 0, 101,
       absl::StatusCode::kUnavailable, "it just started"},
      {"the lease holds until contact + L", {}, 0, 106, absl::StatusCode::kOk, ""},
      {"a master whose lease ran out refuses", {}, 0, 107, absl::StatusCode::kUnavailable,
       "lease ran out"},
      {"a replica's vouch extends the lease", {.vouched_until_s = 110}, 0, 109,
       absl::StatusCode::kOk, ""},
      {"past the vouch too, it refuses", {.vouched_until_s = 110}, 0, 111,
       absl::StatusCode::kUnavailable, "lease ran out"},
      {"a vouch alone lets a just-started master write", {.heard_s = 0, .vouched_until_s = 110},
       0, 105, absl::StatusCode::kOk, ""},
      {"shutting down refuses", {.stopping = true}, 0, 101, absl::StatusCode::kUnavailable,
       "shutting down"},
  };
  for (const Case& c : cases) {
    SECTION(c.name) {
      WriteGate g(1);
      Set(g, c.m);
      absl::Status s = g.CheckWriteAt(c.request_epoch, /*lmtp=*/false, c.now_s * kS);
      CHECK(s.code() == c.want);
      if (!c.says.empty()) CHECK(absl::StrContains(s.message(), c.says));
    }
  }
}

TEST_CASE("a refusal names the master's LMTP or API address", "[write_gate]") {
  WriteGate g(2);
  Set(g, {.role = coordpb::REPLICA});
  CHECK(absl::StrContains(g.CheckWriteAt(0, /*lmtp=*/true, 101 * kS).message(),
                          "LMTP is at 127.0.0.1:24"));
  CHECK(absl::StrContains(g.CheckWriteAt(0, /*lmtp=*/false, 101 * kS).message(),
                          "API is at 127.0.0.1:7001"));
}

TEST_CASE("a write is acknowledged only if the right to write held once it was durable",
          "[write_gate]") {
  struct Case {
    std::string name;
    Moment m;
    int64_t durable_s;
    bool ok;
  };
  const std::vector<Case> cases = {
      {"durable inside the lease", {}, 105, true},
      {"durable at the lease's last moment", {}, 106, true},
      {"a master whose lease ran out before its fsync returned answers 451", {}, 107, false},
      {"durable inside a replica's vouch", {.vouched_until_s = 112}, 111, true},
      {"durable after the vouch too", {.vouched_until_s = 112}, 113, false},
      {"a master told of a newer epoch meanwhile", {.newer_epoch = 4}, 101, false},
      {"a master demoted meanwhile", {.role = coordpb::REPLICA}, 101, false},
      {"never heard from anyone", {.heard_s = 0}, 1, false},
      // Not the coordinator's fence: a planned failover drains the writes
      // its fence found in flight, and they count.
      {"fenced by the coordinator: the drain counts the write", {.fenced = true}, 101, true},
  };
  for (const Case& c : cases) {
    SECTION(c.name) {
      WriteGate g(1);
      Set(g, c.m);
      std::optional<lmtp::LmtpReply> reply = g.LmtpWhenDurable(c.durable_s * kS);
      CHECK(reply.has_value() == !c.ok);
      if (reply) {
        CHECK(reply->code == 451);
        CHECK(reply->enhanced == "4.3.0");
        CHECK(absl::StrContains(reply->text, "lost its right to write"));
      }
      CHECK(g.late_writes() == (c.ok ? 0u : 1u));
      CHECK(g.HeldWhenDurable(c.durable_s * kS).ok() == c.ok);
    }
  }
}

TEST_CASE("a replica vouches only within its own contact, for its epoch or newer",
          "[write_gate]") {
  struct Case {
    std::string name;
    Moment m;
    uint64_t master_epoch;
    int64_t now_s;
    absl::Duration want;  // <= 0: no vouch
  };
  const Moment replica{.role = coordpb::REPLICA, .epoch = 3, .heard_s = 100};
  const std::vector<Case> cases = {
      {"a replica heard 1 s ago vouches a whole lease", replica, 3, 101, kLease},
      {"for a master of a newer epoch too", replica, 4, 101, kLease},
      {"a replica never vouches for an epoch older than the one it knows", replica, 2, 101,
       absl::ZeroDuration()},
      {"near the end of L + G the vouch shrinks to what is left", replica, 3, 134,
       absl::Seconds(2)},
      {"a replica vouches only while its own coordinator contact is younger than L+G", replica,
       3, 136, absl::ZeroDuration()},
      {"past L + G it does not vouch", replica, 3, 140, absl::Seconds(-4)},
      {"a replica that never heard from the coordinator does not vouch",
       {.role = coordpb::REPLICA, .heard_s = 0}, 3, 101, absl::ZeroDuration()},
      {"a master does not vouch", {.role = coordpb::MASTER}, 3, 101, absl::ZeroDuration()},
      {"an idle slot does not vouch", {.role = coordpb::ROLE_NONE}, 3, 101,
       absl::ZeroDuration()},
  };
  for (const Case& c : cases) {
    SECTION(c.name) {
      WriteGate g(2);
      Set(g, c.m);
      const absl::Duration v = g.VouchAt(c.master_epoch, c.now_s * kS);
      if (c.want <= absl::ZeroDuration()) {
        CHECK(v <= absl::ZeroDuration());
      } else {
        CHECK(v == c.want);
      }
    }
  }
}

TEST_CASE("a newer epoch learnt stops the vouches for the older master at once",
          "[write_gate]") {
  WriteGate g(2);
  Set(g, {.role = coordpb::REPLICA, .epoch = 3, .heard_s = 100});
  CHECK(g.VouchAt(3, 101 * kS) == kLease);
  g.SetEpoch(4);  // SlotHost::Apply does this before the contact is counted
  CHECK(g.VouchAt(3, 101 * kS) == absl::ZeroDuration());
  CHECK(g.VouchAt(4, 101 * kS) == kLease);
}

TEST_CASE("the contact and the vouch only move forward", "[write_gate]") {
  WriteGate g(1);
  Set(g, {.heard_s = 100});
  g.CoordinatorHeard(absl::Seconds(90));  // a late answer to an older heartbeat
  CHECK(g.HeldUntilNs() == 106 * kS);
  g.ReplicaVouched(120 * kS);
  g.ReplicaVouched(110 * kS);
  CHECK(g.HeldUntilNs() == 120 * kS);
}

TEST_CASE("the sync server admits sessions only on a replica", "[write_gate]") {
  WriteGate g(2);
  for (auto [role, ok] : {std::pair{coordpb::REPLICA, true}, std::pair{coordpb::MASTER, false},
                          std::pair{coordpb::ROLE_NONE, false}}) {
    g.SetRole(role);
    CHECK(g.Admit().ok() == ok);
  }
  g.SetRole(coordpb::MASTER);
  CHECK(absl::StrContains(g.Admit().message(), "slot 2 is not a replica (master)"));
}

TEST_CASE("GetSlot's state follows the gate", "[write_gate]") {
  WriteGate g(1);
  Set(g, {.heard_s = SinceBoot() / absl::Seconds(1)});
  apipb::SlotState s = g.State();
  CHECK(s.master());
  CHECK(s.epoch() == 3);
  CHECK(s.master_api_address() == "127.0.0.1:7001");
  g.SetFenced(true);
  CHECK_FALSE(g.State().master());
}

}  // namespace
}  // namespace mailrepl::replicad
