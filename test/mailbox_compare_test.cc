// Mailbox comparison (syncclient/mailbox_compare.h), what `replctl check`
// reports and repairs from: a mailbox's state read from an index, its
// digest recomputed from the rows, and the exact differences between a
// master's and a replica's state of one mailbox.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "common/sqlite.h"
#include "store/index.h"
#include "syncclient/mailbox_compare.h"
#include "test/test_util.h"

namespace mailrepl::sync {
namespace {

using testing::NewSlot;
using testing::RecordsFrom;
using testing::TempDir;
using testing::TestMessage;

constexpr char kId[] = "0123456789abcdef0123456789abcdef";

logpb::SnapshotMessage Msg(uint32_t uid, const std::string& guid, uint64_t size = 100,
                           std::vector<std::string> flags = {}, uint64_t modseq = 1,
                           bool expunged = false) {
  logpb::SnapshotMessage m;
  m.set_mailbox_id(kId);
  m.set_uid(uid);
  m.set_guid(guid);
  m.set_size(size);
  m.set_internal_date(1700000000);
  for (const std::string& f : flags) m.add_flags(f);
  m.set_modseq(modseq);
  m.set_expunged(expunged);
  return m;
}

// A mailbox named `name` with messages UID 1..n (MODSEQ = UID).
logpb::RepairMailbox State(const std::string& name = "user/alice", int n = 3) {
  logpb::RepairMailbox r;
  r.set_mailbox_id(kId);
  logpb::SnapshotMailbox* mb = r.mutable_mailbox();
  mb->set_mailbox_id(kId);
  mb->set_name(name);
  mb->set_uidvalidity(1700000000);
  mb->set_last_uid(n);
  mb->set_highest_modseq(n);
  for (int uid = 1; uid <= n; ++uid) {
    *r.add_messages() = Msg(uid, absl::StrCat("guid-", uid), 100 + uid, {}, uid);
  }
  return r;
}

logpb::RepairMailbox Deleted() {
  logpb::RepairMailbox r;
  r.set_mailbox_id(kId);
  r.set_deleted(true);
  return r;
}

std::vector<uint32_t> Uids(const google::protobuf::RepeatedField<uint32_t>& f) {
  return {f.begin(), f.end()};
}

using U = std::vector<uint32_t>;

TEST_CASE("equal mailbox states have no difference", "[mailbox_compare]") {
  checkpb::MailboxDifference d = CompareMailboxes(State(), State());
  CHECK(d.kind().empty());
  CHECK(d.mailbox_id() == kId);
  CHECK(d.name() == "user/alice");
  CHECK(d.detail().empty());
  CHECK(d.missing_uids().empty());
  CHECK(d.extra_uids().empty());
  CHECK(d.flag_uids().empty());
  CHECK(d.body_uids().empty());
}

TEST_CASE("a mailbox deleted on both sides has no difference", "[mailbox_compare]") {
  CHECK(CompareMailboxes(Deleted(), Deleted()).kind().empty());
}

TEST_CASE("a mailbox the replica lacks is missing on the replica, named by the master",
          "[mailbox_compare]") {
  checkpb::MailboxDifference d = CompareMailboxes(State(), Deleted());
  CHECK(d.kind() == "missing on replica");
  CHECK(d.name() == "user/alice");
  CHECK(d.mailbox_id() == kId);
  CHECK(d.missing_uids().empty());  // the whole mailbox, not message by message
}

TEST_CASE("a mailbox only the replica has is not on the master, named by the replica",
          "[mailbox_compare]") {
  checkpb::MailboxDifference d = CompareMailboxes(Deleted(), State("user/bob"));
  CHECK(d.kind() == "not on master");
  CHECK(d.name() == "user/bob");
  CHECK(d.mailbox_id() == kId);
  CHECK(d.extra_uids().empty());
}

TEST_CASE("a mailbox renamed on one side differs in its attributes, naming both names",
          "[mailbox_compare]") {
  checkpb::MailboxDifference d = CompareMailboxes(State("user/alice/Sent"), State("user/alice/sent"));
  CHECK(d.kind() == "attributes");
  CHECK(d.name() == "user/alice/Sent");
  CHECK(d.detail() == "name user/alice/Sent vs user/alice/sent");
  CHECK(d.missing_uids().empty());
  CHECK(d.extra_uids().empty());
  CHECK(d.flag_uids().empty());
}

TEST_CASE("names that share a prefix are different names: a mailbox below another is not "
          "the same mailbox as its parent",
          "[mailbox_compare]") {
  checkpb::MailboxDifference d =
      CompareMailboxes(State("user/alice/Archive/2023"), State("user/alice/Archive"));
  CHECK(d.kind() == "attributes");
  CHECK(d.detail() == "name user/alice/Archive/2023 vs user/alice/Archive");
  // And the other way round.
  d = CompareMailboxes(State("user/alice"), State("user/alice/INBOX"));
  CHECK(d.kind() == "attributes");
  CHECK(d.detail() == "name user/alice vs user/alice/INBOX");
}

TEST_CASE("differing UIDVALIDITY, last UID and highest MODSEQ are each named, in that order",
          "[mailbox_compare]") {
  logpb::RepairMailbox replica = State();
  replica.mutable_mailbox()->set_uidvalidity(1700000001);
  replica.mutable_mailbox()->set_last_uid(4);
  replica.mutable_mailbox()->set_highest_modseq(9);
  checkpb::MailboxDifference d = CompareMailboxes(State(), replica);
  CHECK(d.kind() == "attributes");
  CHECK(d.detail() ==
        "uidvalidity 1700000000 vs 1700000001, last uid 3 vs 4, highest modseq 3 vs 9");
}

TEST_CASE("a message the replica lacks is a missing UID; one only the replica has is an "
          "extra UID",
          "[mailbox_compare]") {
  logpb::RepairMailbox replica = State();
  replica.mutable_messages()->DeleteSubrange(1, 1);  // UID 2
  *replica.add_messages() = Msg(7, "guid-7");
  checkpb::MailboxDifference d = CompareMailboxes(State(), replica);
  CHECK(d.kind() == "messages");
  CHECK(Uids(d.missing_uids()) == U{2});
  CHECK(Uids(d.extra_uids()) == U{7});
  CHECK(d.flag_uids().empty());
  CHECK(d.detail().empty());
}

TEST_CASE("another message under the same UID (GUID or size differs) is both missing and "
          "extra",
          "[mailbox_compare]") {
  logpb::RepairMailbox replica = State();
  replica.mutable_messages(0)->set_guid("another-guid");
  replica.mutable_messages(2)->set_size(999);
  checkpb::MailboxDifference d = CompareMailboxes(State(), replica);
  CHECK(d.kind() == "messages");
  CHECK(Uids(d.missing_uids()) == U{1, 3});
  CHECK(Uids(d.extra_uids()) == U{1, 3});
  CHECK(d.flag_uids().empty());
}

TEST_CASE("the same message with other flags, MODSEQ or expunged state is a flag difference",
          "[mailbox_compare]") {
  logpb::RepairMailbox master = State("user/alice", 4);
  logpb::RepairMailbox replica = master;
  replica.mutable_messages(0)->add_flags("\\Seen");
  replica.mutable_messages(1)->set_modseq(42);
  replica.mutable_messages(2)->set_expunged(true);
  checkpb::MailboxDifference d = CompareMailboxes(master, replica);
  CHECK(d.kind() == "messages");
  CHECK(Uids(d.flag_uids()) == U{1, 2, 3});
  CHECK(d.missing_uids().empty());
  CHECK(d.extra_uids().empty());
}

TEST_CASE("attribute and message differences together are reported as both kinds",
          "[mailbox_compare]") {
  logpb::RepairMailbox replica = State("user/alice/old");
  replica.mutable_messages()->RemoveLast();
  checkpb::MailboxDifference d = CompareMailboxes(State(), replica);
  CHECK(d.kind() == "attributes,messages");
  CHECK(d.detail() == "name user/alice vs user/alice/old");
  CHECK(Uids(d.missing_uids()) == U{3});
}

TEST_CASE("differences come out in ascending UID order whatever the order of the replica's "
          "rows",
          "[mailbox_compare]") {
  logpb::RepairMailbox master = State("user/alice", 6);
  logpb::RepairMailbox replica;
  replica.set_mailbox_id(kId);
  *replica.mutable_mailbox() = master.mailbox();
  // Reversed, with UIDs 2 and 5 missing, 4 flagged and 9, 8 extra.
  *replica.add_messages() = Msg(9, "guid-9");
  *replica.add_messages() = Msg(8, "guid-8");
  for (int i = 5; i >= 0; --i) {
    if (i == 1 || i == 4) continue;
    logpb::SnapshotMessage m = master.messages(i);
    if (m.uid() == 4) m.add_flags("\\Flagged");
    *replica.add_messages() = m;
  }
  checkpb::MailboxDifference d = CompareMailboxes(master, replica);
  CHECK(d.kind() == "messages");
  CHECK(Uids(d.missing_uids()) == U{2, 5});
  CHECK(Uids(d.extra_uids()) == U{8, 9});
  CHECK(Uids(d.flag_uids()) == U{4});
}

// --- against a real index ---

TEST_CASE("the state of a mailbox the index does not have is deleted, with no messages",
          "[mailbox_compare][index]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/alice").ok());
  slot->WaitApplied();
  auto ix = Index::OpenReadOnly(slot->paths().index_file());
  REQUIRE(ix.ok());
  absl::StatusOr<logpb::RepairMailbox> s = MailboxState(**ix, kId);
  REQUIRE(s.ok());
  CHECK(s->deleted());
  CHECK(s->mailbox_id() == kId);
  CHECK_FALSE(s->has_mailbox());
  CHECK(s->messages().empty());
}

