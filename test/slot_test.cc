// Mail semantics of one slot: UIDs, GUIDs, mailboxes by immutable id
// (rename chains, re-used names, deletes), flags, quota, digests, epochs,
// snapshots and retention.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "common/sqlite.h"
#include "proto/log.pb.h"
#include "store/index.h"
#include "store/mailbox_name.h"
#include "store/snapshot.h"
#include "store/verify.h"
#include "test/test_util.h"

namespace mailrepl {
namespace {

using testing::NewSlot;
using testing::ReopenSlot;
using testing::TempDir;
using testing::TestMessage;

std::vector<std::string> Guids(Slot& slot, const std::string& mailbox) {
  std::vector<std::string> out;
  auto msgs = slot.ListMessages(mailbox, false);
  REQUIRE(msgs.ok());
  for (const auto& m : *msgs) out.push_back(m.guid);
  return out;
}

// The entries of a snapshot file.
std::vector<LogRecord> SnapshotEntries(const std::string& path) {
  const std::string data = ReadFile(path).value();
  std::vector<LogRecord> out;
  size_t pos = 0, consumed = 0;
  LogRecord r;
  while (pos < data.size()) {
    REQUIRE(DecodeRecord(absl::string_view(data).substr(pos), &r, &consumed) == DecodeStatus::kOk);
    out.push_back(r);
    pos += consumed;
  }
  return out;
}

// Writes entries as a snapshot file whose trailer agrees with them: the
// counts, and the digest their mailboxes, messages and quotas sum to (as a
// writer that believed them would make it).
void WriteSnapshotEntries(const std::string& path, std::vector<LogRecord> entries) {
  std::map<std::string, Digest> mailboxes;  // by id: attributes + messages
  std::map<std::string, Digest> quotas;
  uint64_t mailbox_entries = 0, message_entries = 0;
  std::string data;
  for (LogRecord& r : entries) {
    if (r.type == RecordType::kSnapshotMailbox) {
      logpb::SnapshotMailbox m;
      REQUIRE(m.ParseFromString(r.payload));
      mailboxes[m.mailbox_id()].Add(MailboxAttributesDigest(
          m.mailbox_id(), m.name(), m.uidvalidity(), m.last_uid(), m.highest_modseq()));
      ++mailbox_entries;
    } else if (r.type == RecordType::kSnapshotMessage) {
      logpb::SnapshotMessage m;
      REQUIRE(m.ParseFromString(r.payload));
      mailboxes[m.mailbox_id()].Add(
          MessageDigest(m.uid(), m.guid(), NormalizeFlags({m.flags().begin(), m.flags().end()}),
                        m.modseq(), m.expunged()));
      ++message_entries;
    } else if (r.type == RecordType::kSnapshotQuota) {
      logpb::SnapshotQuota q;
      REQUIRE(q.ParseFromString(r.payload));
      quotas[q.user()] = QuotaDigest(q.user(), q.storage_limit(), q.message_limit());
    } else if (r.type == RecordType::kSnapshotTrailer) {
      logpb::SnapshotTrailer t;
      REQUIRE(t.ParseFromString(r.payload));
      Digest slot;
      for (const auto& [id, d] : mailboxes) slot.Add(MailboxSlotDigest(id, d));
      for (const auto& [user, d] : quotas) slot.Add(d);
      t.set_mailboxes(mailbox_entries);
      t.set_messages(message_entries);
      t.set_slot_digest(slot.Bytes());
      r.payload = t.SerializeAsString();
    }
    EncodeRecord(r, &data);
  }
  REQUIRE(WriteFileAtomically(path, data).ok());
}

// Rebuilds the index from the log and returns the slot digest it gives.
Digest DigestAfterReconstruct(const std::string& dir) {
  auto report = ReconstructIndex(SlotPaths::Under(dir), {});
  REQUIRE(report.ok());
  return ReopenSlot(dir)->SlotDigest();
}

TEST_CASE("appends get strictly increasing UIDs and the SHA-1 of their bytes as GUID",
          "[slot]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/alice").ok());
  uint32_t last = 0;
  for (int i = 0; i < 5; ++i) {
    auto r = slot->Append({.mailbox = "user/alice", .body = TestMessage(i)});
    REQUIRE(r.ok());
    CHECK(r->uid > last);
    CHECK(r->guid == Sha1(TestMessage(i)));
    last = r->uid;
  }
  auto mb = slot->GetMailbox("user/alice").value();
  CHECK(mb.last_uid == 5);
  CHECK(mb.messages == 5);
  CHECK(slot->FetchBody("user/alice", 3).value() == TestMessage(2));
}

