// The sync_client and sync_server binaries, end to end: the test writes a
// master slot in-process while a real sync_client reads it and a real
// sync_server applies what it sends to a replica slot. Streaming (rolling
// and catch-up, compressed or not), body reuse by GUID, snapshot bootstrap
// and retention, minor-version interoperability, quarantine and state-based
// resync, signals, and log-file replay. Faults are in sync_faults_test.cc.
#include <signal.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "test/sync_harness.h"

namespace mailrepl {
namespace {

using testing::AppendMessages;
using testing::ClientRun;
using testing::IndexState;
using testing::ParseClientOutput;
using testing::Process;
using testing::ServerProcess;
using testing::SqlExec;
using testing::SyncFixture;
using testing::WaitFor;

// Generous: waits end as soon as their condition holds, and a busy disk can
// stall syncfs (snapshot import) for seconds.
constexpr absl::Duration kSyncTimeout = absl::Seconds(60);

// The id of a mailbox of a slot open in this process.
std::string MailboxId(Slot& slot, const std::string& name) {
  auto mb = slot.GetMailbox(name);
  REQUIRE(mb.ok());
  return mb->id;
}

TEST_CASE("a rolling client keeps the replica at the master's digest while the master appends",
          "[sync]") {
  const bool compress = GENERATE(false, true);
  INFO("compress " << compress);
  SyncFixture f;
  REQUIRE(f.master->BeginEpoch(1).ok());
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  REQUIRE(f.master->CreateMailbox("user/b").ok());
  ServerProcess server(f.replica_dir, f.secret_file);
  std::vector<std::string> args = {"-r", "--stats"};
  if (compress) args.push_back("-z");
  auto client = f.StartClient(server, args);
  for (int round = 0; round < 4; ++round) {
    AppendMessages(*f.master, "user/a", round * 100, 25, 2000);
    AppendMessages(*f.master, "user/b", round * 100 + 50, 10, 3000);
    REQUIRE(
        f.master
            ->SetFlags("user/a", {static_cast<uint32_t>(round * 25 + 1)}, FlagOp::kAdd, {"\\Seen"})
            .ok());
    auto w = testing::WaitWatching([&] { return f.InSync(); }, kSyncTimeout,
                                   {client.get(), &server.process()});
    INFO(w.processes);
    REQUIRE(w.ok);
  }
  client->Signal(SIGTERM);
  REQUIRE(client->Wait(absl::Seconds(10)) == 0);
  ClientRun run = ParseClientOutput(*client);
  INFO(run.description);
  CHECK(run.stats["connects"] == 1);
  CHECK(run.stats["replica_acked_lsn"] == f.master->last_lsn());
  CHECK(run.stats["lag_lsns"] == 0);
  CHECK(run.stats["quarantined"] == 0);
  if (compress) {
    // Mail text compresses several times over.
    CHECK(run.stats["wire_bytes"] * 2 < run.stats["record_bytes"]);
  } else {
    CHECK(run.stats["wire_bytes"] > run.stats["record_bytes"]);
  }
  CHECK(f.Replica().messages["user/a"] == 100);
  CHECK(server.Stop() == 0);
}

TEST_CASE("a body copied to a second mailbox is not sent twice", "[sync]") {
  SyncFixture f;
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  REQUIRE(f.master->CreateMailbox("user/a/Archive").ok());
  REQUIRE(f.master->CreateMailbox("user/b").ok());
  ServerProcess server(f.replica_dir, f.secret_file);
  // Bootstrap first, so that the run below streams records (an empty
  // replica would get a snapshot).
  ClientRun boot = f.RunClient(server);
  REQUIRE(boot.code == 0);

  constexpr int kBodies = 12;
  AppendMessages(*f.master, "user/a", 0, kBodies, 1500);
  std::vector<uint32_t> uids;
  for (uint32_t uid = 1; uid <= kBodies; ++uid) uids.push_back(uid);
  REQUIRE(f.master->Copy("user/a", uids, "user/a/Archive").ok());
  // The same bytes delivered again to another user share the body too.
  AppendMessages(*f.master, "user/b", 0, 3, 1500);
  const uint64_t copies = kBodies + 3;

  ClientRun run = f.RunClient(server, {"--stats"});
  INFO(run.description);
  REQUIRE(run.code == 0);
  CHECK(run.stats["bodies_sent"] == kBodies);
  CHECK(run.stats["bodies_skipped_by_guid"] >= copies);
  CHECK(run.stats["snapshots"] == 0);
  CHECK(f.InSync());
  IndexState r = f.Replica();
  CHECK(r.messages["user/a/Archive"] == kBodies);
  CHECK(r.messages["user/b"] == 3);
  CHECK(server.Stop() == 0);
}

TEST_CASE("an empty replica is bootstrapped from a snapshot, then follows the log", "[sync]") {
  SyncFixture f;
  REQUIRE(f.master->BeginEpoch(1).ok());
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  REQUIRE(f.master->CreateMailbox("user/a/Sent").ok());
  AppendMessages(*f.master, "user/a", 0, 30, 1200);
  REQUIRE(f.master->Copy("user/a", {1, 2, 3}, "user/a/Sent").ok());
  REQUIRE(f.master->Expunge("user/a", {4}).ok());
  REQUIRE(f.master->SetQuota("a", 10 << 20, 1000).ok());
  ServerProcess server(f.replica_dir, f.secret_file);
  auto client = f.StartClient(server, {"-r", "--stats"});
  {
    auto w = testing::WaitWatching([&] { return f.InSync(); }, kSyncTimeout,
                                   {client.get(), &server.process()});
    INFO(w.processes);
    REQUIRE(w.ok);
  }
  const uint64_t snapshot_lsn = f.master->last_lsn();
  AppendMessages(*f.master, "user/a", 100, 20, 1200);
  REQUIRE(f.master->SetFlags("user/a", {1, 2}, FlagOp::kAdd, {"\\Flagged"}).ok());
  {
    auto w = testing::WaitWatching([&] { return f.InSync(); }, kSyncTimeout,
                                   {client.get(), &server.process()});
    INFO(w.processes);
    REQUIRE(w.ok);
  }
  client->Signal(SIGTERM);
  REQUIRE(client->Wait(absl::Seconds(10)) == 0);
  ClientRun run = ParseClientOutput(*client);
  INFO(run.description);
  CHECK(run.stats["snapshots"] == 1);
  CHECK(run.stats["connects"] == 1);
  // 30 bodies for the snapshot (on a quiet master, recent bodies may still
  // be only in its log, not in its spool), 20 in records.
  CHECK(run.stats["bodies_sent"] == 50);
  // Everything after the snapshot came as records.
  CHECK(run.stats["records_sent"] == f.master->last_lsn() - snapshot_lsn);
  CHECK(f.Replica().lsn == f.master->last_lsn());
  CHECK(server.Stop() == 0);
}

TEST_CASE("log retention on the master past the replica's LSN forces a snapshot", "[sync]") {
  SlotOptions small;
  small.segment_bytes = 8 << 10;  // many segments
  SyncFixture f(small);
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  AppendMessages(*f.master, "user/a", 0, 10, 2000);
  ServerProcess server(f.replica_dir, f.secret_file);
  REQUIRE(f.RunClient(server).code == 0);
  const uint64_t caught_up = f.Replica().lsn;
  REQUIRE(caught_up == f.master->last_lsn());

  AppendMessages(*f.master, "user/a", 100, 40, 2000);
  auto dropped = f.master->DropLogBelow(f.master->last_lsn());
  REQUIRE(dropped.ok());
  REQUIRE(*dropped > 1);
  REQUIRE(f.master->log_start_lsn() > caught_up + 1);

  ClientRun run = f.RunClient(server, {"--stats"});
  INFO(run.description);
  REQUIRE(run.code == 0);
  CHECK(run.stats["snapshots"] == 1);
  CHECK(f.InSync());

  // The replica follows the log again from the snapshot on.
  AppendMessages(*f.master, "user/a", 200, 5, 2000);
  ClientRun after = f.RunClient(server, {"--stats"});
  INFO(after.description);
  REQUIRE(after.code == 0);
  CHECK(after.stats["snapshots"] == 0);
  CHECK(after.stats["records_sent"] == 5);
  CHECK(f.InSync());
  CHECK(server.Stop() == 0);
}

TEST_CASE("a peer one minor protocol version newer or older still replicates", "[sync]") {
  SyncFixture f;
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  AppendMessages(*f.master, "user/a", 0, 5);
  SECTION("the client is newer") {
    ServerProcess server(f.replica_dir, f.secret_file);
    ClientRun run = f.RunClient(server, {}, {"MAILREPL_PROTOCOL_MINOR=1"});
    INFO(run.description);
    CHECK(run.code == 0);
    CHECK(f.InSync());
    CHECK(server.Stop() == 0);
  }
  SECTION("the server is newer") {
    ServerProcess server(f.replica_dir, f.secret_file, 0, {"MAILREPL_PROTOCOL_MINOR=1"});
    ClientRun run = f.RunClient(server);
    INFO(run.description);
    CHECK(run.code == 0);
    CHECK(f.InSync());
    AppendMessages(*f.master, "user/a", 10, 5);
    ClientRun more = f.RunClient(server);
    CHECK(more.code == 0);
    CHECK(f.InSync());
    CHECK(server.Stop() == 0);
  }
}

TEST_CASE(
    "one mailbox that cannot apply is quarantined; the others keep replicating and "
    "a mailbox resync lifts it",
    "[sync]") {
  SyncFixture f;
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  REQUIRE(f.master->CreateMailbox("user/b").ok());
  AppendMessages(*f.master, "user/a", 0, 5);
  AppendMessages(*f.master, "user/b", 100, 5);
  const std::string a_id = MailboxId(*f.master, "user/a");
  {
    ServerProcess server(f.replica_dir, f.secret_file);
    REQUIRE(f.RunClient(server).code == 0);
    REQUIRE(f.InSync());
    REQUIRE(server.Stop() == 0);
  }
  // Behind the engine's back: the master's next UID for user/a is no longer
  // above the replica's last UID.
  SqlExec(f.replica_index(),
          absl::StrCat("UPDATE mailboxes SET last_uid = last_uid + 100 WHERE id = '", a_id, "'"));

  ServerProcess server(f.replica_dir, f.secret_file);
  auto client = f.StartClient(server, {"-r", "--stats"});
  AppendMessages(*f.master, "user/a", 10, 3);
  AppendMessages(*f.master, "user/b", 110, 3);
  {
    auto w = testing::WaitWatching([&] { return f.Replica().lsn == f.master->last_lsn(); },
                                   kSyncTimeout, {client.get(), &server.process()});
    INFO(w.processes);
    REQUIRE(w.ok);
  }
  IndexState r = f.Replica();
  REQUIRE(r.quarantined.size() == 1);
  CHECK(r.quarantined.begin()->second.name == "user/a");
  CHECK(r.messages["user/a"] == 5);
  CHECK(r.messages["user/b"] == 8);
  // The store keeps streaming for the other mailboxes.
  AppendMessages(*f.master, "user/b", 120, 4);
  {
    auto w = testing::WaitWatching([&] { return f.Replica().messages["user/b"] == 12; },
                                   kSyncTimeout, {client.get(), &server.process()});
    INFO(w.processes);
    REQUIRE(w.ok);
  }
  client->Signal(SIGTERM);
  REQUIRE(client->Wait(absl::Seconds(10)) == 0);
  ClientRun rolling = ParseClientOutput(*client);
  INFO(rolling.description);
  CHECK(rolling.stats["quarantined"] == 1);
  REQUIRE(rolling.quarantined.size() == 1);
  CHECK(absl::StartsWith(rolling.quarantined[0], "user/a "));
  CHECK(!f.InSync());

  ClientRun fix = f.RunClient(server, {"-m", "user/a", "--stats"});
  INFO(fix.description);
  CHECK(fix.code == 0);
  REQUIRE(fix.repaired.size() == 1);
  CHECK(absl::StartsWith(fix.repaired[0], "user/a "));
  r = f.Replica();
  CHECK(r.quarantined.empty());
  CHECK(r.messages["user/a"] == 8);
  CHECK(f.InSync());

  // Records for the mailbox apply again after the resync.
  AppendMessages(*f.master, "user/a", 20, 2);
  CHECK(f.RunClient(server).code == 0);
  CHECK(f.InSync());
  CHECK(server.Stop() == 0);
}

TEST_CASE("a state-based resync of one user repairs only the mailboxes that differ", "[sync]") {
  SyncFixture f;
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  REQUIRE(f.master->CreateMailbox("user/a/Sent").ok());
  REQUIRE(f.master->CreateMailbox("user/b").ok());
  AppendMessages(*f.master, "user/a", 0, 6);
  AppendMessages(*f.master, "user/a/Sent", 10, 3);
  AppendMessages(*f.master, "user/b", 20, 4);
  REQUIRE(f.master->SetFlags("user/a", {3}, FlagOp::kAdd, {"\\Seen"}).ok());
  const std::string a_id = MailboxId(*f.master, "user/a");
  {
    ServerProcess server(f.replica_dir, f.secret_file);
    REQUIRE(f.RunClient(server).code == 0);
    REQUIRE(f.InSync());
    REQUIRE(server.Stop() == 0);
  }
  const IndexState before = f.Replica();
  // Behind the engine's back: a lost message row and a changed flag.
  SqlExec(f.replica_index(),
          absl::StrCat("DELETE FROM messages WHERE mailbox = '", a_id, "' AND uid = 2"));
  SqlExec(f.replica_index(), absl::StrCat("UPDATE messages SET flags = '\\Flagged' WHERE "
                                          "mailbox = '",
                                          a_id, "' AND uid = 3"));
  REQUIRE(f.Replica().dump != before.dump);

  ServerProcess server(f.replica_dir, f.secret_file);
  SECTION("-u repairs the damaged mailbox and nothing else") {
    ClientRun run = f.RunClient(server, {"-u", "a", "--stats"});
    INFO(run.description);
    CHECK(run.code == 0);
    REQUIRE(run.repaired.size() == 1);
    CHECK(absl::StartsWith(run.repaired[0], "user/a "));
    CHECK(run.stats["wire_bytes"] > 0);
    CHECK(f.InSync());
    CHECK(f.Replica().lsn == before.lsn);

    ClientRun all = f.RunClient(server, {"-A", "--stats"});
    INFO(all.description);
    CHECK(all.code == 0);
    CHECK(all.repaired.empty());
    CHECK(f.InSync());
  }
  SECTION("-u of another user leaves the damage alone") {
    ClientRun run = f.RunClient(server, {"-u", "b", "--stats"});
    INFO(run.description);
    CHECK(run.code == 0);
    CHECK(run.repaired.empty());
    CHECK(!f.InSync());
  }
  CHECK(server.Stop() == 0);
}

TEST_CASE("SIGTERM ends a rolling client and the server with exit code 0", "[sync]") {
  SyncFixture f;
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  AppendMessages(*f.master, "user/a", 0, 3);
  auto server = std::make_unique<ServerProcess>(f.replica_dir, f.secret_file);
  auto client = f.StartClient(*server, {"-r"});
  REQUIRE(WaitFor([&] { return f.InSync(); }, kSyncTimeout));

  SECTION("a connected, idle rolling client") {
    const absl::Time start = absl::Now();
    client->Signal(SIGTERM);
    CHECK(client->Wait(absl::Seconds(10)) == 0);
    CHECK(absl::Now() - start < absl::Seconds(10));
    CHECK(server->Stop() == 0);
  }
  SECTION("a server with a connected client, then the client while it retries") {
    CHECK(server->Stop() == 0);
    CHECK(client->Running());  // it never exits on its own
    const absl::Time start = absl::Now();
    client->Signal(SIGTERM);
    CHECK(client->Wait(absl::Seconds(10)) == 0);
    CHECK(absl::Now() - start < absl::Seconds(10));
  }
}

TEST_CASE("-f replays the records of a leftover log segment", "[sync]") {
  SyncFixture f;
  REQUIRE(f.master->BeginEpoch(1).ok());
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  AppendMessages(*f.master, "user/a", 0, 20);
  REQUIRE(f.master->SetFlags("user/a", {5}, FlagOp::kAdd, {"\\Answered"}).ok());
  REQUIRE(f.master->AdminNote("test", "local records are not replayed").ok());
  const std::string leftover = f.dir.Sub("leftover.log");
  std::filesystem::copy_file(testing::LastSegment(f.master_dir), leftover);

  ServerProcess server(f.replica_dir, f.secret_file);
  ClientRun run = f.RunClient(server, {"-f", leftover, "--stats"});
  INFO(run.description);
  REQUIRE(run.code == 0);
  CHECK(run.stats["snapshots"] == 0);
  CHECK(run.stats["records_sent"] == f.master->last_lsn());
  CHECK(run.stats["wire_bytes"] > run.stats["record_bytes"]);
  CHECK(f.InSync());

  // Replaying it again sends nothing the replica has.
  ClientRun again = f.RunClient(server, {"-f", leftover, "--stats"});
  INFO(again.description);
  CHECK(again.code == 0);
  CHECK(again.stats["records_sent"] == 0);
  CHECK(f.InSync());
  CHECK(server.Stop() == 0);
}

TEST_CASE("-f replays a segment larger than the frame size limit", "[sync]") {
  SlotOptions big_segments;
  big_segments.segment_bytes = 256 << 20;
  SyncFixture f(big_segments);
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  // Over transport::kMaxFramePayload (65 MiB) of records in one file; default-sized
  // segments (64 MiB, plus up to one commit batch) get there too.
  AppendMessages(*f.master, "user/a", 0, 67, 1 << 20);
  const std::string leftover = f.dir.Sub("leftover.log");
  std::filesystem::copy_file(testing::LastSegment(f.master_dir), leftover);
  REQUIRE(testing::FileSize(leftover) > (66u << 20));

  ServerProcess server(f.replica_dir, f.secret_file);
  ClientRun run = f.RunClient(server, {"-f", leftover, "--stats"});
  INFO(run.description);
  REQUIRE(run.code == 0);
  CHECK(run.stats["records_sent"] == f.master->last_lsn());
  CHECK(f.InSync());
  CHECK(server.Stop() == 0);
}

}  // namespace
}  // namespace mailrepl