TEST_CASE("a mailbox's state holds its attributes and every row in UID order, expunged ones "
          "included, and its row digest is its running digest",
          "[mailbox_compare][index]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/alice").ok());
  for (int i = 1; i <= 4; ++i) {
    REQUIRE(slot->Append({.mailbox = "user/alice", .body = TestMessage(i)}).ok());
  }
  REQUIRE(slot->SetFlags("user/alice", {3}, FlagOp::kAdd, {"\\Seen"}).ok());
  REQUIRE(slot->Expunge("user/alice", {2}).ok());
  REQUIRE(slot->RenameMailbox("user/alice", "user/alice2").ok());
  slot->WaitApplied();
  auto ix = Index::OpenReadOnly(slot->paths().index_file());
  REQUIRE(ix.ok());
  const MailboxInfo* mb = (*ix)->FindMailboxByName("user/alice2");
  REQUIRE(mb != nullptr);

  absl::StatusOr<logpb::RepairMailbox> s = MailboxState(**ix, mb->id);
  REQUIRE(s.ok());
  CHECK_FALSE(s->deleted());
  CHECK(s->mailbox_id() == mb->id);
  CHECK(s->mailbox().name() == "user/alice2");
  CHECK(s->mailbox().uidvalidity() == mb->uidvalidity);
  CHECK(s->mailbox().last_uid() == 4);
  CHECK(s->mailbox().highest_modseq() == mb->highest_modseq);
  REQUIRE(s->messages_size() == 4);
  for (int i = 0; i < 4; ++i) CHECK(s->messages(i).uid() == static_cast<uint32_t>(i + 1));
  CHECK(s->messages(1).expunged());
  CHECK(std::vector<std::string>(s->messages(2).flags().begin(), s->messages(2).flags().end()) ==
        std::vector<std::string>{"\\Seen"});
  CHECK(CompareMailboxes(*s, *s).kind().empty());

  absl::StatusOr<Digest> rows = RowDigest(**ix, *mb);
  REQUIRE(rows.ok());
  CHECK(*rows == mb->MailboxDigest());
}