TEST_CASE("a copied message shares its body and its record carries no second copy",
          "[slot]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/alice").ok());
  REQUIRE(slot->CreateMailbox("user/alice/Archive").ok());
  std::string body = TestMessage(1, 50000);
  REQUIRE(slot->Append({.mailbox = "user/alice", .body = body}).ok());
  uint64_t before = slot->stats().bytes;
  auto uids = slot->Copy("user/alice", {1}, "user/alice/Archive");
  REQUIRE(uids.ok());
  CHECK(*uids == std::vector<uint32_t>{1});
  CHECK(slot->stats().bytes - before < 1000);  // the copy's record holds no body
  // Delivering the same bytes again does not store them again either.
  before = slot->stats().bytes;
  REQUIRE(slot->Append({.mailbox = "user/alice", .body = body}).ok());
  CHECK(slot->stats().bytes - before < 1000);
  CHECK(slot->FetchBody("user/alice/Archive", 1).value() == body);
  CHECK(slot->Quota("alice").storage_used == 3 * body.size());
  // Once the body is in a pack (and after reopening) it is known too, and
  // the pack holds it once.
  REQUIRE(slot->FlushBodies().ok());
  before = slot->stats().bytes;
  REQUIRE(slot->Append({.mailbox = "user/alice", .body = body}).ok());
  CHECK(slot->stats().bytes - before < 1000);
  slot.reset();
  slot = ReopenSlot(dir.path());
  before = slot->stats().bytes;
  REQUIRE(slot->Append({.mailbox = "user/alice", .body = body}).ok());
  CHECK(slot->stats().bytes - before < 1000);
  REQUIRE(slot->FlushBodies().ok());
  CHECK(testing::FileSize(dir.Sub("spool/packs/00000001.pack")) ==
        kPackEntryHeaderSize + body.size());
  CHECK(VerifySlot(*slot).value().clean());
}

TEST_CASE("a rename chain A->C, B->A, C->B keeps every message with its mailbox", "[slot]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/u").ok());
  std::string a_id = slot->CreateMailbox("user/u/A").value().id;
  std::string b_id = slot->CreateMailbox("user/u/B").value().id;
  REQUIRE(slot->Append({.mailbox = "user/u/A", .body = TestMessage(1)}).ok());
  REQUIRE(slot->Append({.mailbox = "user/u/B", .body = TestMessage(2)}).ok());
  REQUIRE(slot->RenameMailbox("user/u/A", "user/u/C").ok());
  REQUIRE(slot->RenameMailbox("user/u/B", "user/u/A").ok());
  REQUIRE(slot->RenameMailbox("user/u/C", "user/u/B").ok());
  CHECK(slot->GetMailbox("user/u/B").value().id == a_id);
  CHECK(slot->GetMailbox("user/u/A").value().id == b_id);
  CHECK(Guids(*slot, "user/u/B") == std::vector<std::string>{Sha1(TestMessage(1))});
  CHECK(Guids(*slot, "user/u/A") == std::vector<std::string>{Sha1(TestMessage(2))});
  // A later append lands in the mailbox the name now points at.
  REQUIRE(slot->Append({.mailbox = "user/u/A", .body = TestMessage(3)}).ok());
  CHECK(Guids(*slot, "user/u/A").size() == 2);
  Digest d = slot->SlotDigest();
  slot.reset();
  CHECK(DigestAfterReconstruct(dir.path()) == d);  // the log replays to the same state
}

TEST_CASE("a new mailbox re-using a deleted one's name gets a new id, UIDVALIDITY and no mail",
          "[slot]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/u").ok());
  auto old = slot->CreateMailbox("user/u/Trash").value();
  REQUIRE(slot->Append({.mailbox = "user/u/Trash", .body = TestMessage(1)}).ok());
  REQUIRE(slot->DeleteMailbox("user/u/Trash").ok());
  auto fresh = slot->CreateMailbox("user/u/Trash").value();
  CHECK(fresh.id != old.id);
  CHECK(fresh.uidvalidity > old.uidvalidity);
  CHECK(fresh.messages == 0);
  CHECK(slot->ListMessages("user/u/Trash", true).value().empty());
  CHECK(slot->Quota("u").messages_used == 0);
  Digest d = slot->SlotDigest();
  slot.reset();
  CHECK(DigestAfterReconstruct(dir.path()) == d);
}

TEST_CASE("a delete after a rename removes only the mailbox it named", "[slot]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/u").ok());
  REQUIRE(slot->CreateMailbox("user/u/X").ok());
  REQUIRE(slot->Append({.mailbox = "user/u/X", .body = TestMessage(1)}).ok());
  REQUIRE(slot->RenameMailbox("user/u/X", "user/u/Y").ok());
  REQUIRE(slot->CreateMailbox("user/u/X").ok());
  REQUIRE(slot->Append({.mailbox = "user/u/X", .body = TestMessage(2)}).ok());
  REQUIRE(slot->DeleteMailbox("user/u/Y").ok());
  CHECK(Guids(*slot, "user/u/X") == std::vector<std::string>{Sha1(TestMessage(2))});
  CHECK_FALSE(slot->GetMailbox("user/u/Y").ok());
  Digest d = slot->SlotDigest();
  slot.reset();
  CHECK(DigestAfterReconstruct(dir.path()) == d);
}

