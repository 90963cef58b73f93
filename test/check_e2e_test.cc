// replctl check against a running dev cluster (real replicad and
// coordinatord processes on loopback): divergence injected behind the
// engine's back on a replica is found exactly, --deep finds damaged bodies,
// --repair fixes everything, and replication lag is never reported as
// divergence.
#include <signal.h>

#include <map>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"
#include "test/cluster_harness.h"
#include "test/process_util.h"
#include "test/test_util.h"

namespace mailrepl::testing {
namespace {

// Damage done to a replica's index with Python's sqlite3, the way a bug
// would do it, while its replicad is stopped: the engine sees none of it
// happen. argv: index, then the users whose INBOX gets (a) a flag changed
// on UID 1, (b) UID 2 dropped; and a stray mailbox user/stray is added.
constexpr char kTamperIndex[] = R"py(
import sqlite3, sys
db, flagged, dropped = sys.argv[1:]
con = sqlite3.connect(db)
def mailbox(user):
    return con.execute("SELECT id FROM mailboxes WHERE name = ?", ("user/" + user,)).fetchone()[0]
con.execute("UPDATE messages SET flags = ? WHERE mailbox = ? AND uid = 1",
            ("\\Flagged", mailbox(flagged)))
con.execute("DELETE FROM messages WHERE mailbox = ? AND uid = 2", (mailbox(dropped),))
con.execute("INSERT INTO mailboxes VALUES (?, 'user/stray', 'stray', 1, 0, 0, 0, 0, 0, 0)",
            ("f" * 32,))
con.commit()
)py";

// Damage done to a running replica's spool packs, the way a disk would do
// it. argv: index, spool, then the users whose body of UID 1 is (c) gone
// (its pack entry zeroed) and (d) one byte wrong.
constexpr char kTamperBodies[] = R"py(
import os, sqlite3, sys
db, spool, lost, corrupt = sys.argv[1:]
con = sqlite3.connect("file:" + db + "?mode=ro", uri=True)
def entry(user):
    guid = con.execute("SELECT guid FROM messages WHERE uid = 1 AND mailbox = "
                       "(SELECT id FROM mailboxes WHERE name = ?)", ("user/" + user,)).fetchone()[0]
    pack, offset, size = con.execute("SELECT pack, offset, size FROM blobs WHERE guid = ?",
                                     (guid,)).fetchone()
    return os.path.join(spool, "packs", "%08d.pack" % pack), offset, size
path, offset, size = entry(lost)
with open(path, "r+b") as f:
    f.seek(offset)
    f.write(b"\0" * (32 + size))
path, offset, size = entry(corrupt)
with open(path, "r+b") as f:
    f.seek(offset + 32 + 10)
    b = f.read(1)
    f.seek(offset + 32 + 10)
    f.write(bytes([b[0] ^ 0xff]))
)py";

// Every store ok in the coordinator's view: masters serving, replicas
// connected.
bool AllStoresOk(Cluster& c) {
  absl::StatusOr<coordpb::GetStatusReply> s = c.Status();
  if (!s.ok()) return false;
  for (const auto& st : s->stores()) {
    if (st.state() != "ok") return false;
  }
  return true;
}

// The mailbox lines of a check's output, by mailbox name.
std::map<std::string, std::string> DifferenceLines(const std::string& out) {
  std::map<std::string, std::string> lines;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    const size_t at = line.find(": mailbox ");
    if (at == absl::string_view::npos || absl::StrContains(line, "problem:")) continue;
    absl::string_view rest = line.substr(at + 10);
    lines[std::string(rest.substr(0, rest.find(' ')))] = std::string(line);
  }
  return lines;
}