TEST_CASE("a replica row changed or lost behind the engine's back shows in the row digest, "
          "not the running one, and in the comparison",
          "[mailbox_compare][index]") {
  TempDir m, r;
  auto master = NewSlot(m.path());
  auto replica = NewSlot(r.path());
  REQUIRE(master->CreateMailbox("user/alice").ok());
  for (int i = 1; i <= 3; ++i) {
    REQUIRE(master->Append({.mailbox = "user/alice", .body = TestMessage(i)}).ok());
  }
  master->WaitApplied();
  REQUIRE(replica->AppendReplicated(RecordsFrom(m.path(), 1)).ok());
  replica->WaitApplied();
  const std::string replica_index = replica->paths().index_file();
  replica.reset();  // closes the index before the surgery

  auto master_ix = Index::OpenReadOnly(master->paths().index_file());
  REQUIRE(master_ix.ok());
  const MailboxInfo* mmb = (*master_ix)->FindMailboxByName("user/alice");
  REQUIRE(mmb != nullptr);
  {
    // An untouched replica equals its master.
    auto ix = Index::OpenReadOnly(replica_index);
    REQUIRE(ix.ok());
    const MailboxInfo* rmb = (*ix)->FindMailbox(mmb->id);
    REQUIRE(rmb != nullptr);
    CHECK(RowDigest(**ix, *rmb).value() == rmb->MailboxDigest());
    CHECK(CompareMailboxes(MailboxState(**master_ix, mmb->id).value(),
                           MailboxState(**ix, mmb->id).value())
              .kind()
              .empty());
  }
  {
    auto db = sqlite::Database::Open(replica_index, false);
    REQUIRE(db.ok());
    REQUIRE((*db)->Exec("UPDATE messages SET modseq = modseq + 100 WHERE uid = 1").ok());
    REQUIRE((*db)->Exec("DELETE FROM messages WHERE uid = 3").ok());
  }
  auto ix = Index::OpenReadOnly(replica_index);
  REQUIRE(ix.ok());
  const MailboxInfo* rmb = (*ix)->FindMailbox(mmb->id);
  REQUIRE(rmb != nullptr);
  CHECK(rmb->MailboxDigest() == mmb->MailboxDigest());  // the running digest saw nothing
  CHECK_FALSE(RowDigest(**ix, *rmb).value() == rmb->MailboxDigest());
  checkpb::MailboxDifference d =
      CompareMailboxes(MailboxState(**master_ix, mmb->id).value(), MailboxState(**ix, mmb->id).value());
  CHECK(d.kind() == "messages");
  CHECK(Uids(d.flag_uids()) == U{1});
  CHECK(Uids(d.missing_uids()) == U{3});
  CHECK(d.extra_uids().empty());
}

}  // namespace
}  // namespace mailrepl::sync