TEST_CASE("renaming a mailbox moves its children; deleting a parent with children is refused",
          "[slot]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/u").ok());
  REQUIRE(slot->CreateMailbox("user/u/Work").ok());
  REQUIRE(slot->CreateMailbox("user/u/Work/2025").ok());
  REQUIRE(slot->RenameMailbox("user/u/Work", "user/u/Old").ok());
  CHECK(slot->GetMailbox("user/u/Old/2025").ok());
  CHECK_FALSE(slot->GetMailbox("user/u/Work/2025").ok());
  CHECK(slot->DeleteMailbox("user/u/Old").code() == absl::StatusCode::kFailedPrecondition);
  CHECK(slot->RenameMailbox("user/u/Old", "user/u/Old/Inner").code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("flag changes and expunges bump MODSEQ and are reflected in the digest", "[slot]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/u").ok());
  REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(1)}).ok());
  REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(2)}).ok());
  auto before = slot->GetMailbox("user/u").value();
  REQUIRE(slot->SetFlags("user/u", {1, 2}, FlagOp::kAdd, {"\\Seen", "$Work"}).ok());
  auto after = slot->GetMailbox("user/u").value();
  CHECK(after.highest_modseq > before.highest_modseq);
  CHECK_FALSE(after.MailboxDigest() == before.MailboxDigest());
  auto msgs = slot->ListMessages("user/u", false).value();
  CHECK(msgs[0].flags == std::vector<std::string>{"$Work", "\\Seen"});
  CHECK(msgs[0].modseq == after.highest_modseq);
  REQUIRE(slot->Expunge("user/u", {1, 1}).ok());  // a repeated UID counts once
  CHECK(slot->ListMessages("user/u", false).value().size() == 1);
  auto all = slot->ListMessages("user/u", true).value();
  REQUIRE(all.size() == 2);
  CHECK(all[0].expunged);
  CHECK(slot->Quota("u").messages_used == 1);
  CHECK(slot->SetFlags("user/u", {1}, FlagOp::kAdd, {"\\Flagged"}).code() ==
        absl::StatusCode::kNotFound);
  CHECK(slot->SetFlags("user/u", {2}, FlagOp::kAdd, {"bad flag"}).code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("the same message twice in a mailbox does not cancel out of its digest", "[slot]") {
  Digest one = MessageDigest(1, Sha1("x"), {}, 1, false);
  Digest twice = one;
  twice.Add(one);
  CHECK_FALSE(twice == Digest{});
  CHECK_FALSE(twice == one);
  // Order independence: a + b == b + a, and removal is exact.
  Digest b = MessageDigest(2, Sha1("y"), {"\\Seen"}, 2, false);
  Digest ab = one, ba = b;
  ab.Add(b);
  ba.Add(one);
  CHECK(ab == ba);
  ab.Subtract(b);
  CHECK(ab == one);
}

TEST_CASE("an over-quota append is refused and changes nothing", "[slot]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/q").ok());
  REQUIRE(slot->SetQuota("q", 1000, 0).ok());
  REQUIRE(slot->Append({.mailbox = "user/q", .body = TestMessage(1, 600)}).ok());
  Digest d = slot->SlotDigest();
  uint64_t lsn = slot->last_lsn();
  auto r = slot->Append({.mailbox = "user/q", .body = TestMessage(2, 600)});
  CHECK(r.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(slot->SlotDigest() == d);
  CHECK(slot->last_lsn() == lsn);
  REQUIRE(slot->SetQuota("q", 0, 1).ok());
  CHECK(slot->Append({.mailbox = "user/q", .body = TestMessage(3, 100)}).status().code() ==
        absl::StatusCode::kResourceExhausted);
  // Expunging frees quota.
  REQUIRE(slot->Expunge("user/q", {1}).ok());
  CHECK(slot->Append({.mailbox = "user/q", .body = TestMessage(3, 100)}).ok());
}