TEST_CASE("check finds damage made behind the engine's back on a replica, --deep finds damaged "
          "bodies, --repair fixes all of it and the next check is clean",
          "[check]") {
  Cluster c({.net = "127.0.15", .hosts = 2, .slots_per_host = 1});
  const auto results = c.Deliver(WorkloadEml(2000), 0, 160, 4, 0);
  REQUIRE(Cluster::Count(results, 250) == 160);
  REQUIRE(c.WaitCaughtUp(absl::Seconds(60)));

  RunResult clean = c.Replctl({"check", "--all"});
  INFO(clean.out << clean.err);
  REQUIRE(clean.exit == 0);
  CHECK(absl::StrContains(clean.out, "store 1: consistent"));

  // Four users with at least two messages each.
  std::map<std::string, int> per_user;
  for (const auto& [i, o] : results) ++per_user[o.user];
  std::vector<std::string> users;
  for (const auto& [u, n] : per_user) {
    if (n >= 2 && users.size() < 4) users.push_back(u);
  }
  REQUIRE(users.size() == 4);
  const configpb::DevStore& store = c.store(1);
  const configpb::DevSlot& replica = c.slot(store.replica_slot_ids(0));
  REQUIRE(c.Stop(replica.host(), absl::Seconds(30)));
  const std::string index = replica.meta() + "/index.sqlite3";
  RunResult tamper = Run({"/usr/bin/python3", "-c", kTamperIndex, index, users[0], users[1]});
  INFO(tamper.out << tamper.err);
  REQUIRE(tamper.exit == 0);
  c.Restart(replica.host());
  REQUIRE(WaitFor([&] { return AllStoresOk(c); }, absl::Seconds(60), absl::Milliseconds(50)));
  tamper = Run({"/usr/bin/python3", "-c", kTamperBodies, index, replica.spool(), users[2],
                users[3]});
  INFO(tamper.out << tamper.err);
  REQUIRE(tamper.exit == 0);

  // The fast path compares the digests each index keeps with its mailbox
  // rows: it sees the stray mailbox (a row of its own).
  RunResult fast = c.Replctl({"check", "--store", "1"});
  INFO(fast.out << fast.err);
  CHECK(fast.exit == 1);
  CHECK(absl::StrContains(fast.out, "store 1: DIFFERS"));
  auto lines = DifferenceLines(fast.out);
  REQUIRE(lines.contains("user/stray"));
  CHECK(absl::StrContains(lines["user/stray"], "not on master"));

  // --deep recomputes digests from the rows and hashes every body: exactly
  // the five damaged mailboxes, each with the right kind of difference.
  RunResult deep = c.Replctl({"check", "--all", "--deep"});
  INFO(deep.out << deep.err);
  CHECK(deep.exit == 1);
  lines = DifferenceLines(deep.out);
  CHECK(lines.size() == 5);
  CHECK(absl::StrContains(lines["user/stray"], "not on master"));
  CHECK(absl::StrContains(lines["user/" + users[0]], "flags differ on UIDs 1"));
  CHECK(absl::StrContains(lines["user/" + users[1]], "missing UIDs 2"));
  CHECK(absl::StrContains(lines["user/" + users[2]], "body missing or damaged for UIDs 1"));
  CHECK(absl::StrContains(lines["user/" + users[3]], "body missing or damaged for UIDs 1"));

  // The result is in the coordinator.
  RunResult status = c.Replctl({"status"});
  CHECK(absl::StrContains(status.out, "DIFFERS"));

  RunResult repair = c.Replctl({"check", "--all", "--deep", "--repair"});
  INFO(repair.out << repair.err);
  CHECK(repair.exit == 0);
  CHECK(absl::StrContains(repair.out, "store 1: repaired"));
  CHECK(absl::StrContains(repair.out, "5 repaired, clean on re-check"));

  RunResult after = c.Replctl({"check", "--all", "--deep"});
  INFO(after.out << after.err);
  CHECK(after.exit == 0);
  CHECK(absl::StrContains(after.out, "store 1: consistent (deep)"));
  // The repaired replica serves the messages again, bodies included.
  for (const std::string& u : users) {
    apipb::Request fetch;
    fetch.mutable_fetch_body()->set_mailbox("user/" + u);
    fetch.mutable_fetch_body()->set_uid(1);
    auto body = c.Api(replica.slot_id(), fetch);
    INFO(u << ": " << body.status());
    CHECK(body.ok());
  }
  // And the master was never written to: its LSN is what delivery left.
  RunResult json = c.Replctl({"check", "--store", "1", "--json"});
  CHECK(json.exit == 0);
  CHECK(absl::StrContains(json.out, "\"result\": \"consistent\""));
}

TEST_CASE("a check while replicas lag far behind under load reports no divergence; a store "
          "whose master is down is reported unchecked (exit 2)",
          "[check]") {
  Cluster c({.net = "127.0.16", .hosts = 2, .slots_per_host = 1});
  // The replica stops taking records while mail arrives.
  const configpb::DevStore& store = c.store(1);
  const std::string replica_host = c.slot(store.replica_slot_ids(0)).host();
  c.Signal(replica_host, SIGSTOP);
  auto first = c.Deliver(WorkloadEml(2000), 0, 200, 4, 0);
  REQUIRE(Cluster::Count(first, 250) == 200);
  c.Signal(replica_host, SIGCONT);
  // Checks while more mail arrives and the replicas catch up.
  auto delivery = c.StartDelivery(WorkloadEml(2000), 200, 400, 4, 0, c.dir() + "/record");
  for (int round = 0; round < 3; ++round) {
    RunResult r = c.Replctl({"check", "--all"});
    INFO(r.out << r.err);
    CHECK(r.exit == 0);
    CHECK_FALSE(absl::StrContains(r.out, "DIFFERS"));
  }
  REQUIRE(delivery->Wait(absl::Seconds(120)).has_value());

  c.Signal(replica_host, SIGKILL);
  RunResult down = c.Replctl({"check", "--all"});
  INFO(down.out << down.err);
  CHECK(down.exit == 2);
  CHECK(absl::StrContains(down.out, "UNCHECKED"));
}

}  // namespace
}  // namespace mailrepl::testing
