// The replica side of the storage engine: records from a master keep their
// LSNs and epochs, stale epochs and gaps are refused, a record that does not
// apply quarantines only its mailbox, and a mailbox repair lifts it.
#include <catch2/catch.hpp>

#include "proto/log.pb.h"
#include "store/log_reader.h"
#include "store/verify.h"
#include "test/test_util.h"

namespace mailrepl {
namespace {

using testing::NewSlot;
using testing::RecordsFrom;
using testing::TempDir;
using testing::TestMessage;

TEST_CASE("a replica fed the master's records reaches the master's digest", "[replica]") {
  TempDir m, r;
  auto master = NewSlot(m.path());
  auto replica = NewSlot(r.path());
  REQUIRE(master->BeginEpoch(1).ok());
  REQUIRE(master->CreateMailbox("user/a").ok());
  REQUIRE(master->CreateMailbox("user/a/Sent").ok());
  for (int i = 0; i < 10; ++i) {
    REQUIRE(master->Append({.mailbox = "user/a", .body = TestMessage(i, 2000)}).ok());
  }
  REQUIRE(master->Copy("user/a", {1, 2}, "user/a/Sent").ok());
  REQUIRE(master->SetFlags("user/a", {3}, FlagOp::kAdd, {"\\Seen"}).ok());
  REQUIRE(master->AdminNote("test", "local records stay local").ok());
  REQUIRE(master->Expunge("user/a", {4}).ok());
  REQUIRE(master->RenameMailbox("user/a/Sent", "user/a/Sent Items").ok());
  auto records = RecordsFrom(m.path(), 1);
  REQUIRE(replica->AppendReplicated(records).ok());
  CHECK(replica->SlotDigest() == master->SlotDigest());
  CHECK(replica->last_lsn() == master->last_lsn());
  CHECK(replica->epoch() == 1);
  CHECK(replica->FetchBody("user/a/Sent Items", 2).value() == TestMessage(1, 2000));
  CHECK(VerifySlot(*replica).value().clean());
}

TEST_CASE("a replica refuses gaps, stale epochs and local record types, writing nothing",
          "[replica]") {
  TempDir m, r;
  auto master = NewSlot(m.path());
  auto replica = NewSlot(r.path());
  REQUIRE(master->BeginEpoch(5).ok());
  REQUIRE(master->CreateMailbox("user/a").ok());
  REQUIRE(master->Append({.mailbox = "user/a", .body = TestMessage(1)}).ok());
  auto records = RecordsFrom(m.path(), 1);
  REQUIRE(records.size() == 3);
  // A gap.
  CHECK(replica->AppendReplicated({records[1], records[2]}).code() ==
        absl::StatusCode::kFailedPrecondition);
  REQUIRE(replica->AppendReplicated({records[0], records[1]}).ok());
  // A stale epoch.
  LogRecord stale = records[2];
  stale.epoch = 4;
  CHECK(replica->AppendReplicated({stale}).code() == absl::StatusCode::kFailedPrecondition);
  // A local record type.
  LogRecord local = records[2];
  local.type = RecordType::kAdminNote;
  CHECK(replica->AppendReplicated({local}).code() == absl::StatusCode::kInvalidArgument);
  // A body that does not hash to its GUID.
  logpb::Append p;
  REQUIRE(p.ParseFromString(records[2].payload));
  p.set_body(p.body() + "tampered");
  LogRecord tampered = records[2];
  tampered.payload = p.SerializeAsString();
  CHECK(replica->AppendReplicated({tampered}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(replica->last_lsn() == 2);
  REQUIRE(replica->AppendReplicated({records[2]}).ok());
  CHECK(replica->SlotDigest() == master->SlotDigest());
}

TEST_CASE("a record that does not apply quarantines its mailbox and the stream goes on",
          "[replica][quarantine]") {
  TempDir m;
  auto master = NewSlot(m.path());
  REQUIRE(master->CreateMailbox("user/a").ok());
  REQUIRE(master->CreateMailbox("user/b").ok());
  REQUIRE(master->Append({.mailbox = "user/a", .body = TestMessage(1)}).ok());
  REQUIRE(master->Append({.mailbox = "user/b", .body = TestMessage(2)}).ok());
  REQUIRE(master->Append({.mailbox = "user/a", .body = TestMessage(3)}).ok());
  TempDir r2;
  auto replica2 = NewSlot(r2.path());
  auto records = RecordsFrom(m.path(), 1);
  // Damage the stream as a bug would: the create of user/a arrives as the
  // create of an unrelated mailbox, so user/a's appends cannot apply.
  logpb::CreateMailbox other;
  other.set_mailbox_id("00000000000000000000000000000001");
  other.set_name("user/zzz");
  other.set_uidvalidity(1);
  LogRecord fake = records[0];
  fake.payload = other.SerializeAsString();
  std::vector<LogRecord> damaged = records;
  damaged[0] = fake;
  REQUIRE(replica2->AppendReplicated(damaged).ok());
  auto q = replica2->Quarantined();
  REQUIRE(q.size() == 1);
  CHECK(q[0].mailbox_id == RecordMailboxId(records[0]));
  CHECK_THAT(q[0].reason, Catch::Contains("no such mailbox"));
  // user/b got its message in spite of the broken mailbox.
  CHECK(replica2->GetMailbox("user/b").value().messages == 1);

  // A repair with the master's state of user/a lifts the quarantine.
  auto mb = master->GetMailbox("user/a").value();
  logpb::RepairMailbox repair;
  repair.set_mailbox_id(mb.id);
  repair.mutable_mailbox()->set_mailbox_id(mb.id);
  repair.mutable_mailbox()->set_name(mb.name);
  repair.mutable_mailbox()->set_uidvalidity(mb.uidvalidity);
  repair.mutable_mailbox()->set_last_uid(mb.last_uid);
  repair.mutable_mailbox()->set_highest_modseq(mb.highest_modseq);
  std::vector<std::string> bodies;
  auto master_msgs = master->ListMessages("user/a", true);
  REQUIRE(master_msgs.ok());
  for (const auto& msg : *master_msgs) {
    auto* sm = repair.add_messages();
    sm->set_uid(msg.uid);
    sm->set_guid(msg.guid);
    sm->set_size(msg.size);
    sm->set_internal_date(msg.internal_date);
    sm->set_modseq(msg.modseq);
    bodies.push_back(master->ReadBlob(msg.guid).value());
  }
  REQUIRE(replica2->RepairMailbox(repair.SerializeAsString(), bodies).ok());
  CHECK(replica2->Quarantined().empty());
  CHECK(replica2->GetMailbox("user/a").value().MailboxDigest() == mb.MailboxDigest());
  // The stray mailbox is removed by a deleting repair.
  auto stray = replica2->GetMailbox("user/zzz").value();
  logpb::RepairMailbox del;
  del.set_mailbox_id(stray.id);
  del.set_deleted(true);
  REQUIRE(replica2->RepairMailbox(del.SerializeAsString(), {}).ok());
  CHECK(replica2->SlotDigest() == master->SlotDigest());
  // Repairs are local records: the replica's LSN still matches the master's,
  // and a rebuilt index reproduces the repaired state.
  CHECK(replica2->last_lsn() == master->last_lsn());
  Digest d = replica2->SlotDigest();
  replica2.reset();
  REQUIRE(ReconstructIndex(SlotPaths::Under(r2.path()), {}).ok());
  CHECK(testing::ReopenSlot(r2.path())->SlotDigest() == d);
}

TEST_CASE("a replicated record with a flag that is empty or holds a space does not apply, and "
          "quarantines its mailbox, whose digest stays that of its rows",
          "[replica][quarantine]") {
  TempDir m, r;
  auto master = NewSlot(m.path());
  REQUIRE(master->CreateMailbox("user/a").ok());
  REQUIRE(master->CreateMailbox("user/b").ok());
  REQUIRE(master->Append({.mailbox = "user/a", .body = TestMessage(1), .flags = {"\\Seen"}}).ok());
  REQUIRE(master->Append({.mailbox = "user/b", .body = TestMessage(2)}).ok());
  REQUIRE(master->SetFlags("user/b", {1}, FlagOp::kAdd, {"$Label"}).ok());
  auto records = RecordsFrom(m.path(), 1);
  REQUIRE(records.size() == 5);
  // A row keeps flags joined with spaces: "" and "two words" would read
  // back as other flags than the digest was made of.
  logpb::Append append;
  REQUIRE(append.ParseFromString(records[2].payload));
  append.add_flags("");
  records[2].payload = append.SerializeAsString();
  logpb::SetFlags flags;
  REQUIRE(flags.ParseFromString(records[4].payload));
  flags.mutable_changes(0)->add_flags("two words");
  records[4].payload = flags.SerializeAsString();
  auto replica = NewSlot(r.path());
  REQUIRE(replica->AppendReplicated(records).ok());
  auto q = replica->Quarantined();
  REQUIRE(q.size() == 2);
  for (const Quarantine& one : q) {
    CHECK_THAT(one.reason, Catch::Contains("a flag is empty or holds a space"));
  }
  CHECK(replica->GetMailbox("user/a").value().messages == 0);
  CHECK(replica->ListMessages("user/b", true).value().at(0).flags.empty());
  // What was applied is what a rebuilt index holds.
  const Digest d = replica->SlotDigest();
  replica.reset();
  REQUIRE(ReconstructIndex(SlotPaths::Under(r.path()), {}).ok());
  CHECK(testing::ReopenSlot(r.path())->SlotDigest() == d);
}

TEST_CASE("a mailbox repair that fails part way leaves the mailbox as it was, in memory as on "
          "disk, and quarantines it when replayed",
          "[replica][quarantine]") {
  TempDir m, r;
  auto master = NewSlot(m.path());
  REQUIRE(master->CreateMailbox("user/a").ok());
  REQUIRE(master->Append({.mailbox = "user/a", .body = TestMessage(1)}).ok());
  REQUIRE(master->Append({.mailbox = "user/a", .body = TestMessage(2)}).ok());
  auto replica = NewSlot(r.path());
  REQUIRE(replica->AppendReplicated(RecordsFrom(m.path(), 1)).ok());
  const MailboxInfo before = replica->GetMailbox("user/a").value();
  // A repair listing UID 1 twice: its second row breaks the table's key
  // after the mailbox's old rows are gone.
  logpb::RepairMailbox repair;
  repair.set_mailbox_id(before.id);
  repair.mutable_mailbox()->set_mailbox_id(before.id);
  repair.mutable_mailbox()->set_name(before.name);
  repair.mutable_mailbox()->set_uidvalidity(before.uidvalidity);
  repair.mutable_mailbox()->set_last_uid(2);
  const MessageInfo first = replica->ListMessages("user/a", true).value().at(0);
  for (int i = 0; i < 2; ++i) {
    auto* sm = repair.add_messages();
    sm->set_uid(1);
    sm->set_guid(first.guid);
    sm->set_size(first.size);
  }
  // Durable in the log; the index refuses it (and the slot wants reopening).
  replica->RepairMailbox(repair.SerializeAsString(), {}).IgnoreError();
  replica.reset();
  // Replayed with quarantine, as recovery does.
  replica = testing::ReopenSlot(r.path());
  auto q = replica->Quarantined();
  REQUIRE(q.size() == 1);
  CHECK(q[0].mailbox_id == before.id);
  auto after = replica->GetMailbox("user/a");
  REQUIRE(after.ok());
  CHECK(after->MailboxDigest() == before.MailboxDigest());
  CHECK(after->messages == 2);
  CHECK(replica->SlotDigest() == master->SlotDigest());
  const Digest d = replica->SlotDigest();
  replica.reset();
  CHECK(testing::ReopenSlot(r.path())->SlotDigest() == d);
}

}  // namespace
}  // namespace mailrepl