TEST_CASE("invalid mailbox names and oversized messages are refused and change nothing",
          "[slot]") {
  TempDir dir;
  SlotOptions options;
  options.max_message_bytes = 4096;
  auto slot = NewSlot(dir.path(), options);
  REQUIRE(slot->CreateMailbox("user/u").ok());
  Digest d = slot->SlotDigest();
  for (std::string bad : std::vector<std::string>{"", "/user/u/x", "user/u/../v", "user/u/./x", "user/u//x",
                          "user/u/x/", "user/u/a\x01z", "user/u/\x7f", "other/u",
                          "user/u/" + std::string(490, 'a'), "user", "user/../etc"}) {
    INFO("name: " << bad);
    CHECK(slot->CreateMailbox(bad).status().code() == absl::StatusCode::kInvalidArgument);
  }
  CHECK(slot->RenameMailbox("user/u", "user/u/../x").code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(slot->Append({.mailbox = "user/u/../u", .body = "x"}).status().code() ==
        absl::StatusCode::kNotFound);
  for (std::string flag : std::vector<std::string>{"", "two words", "(paren", "ctl\x01"}) {
    INFO("flag: " << flag);
    CHECK(slot->Append({.mailbox = "user/u", .body = "x", .flags = {flag}}).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  auto big = slot->Append({.mailbox = "user/u", .body = std::string(5000, 'x')});
  CHECK(big.status().code() == absl::StatusCode::kOutOfRange);
  CHECK(slot->SlotDigest() == d);
  CHECK(slot->last_lsn() == 1);
}

TEST_CASE("concurrent appends share fsyncs and each gets its own UID", "[slot][group-commit]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/u").ok());
  const uint64_t commits_before = slot->stats().commits;
  constexpr int kThreads = 8, kEach = 40;
  std::vector<std::vector<uint32_t>> uids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto r = slot->Append({.mailbox = "user/u", .body = TestMessage(t * 1000 + i)});
        if (r.ok()) uids[t].push_back(r->uid);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<uint32_t> all;
  for (const auto& v : uids) all.insert(v.begin(), v.end());
  CHECK(all.size() == kThreads * kEach);
  CHECK(*all.rbegin() == kThreads * kEach);
  auto stats = slot->stats();
  CHECK(stats.commits - commits_before < kThreads * kEach);  // some fsyncs were shared
  CHECK(slot->GetMailbox("user/u").value().messages == kThreads * kEach);
}

// Appends `n`'s message to user/u unless `count` copies are there above `above_uid`.
absl::StatusOr<AppendResult> AppendUnless(Slot& slot, int n, uint32_t above_uid, uint32_t count) {
  return slot.Append({.mailbox = "user/u",
                      .body = TestMessage(n),
                      .unless_present = UnlessPresent{.above_uid = above_uid, .count = count}});
}

TEST_CASE("a conditional append appends nothing when the mailbox already holds the message "
          "above the given UID",
          "[slot][conditional-append]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/u").ok());
  REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(1)}).ok());  // UID 1
  REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(2)}).ok());  // UID 2
  REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(1)}).ok());  // UID 3

  // Message 1 is at UIDs 1 and 3: there above 0 and above 2.
  const uint64_t lsn = slot->last_lsn();
  auto there = AppendUnless(*slot, 1, 2, 1);
  REQUIRE(there.ok());
  CHECK(there->already_present);
  CHECK(there->uid == 3);
  CHECK(there->guid == Sha1(TestMessage(1)));
  CHECK(slot->last_lsn() == lsn);
  there = AppendUnless(*slot, 2, 0, 1);
  REQUIRE(there.ok());
  CHECK(there->already_present);
  CHECK(there->uid == 2);
  CHECK(slot->last_lsn() == lsn);

  // Not above UID 3: appended, with a new UID.
  auto appended = AppendUnless(*slot, 1, 3, 1);
  REQUIRE(appended.ok());
  CHECK_FALSE(appended->already_present);
  CHECK(appended->uid == 4);
  CHECK(slot->last_lsn() == lsn + 1);
  CHECK(Guids(*slot, "user/u").size() == 4);

  // An unknown mailbox and a count of 0 are refused.
  CHECK(slot->Append({.mailbox = "user/none", .body = TestMessage(1), .unless_present =
                          UnlessPresent{}})
            .status()
            .code() == absl::StatusCode::kNotFound);
  CHECK(AppendUnless(*slot, 1, 0, 0).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(slot->last_lsn() == lsn + 1);
}

TEST_CASE("a conditional append for the k-th copy of a message appends only while fewer than k "
          "copies are there, and expunged copies do not count",
          "[slot][conditional-append]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/u").ok());
  REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(1)}).ok());  // UID 1, below
  auto first = AppendUnless(*slot, 1, 1, 1);
  REQUIRE(first.ok());
  CHECK_FALSE(first->already_present);  // UID 1 is not above 1
  CHECK(first->uid == 2);
  // One copy above UID 1: the second copy is still missing, then there.
  auto second = AppendUnless(*slot, 1, 1, 2);
  REQUIRE(second.ok());
  CHECK_FALSE(second->already_present);
  CHECK(second->uid == 3);
  second = AppendUnless(*slot, 1, 1, 2);
  REQUIRE(second.ok());
  CHECK(second->already_present);
  CHECK(second->uid == 3);  // the second copy above UID 1
  first = AppendUnless(*slot, 1, 1, 1);
  REQUIRE(first.ok());
  CHECK(first->already_present);
  CHECK(first->uid == 2);

  // Expunged, a copy is no longer there.
  REQUIRE(slot->Expunge("user/u", {2}).ok());
  second = AppendUnless(*slot, 1, 1, 2);
  REQUIRE(second.ok());
  CHECK_FALSE(second->already_present);
  CHECK(second->uid == 4);
  auto messages = slot->ListMessages("user/u", false);
  REQUIRE(messages.ok());
  CHECK(messages->size() == 3);  // UIDs 1, 3, 4
}

TEST_CASE("conditional appends of the same message from many threads, beside plain appends, "
          "append it once",
          "[slot][conditional-append][group-commit]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/u").ok());
  constexpr int kThreads = 8, kEach = 10;
  std::atomic<int> appended{0}, present{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        // Plain appends of other messages in between keep group commit busy.
        if (!slot->Append({.mailbox = "user/u", .body = TestMessage(1000 + t * kEach + i)}).ok()) {
          ++failed;
        }
        auto r = AppendUnless(*slot, i, 0, 1);
        if (!r.ok()) {
          ++failed;
        } else {
          ++(r->already_present ? present : appended);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failed == 0);
  CHECK(appended == kEach);
  CHECK(present == (kThreads - 1) * kEach);
  std::map<std::string, int> copies;
  for (const std::string& guid : Guids(*slot, "user/u")) ++copies[guid];
  for (int i = 0; i < kEach; ++i) {
    INFO("message " << i);
    CHECK(copies[Sha1(TestMessage(i))] == 1);
  }
}

TEST_CASE("an append to a mailbox that GetMailbox already shows never fails as unknown, even "
          "while the mailbox's creation is still committing",
          "[slot][group-commit]") {
  // LMTP delivers to a new user by creating the INBOX; a second delivery
  // to that user may see the INBOX in the index before the creating
  // thread has finished its commit. Its append must wait, not answer 550.
  // The commit hook (the applier runs it once the index has the mailbox)
  // holds the creation's commit there until the appender's append has
  // returned, or 100 ms: long enough for a wrong refusal to show.
  std::mutex mu;
  std::condition_variable cv;
  bool creating = false;
  int creations = 0, appends = 0;
  SlotOptions options;
  options.on_commit = [&](uint64_t) {
    std::unique_lock<std::mutex> l(mu);
    if (!creating) return;
    creating = false;
    const int n = ++creations;
    cv.wait_for(l, std::chrono::milliseconds(100), [&] { return appends >= n; });
  };
  TempDir dir;
  auto slot = NewSlot(dir.path(), options);
  constexpr int kMailboxes = 5;
  std::vector<absl::Status> created(kMailboxes);
  std::thread creator([&] {
    for (int i = 0; i < kMailboxes; ++i) {
      {
        std::lock_guard<std::mutex> l(mu);
        creating = true;  // the next commit is this creation's
      }
      created[i] = slot->CreateMailbox(absl::StrCat("user/u", i)).status();
    }
  });
  std::vector<std::string> failures;
  for (int i = 0; i < kMailboxes; ++i) {
    const std::string name = absl::StrCat("user/u", i);
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (!slot->GetMailbox(name).ok() && absl::Now() < deadline) std::this_thread::yield();
    auto r = slot->Append({.mailbox = name, .body = TestMessage(i)});
    if (!r.ok()) failures.push_back(absl::StrCat(name, ": ", r.status().ToString()));
    std::lock_guard<std::mutex> l(mu);
    ++appends;
    cv.notify_all();
  }
  creator.join();
  INFO(absl::StrJoin(failures, "\n"));
  CHECK(failures.empty());
  for (const absl::Status& s : created) CHECK(s.ok());
  // The hook held commits while creations were in flight (an append's
  // commit may take a creation's turn, so not necessarily all five).
  CHECK(creations >= 1);
}

TEST_CASE("readers see every acknowledged write at once, while appends, creations and reads "
          "run concurrently",
          "[slot][group-commit]") {
  // The applier thread puts a batch in the index after its writers are
  // told OK; the index lock it holds from before that moment makes every
  // reader wait for it. Four appenders each read back the message they
  // were just told is durable, while a fifth thread creates mailboxes
  // (exclusive operations that read the index with the slot's lock held).
  TempDir dir;
  auto slot = NewSlot(dir.path());
  constexpr int kThreads = 4, kEach = 150, kCreations = 40;
  for (int t = 0; t < kThreads; ++t) REQUIRE(slot->CreateMailbox(absl::StrCat("user/a", t)).ok());
  std::vector<std::string> failures(kThreads + 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string name = absl::StrCat("user/a", t);
      for (int i = 0; i < kEach && failures[t].empty(); ++i) {
        auto r = slot->Append({.mailbox = name, .body = TestMessage(t * kEach + i)});
        if (!r.ok()) {
          failures[t] = r.status().ToString();
          break;
        }
        auto mb = slot->GetMailbox(name);
        auto msgs = slot->ListMessages(name, false);
        if (!mb.ok() || mb->last_uid < r->uid || !msgs.ok() || msgs->empty() ||
            msgs->back().uid != r->uid || msgs->back().guid != r->guid ||
            slot->last_lsn() < r->lsn) {
          failures[t] = absl::StrCat(name, " UID ", r->uid, " LSN ", r->lsn,
                                     " acknowledged but not yet visible to its writer");
        }
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < kCreations; ++i) {
      const std::string name = absl::StrCat("user/c", i);
      auto created = slot->CreateMailbox(name);
      auto seen = slot->GetMailbox(name);
      if (!created.ok() || !seen.ok() || seen->id != created->id) {
        failures[kThreads] = absl::StrCat(name, ": ", created.status().ToString(), " / ",
                                          seen.status().ToString());
        break;
      }
    }
  });
  for (std::thread& t : threads) t.join();
  for (const std::string& f : failures) CHECK(f.empty());
  for (int t = 0; t < kThreads; ++t) {
    CHECK(slot->GetMailbox(absl::StrCat("user/a", t)).value().messages == kEach);
  }
  CHECK(VerifySlot(*slot).value().clean());
}

TEST_CASE("the epoch history records the first LSN of every epoch and survives reopening",
          "[slot]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/u").ok());
  REQUIRE(slot->BeginEpoch(3).ok());
  REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(1)}).ok());
  REQUIRE(slot->BeginEpoch(5).ok());
  CHECK(slot->BeginEpoch(5).code() == absl::StatusCode::kFailedPrecondition);
  CHECK(slot->BeginEpoch(4).code() == absl::StatusCode::kFailedPrecondition);
  std::vector<EpochStart> want{{3, 2}, {5, 4}};
  CHECK(slot->EpochHistory() == want);
  slot.reset();
  slot = ReopenSlot(dir.path());
  CHECK(slot->EpochHistory() == want);
  CHECK(slot->epoch() == 5);
}

TEST_CASE("a slot opened as the wrong store is refused", "[slot][identity]") {
  TempDir dir;
  NewSlot(dir.path()).reset();
  SlotOptions wrong;
  wrong.expect = SlotIdentity{"test", 2, 0, 0};
  auto s = Slot::Open(SlotPaths::Under(dir.path()), wrong);
  CHECK(s.status().code() == absl::StatusCode::kFailedPrecondition);
  SlotOptions right;
  right.expect = SlotIdentity{"test", 1, 1, 0};
  CHECK(Slot::Open(SlotPaths::Under(dir.path()), right).ok());
  CHECK(Slot::Init(SlotPaths::Under(dir.path()), {"test", 1, 1, 0}).code() ==
        absl::StatusCode::kAlreadyExists);
}

TEST_CASE("a snapshot imported into an empty slot reproduces state, bodies and epochs",
          "[slot][snapshot]") {
  TempDir a, b;
  auto src = NewSlot(a.path());
  REQUIRE(src->CreateMailbox("user/u").ok());
  REQUIRE(src->BeginEpoch(2).ok());
  for (int i = 0; i < 20; ++i) {
    REQUIRE(src->Append({.mailbox = "user/u", .body = TestMessage(i, 3000)}).ok());
  }
  REQUIRE(src->SetFlags("user/u", {3}, FlagOp::kAdd, {"\\Seen"}).ok());
  REQUIRE(src->Expunge("user/u", {4}).ok());
  REQUIRE(src->SetQuota("u", 1 << 20, 100).ok());
  REQUIRE(src->SetQuota("v", 0, 0).ok());  // a quota row without limits is state too
  std::string file = a.Sub("snap");
  REQUIRE(src->ExportSnapshot(file).ok());

  auto dst = NewSlot(b.path());
  REQUIRE(dst->ImportSnapshot(file).ok());
  dst.reset();
  dst = ReopenSlot(b.path());
  CHECK(dst->SlotDigest() == src->SlotDigest());
  CHECK(dst->last_lsn() == src->last_lsn());
  CHECK(dst->EpochHistory() == src->EpochHistory());
  CHECK(dst->FetchBody("user/u", 7).value() == TestMessage(6, 3000));
  // The imported slot continues the log at the next LSN.
  auto r = dst->Append({.mailbox = "user/u", .body = TestMessage(99)});
  REQUIRE(r.ok());
  CHECK(r->lsn == src->last_lsn() + 1);
  CHECK(VerifySlot(*dst).value().clean());
}

TEST_CASE("a damaged snapshot is refused and leaves the slot empty", "[slot][snapshot]") {
  TempDir a, b;
  auto src = NewSlot(a.path());
  REQUIRE(src->CreateMailbox("user/u").ok());
  REQUIRE(src->Append({.mailbox = "user/u", .body = TestMessage(1)}).ok());
  std::string file = a.Sub("snap");
  REQUIRE(src->ExportSnapshot(file).ok());
  testing::FlipByte(file, testing::FileSize(file) / 2);
  auto dst = NewSlot(b.path());
  CHECK(dst->ImportSnapshot(file).code() == absl::StatusCode::kDataLoss);
  CHECK(dst->ListMailboxes().empty());
  // Cut short: no trailer.
  REQUIRE(src->ExportSnapshot(file).ok());
  testing::TruncateFile(file, testing::FileSize(file) - 10);
  CHECK(dst->ImportSnapshot(file).code() == absl::StatusCode::kDataLoss);
  CHECK(dst->ListMailboxes().empty());
}

TEST_CASE("a snapshot that lists a mailbox name twice, names one with ../, or holds a message "
          "with a flag that is empty or holds a space or a UID past its mailbox's last, is "
          "refused and leaves the slot empty, even with a trailer that agrees",
          "[slot][snapshot]") {
  TempDir a, b;
  auto src = NewSlot(a.path());
  REQUIRE(src->CreateMailbox("user/u").ok());
  REQUIRE(src->Append({.mailbox = "user/u", .body = TestMessage(1), .flags = {"\\Seen"}}).ok());
  const std::string file = a.Sub("snap");
  REQUIRE(src->ExportSnapshot(file).ok());
  const std::vector<LogRecord> entries = SnapshotEntries(file);
  auto dst = NewSlot(b.path());
  SECTION("the entries as written import") {
    WriteSnapshotEntries(file, entries);
    REQUIRE(dst->ImportSnapshot(file).ok());
    CHECK(dst->SlotDigest() == src->SlotDigest());
  }
  SECTION("a second mailbox of the same name") {
    std::vector<LogRecord> twice = entries;
    auto it = std::find_if(twice.begin(), twice.end(), [](const LogRecord& r) {
      return r.type == RecordType::kSnapshotMailbox;
    });
    REQUIRE(it != twice.end());
    logpb::SnapshotMailbox other;
    REQUIRE(other.ParseFromString(it->payload));
    other.set_mailbox_id("0123456789abcdef0123456789abcdef");
    LogRecord copy = *it;
    copy.payload = other.SerializeAsString();
    twice.insert(it + 1, copy);
    WriteSnapshotEntries(file, twice);
    const absl::Status s = dst->ImportSnapshot(file);
    CHECK(s.code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(std::string(s.message()), Catch::Contains("user/u twice"));
    CHECK(dst->ListMailboxes().empty());
  }
  SECTION("a second entry of the same mailbox id, by another name") {
    std::vector<LogRecord> twice = entries;
    auto it = std::find_if(twice.begin(), twice.end(), [](const LogRecord& r) {
      return r.type == RecordType::kSnapshotMailbox;
    });
    REQUIRE(it != twice.end());
    logpb::SnapshotMailbox other;
    REQUIRE(other.ParseFromString(it->payload));
    other.set_name("user/v");
    LogRecord copy = *it;
    copy.payload = other.SerializeAsString();
    twice.insert(it + 1, copy);
    WriteSnapshotEntries(file, twice);
    const absl::Status s = dst->ImportSnapshot(file);
    CHECK(s.code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(std::string(s.message()), Catch::Contains(other.mailbox_id() + " twice"));
    CHECK(dst->ListMailboxes().empty());
  }
  for (const std::string flag : {"", "two words"}) {
    DYNAMIC_SECTION("a message flagged '" << flag << "'") {
      std::vector<LogRecord> flagged = entries;
      for (LogRecord& r : flagged) {
        if (r.type != RecordType::kSnapshotMessage) continue;
        logpb::SnapshotMessage m;
        REQUIRE(m.ParseFromString(r.payload));
        m.add_flags(flag);
        r.payload = m.SerializeAsString();
      }
      WriteSnapshotEntries(file, flagged);
      const absl::Status s = dst->ImportSnapshot(file);
      CHECK(s.code() == absl::StatusCode::kDataLoss);
      CHECK_THAT(std::string(s.message()), Catch::Contains("a flag is empty or holds a space"));
      CHECK(dst->ListMailboxes().empty());
    }
  }
  SECTION("a mailbox named with ../") {
    std::vector<LogRecord> renamed = entries;
    for (LogRecord& r : renamed) {
      if (r.type != RecordType::kSnapshotMailbox) continue;
      logpb::SnapshotMailbox m;
      REQUIRE(m.ParseFromString(r.payload));
      m.set_name("user/u/../v");
      r.payload = m.SerializeAsString();
    }
    WriteSnapshotEntries(file, renamed);
    const absl::Status s = dst->ImportSnapshot(file);
    CHECK(s.code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(std::string(s.message()), Catch::Contains("'..'"));
    CHECK(dst->ListMailboxes().empty());
  }
  SECTION("a message UID above the mailbox's last UID") {
    std::vector<LogRecord> beyond = entries;
    for (LogRecord& r : beyond) {
      if (r.type != RecordType::kSnapshotMessage) continue;
      logpb::SnapshotMessage m;
      REQUIRE(m.ParseFromString(r.payload));
      m.set_uid(7);
      r.payload = m.SerializeAsString();
    }
    WriteSnapshotEntries(file, beyond);
    const absl::Status s = dst->ImportSnapshot(file);
    CHECK(s.code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(std::string(s.message()), Catch::Contains("outside 1..1"));
    CHECK(dst->ListMailboxes().empty());
  }
}

TEST_CASE("log retention drops old segments and the slot still rebuilds to the same state",
          "[slot][retention]") {
  TempDir dir;
  SlotOptions small;
  small.segment_bytes = 8 << 10;
  auto slot = NewSlot(dir.path(), small);
  REQUIRE(slot->CreateMailbox("user/u").ok());
  for (int i = 0; i < 60; ++i) {
    REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(i, 1500)}).ok());
  }
  size_t before = ListSegments(dir.Sub("log")).value().size();
  REQUIRE(before > 3);
  auto dropped = slot->DropLogBelow(40);
  REQUIRE(dropped.ok());
  CHECK(*dropped > 0);
  CHECK(ListSegments(dir.Sub("log")).value().size() == before - *dropped);
  CHECK(slot->log_start_lsn() > 1);
  CHECK(slot->log_start_lsn() <= 40);
  REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(100)}).ok());
  Digest d = slot->SlotDigest();
  CHECK(VerifySlot(*slot).value().clean());
  slot.reset();
  auto report = ReconstructIndex(SlotPaths::Under(dir.path()), small);
  REQUIRE(report.ok());
  auto reopened = ReopenSlot(dir.path(), small);
  CHECK(reopened->SlotDigest() == d);
  CHECK(reopened->FetchBody("user/u", 10).value() == TestMessage(9, 1500));
}

}  // namespace
}  // namespace mailrepl

namespace mailrepl {
namespace {

TEST_CASE("the index keeps the slot digest at every commit, and a position-only view reads it "
          "without reading the mailboxes",
          "[slot][digest]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  for (int u = 0; u < 20; ++u) {
    const std::string mb = absl::StrCat("user/u", u);
    REQUIRE(slot->CreateMailbox(mb).ok());
    REQUIRE(slot->Append({.mailbox = mb, .body = TestMessage(u)}).ok());
  }
  REQUIRE(slot->SetFlags("user/u3", {1}, FlagOp::kAdd, {"\\Seen"}).ok());
  REQUIRE(slot->RenameMailbox("user/u4", "user/u4b").ok());
  REQUIRE(slot->DeleteMailbox("user/u5").ok());
  REQUIRE(slot->SetQuota("u6", 1 << 20, 100).ok());
  REQUIRE(slot->Expunge("user/u7", {1}).ok());
  slot->WaitApplied();  // the view reads the index file itself

  auto view = Index::OpenReadOnly(slot->paths().index_file(), Index::ViewScope::kPosition);
  REQUIRE(view.ok());
  CHECK_FALSE((*view)->state_loaded());
  CHECK((*view)->mailboxes().empty());
  CHECK((*view)->applied_lsn() == slot->last_lsn());
  REQUIRE((*view)->stored_slot_digest().has_value());
  CHECK((*view)->slot_digest() == slot->SlotDigest());
  // The rest comes later, in the same read transaction.
  REQUIRE((*view)->LoadState().ok());
  CHECK((*view)->state_loaded());
  CHECK((*view)->mailboxes().size() == 19);
  CHECK((*view)->slot_digest() == slot->SlotDigest());
  // A full view computes the same from the mailboxes.
  auto full = Index::OpenReadOnly(slot->paths().index_file());
  REQUIRE(full.ok());
  CHECK((*full)->slot_digest() == *(*full)->stored_slot_digest());
}

TEST_CASE("verify reports a stored slot digest that is not that of the index's mailboxes",
          "[slot][digest][verify]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/alice").ok());
  REQUIRE(slot->Append({.mailbox = "user/alice", .body = TestMessage(1)}).ok());
  REQUIRE(VerifySlot(*slot).value().clean());
  {
    auto db = sqlite::Database::Open(slot->paths().index_file(), false);
    REQUIRE(db.ok());
    REQUIRE((*db)->Exec("UPDATE meta SET value = value + 1 WHERE key = 'slot_digest_a'").ok());
  }
  auto report = VerifySlot(*slot);
  REQUIRE(report.ok());
  CHECK_FALSE(report->clean());
  bool named = false;
  for (const std::string& p : report->problems) {
    named |= absl::StrContains(p, "stored slot digest") && absl::StrContains(p, "index.sqlite3");
  }
  CHECK(named);
}

}  // namespace
}  // namespace mailrepl
