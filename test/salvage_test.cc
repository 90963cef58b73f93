// Salvage below the cluster: what a diverged old master sets aside (the
// salvage file, its format and damage), the rewind (Slot::DiscardState),
// and the salvager's appends to a master, resumed after a crash or a lost
// reply without losing or duplicating a message.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <functional>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "asio.hpp"
#include "common/file_util.h"
#include "replicad/salvager.h"
#include "store/log_format.h"
#include "store/log_reader.h"
#include "store/salvage_file.h"
#include "store/spool.h"
#include "syncclient/sync_client.h"
#include "syncclient/sync_server.h"
#include "test/test_util.h"

namespace mailrepl {
namespace {

using replicad::SalvageInto;
using replicad::SalvageTarget;
using testing::NewSlot;
using testing::RecordsFrom;
using testing::ReopenSlot;
using testing::TempDir;
using testing::TestMessage;

constexpr char kInbox[] = "user/alice";

uint32_t Deliver(Slot& slot, int n, std::vector<std::string> flags = {}) {
  auto r = slot.Append({.mailbox = kInbox, .body = TestMessage(n), .flags = std::move(flags)});
  INFO(r.status());
  REQUIRE(r.ok());
  return r->uid;
}

// Sets aside what `slot` (in directory dir) holds past fork, for a master of
// epoch 7, in its salvage file; returns the file's path.
std::string WriteSetAside(Slot& slot, const std::string& dir, uint64_t fork, SalvageSet* set) {
  auto collected = CollectSalvage(slot, fork, 7);
  REQUIRE(collected.ok());
  *set = std::move(*collected);
  const std::string path = SalvageFilePath(SalvageDir(dir), set->header);
  REQUIRE(WriteSalvageFile(path, *set).ok());
  return path;
}

// A slot that acted as master past LSN `fork`: 3 messages before it; past
// it 4 more (one flagged later, one expunged, one with flags from the
// start) and a new mailbox with one message.
struct Diverged {
  TempDir dir;
  std::unique_ptr<Slot> slot = NewSlot(dir.path());
  uint64_t fork = 0;

  Diverged() {
    REQUIRE(slot->CreateMailbox(kInbox).ok());
    for (int i = 0; i < 3; ++i) Deliver(*slot, i);
    fork = slot->last_lsn();
    const uint32_t a = Deliver(*slot, 10);
    Deliver(*slot, 11, {"\\Seen"});
    const uint32_t c = Deliver(*slot, 12);
    Deliver(*slot, 13);
    REQUIRE(slot->SetFlags(kInbox, {a}, FlagOp::kAdd, {"\\Flagged", "$Label1"}).ok());
    REQUIRE(slot->Expunge(kInbox, {c}).ok());
    REQUIRE(slot->CreateMailbox("user/alice/Later").ok());
    REQUIRE(slot->Append({.mailbox = "user/alice/Later", .body = TestMessage(14)}).ok());
  }

  SalvageSet set;
  // Sets aside what the slot holds past the fork point; returns the file.
  std::string SetAside() { return WriteSetAside(*slot, dir.path(), fork, &set); }
};

std::map<std::string, std::vector<std::string>> FlagsByBody(const SalvageSet& set) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& m : set.messages) out[m.body()] = {m.flags().begin(), m.flags().end()};
  return out;
}

TEST_CASE("a diverged slot sets aside the messages past the fork point as they stand, with "
          "bodies, flags and mailbox names",
          "[salvage]") {
  Diverged d;
  auto set = CollectSalvage(*d.slot, d.fork, 7);
  REQUIRE(set.ok());
  CHECK(set->header.fork_lsn() == d.fork);
  CHECK(set->header.from_lsn() == d.fork + 1);
  CHECK(set->header.to_lsn() == d.slot->last_lsn());
  CHECK(set->header.master_epoch() == 7);
  // The expunged message is not salvaged; the others are, in LSN order.
  REQUIRE(set->messages.size() == 4);
  CHECK(set->messages[0].body() == TestMessage(10));
  CHECK(set->messages[3].mailbox() == "user/alice/Later");
  auto flags = FlagsByBody(*set);
  CHECK(flags[TestMessage(10)] == std::vector<std::string>{"$Label1", "\\Flagged"});
  CHECK(flags[TestMessage(11)] == std::vector<std::string>{"\\Seen"});
  CHECK(flags[TestMessage(13)].empty());
  // The last UID of each mailbox at the fork point.
  CHECK(set->messages[0].fork_uid() == 3);
  CHECK(set->messages[3].fork_uid() == 0);
  for (const auto& m : set->messages) CHECK(Sha1(m.body()) == m.guid());
}

TEST_CASE("a salvage file reads back as written; damage, a missing trailer or a wrong count is "
          "refused naming the file and offset",
          "[salvage]") {
  Diverged d;
  const std::string path = d.SetAside();
  const SalvageSet* set = &d.set;
  const std::string dir = SalvageDir(d.dir.path());
  CHECK(path == absl::StrCat(dir, "/", std::string(20 - std::to_string(d.fork + 1).size(), '0'),
                             d.fork + 1, "-",
                             std::string(20 - std::to_string(set->header.to_lsn()).size(), '0'),
                             set->header.to_lsn(), ".salvage"));
  auto pending = PendingSalvageFiles(dir);
  REQUIRE(pending.ok());
  CHECK(*pending == std::vector<std::string>{path});

  auto back = ReadSalvageFile(path);
  REQUIRE(back.ok());
  CHECK(back->header.SerializeAsString() == set->header.SerializeAsString());
  REQUIRE(back->messages.size() == set->messages.size());
  for (size_t i = 0; i < back->messages.size(); ++i) {
    CHECK(back->messages[i].SerializeAsString() == set->messages[i].SerializeAsString());
  }

  SECTION("a flipped byte") {
    testing::FlipByte(path, testing::FileSize(path) / 2);
    auto bad = ReadSalvageFile(path);
    REQUIRE(bad.status().code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(std::string(bad.status().message()), Catch::Contains(path));
    CHECK_THAT(std::string(bad.status().message()), Catch::Contains("offset"));
  }
  SECTION("a cut-off end (no trailer)") {
    testing::TruncateFile(path, testing::FileSize(path) - 10);
    auto bad = ReadSalvageFile(path);
    REQUIRE(bad.status().code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(std::string(bad.status().message()), Catch::Contains(path));
  }
  SECTION("a trailer that counts another number of messages") {
    std::string data;
    LogRecord r;
    r.type = RecordType::kSalvageHeader;
    r.payload = set->header.SerializeAsString();
    EncodeRecord(r, &data);
    r.type = RecordType::kSalvageMessage;
    r.payload = set->messages[0].SerializeAsString();
    EncodeRecord(r, &data);
    salvagepb::SalvageTrailer t;
    t.set_messages(2);
    r.type = RecordType::kSalvageTrailer;
    r.payload = t.SerializeAsString();
    EncodeRecord(r, &data);
    REQUIRE(WriteFileAtomically(path, data).ok());
    auto bad = ReadSalvageFile(path);
    REQUIRE(bad.status().code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(std::string(bad.status().message()), Catch::Contains("trailer counts 2"));
  }
  SECTION("marked done, it is no longer pending") {
    REQUIRE(MarkSalvageDone(path).ok());
    auto none = PendingSalvageFiles(dir);
    REQUIRE(none.ok());
    CHECK(none->empty());
  }
}

TEST_CASE("a slot rewound by DiscardState is empty, stays empty when reopened, keeps its seen "
          "epoch and reuses its bodies",
          "[salvage]") {
  Diverged d;
  REQUIRE(d.slot->NoteEpochSeen(5).ok());
  REQUIRE(d.slot->DiscardState().ok());
  CHECK(d.slot->last_lsn() == 0);
  CHECK(d.slot->epoch() == 0);
  CHECK(d.slot->ListMailboxes().empty());
  CHECK(d.slot->EpochHistory().empty());
  CHECK(d.slot->seen_epoch() == 5);
  // The spool keeps the bodies, so a snapshot from the master need not resend them.
  auto has = d.slot->HasBlob(Sha1(TestMessage(1)));
  REQUIRE(has.ok());
  CHECK(*has);
  // It takes records again from LSN 1.
  REQUIRE(d.slot->CreateMailbox(kInbox).ok());
  CHECK(d.slot->last_lsn() == 1);
  d.slot.reset();
  auto reopened = ReopenSlot(d.dir.path());
  CHECK(reopened->last_lsn() == 1);
  CHECK(reopened->seen_epoch() == 5);
  CHECK(reopened->ListMailboxes().size() == 1);
}

// A master for the salvager: a slot, with an injected lost reply.
class SlotTarget : public SalvageTarget {
 public:
  explicit SlotTarget(Slot& slot) : slot_(slot) {}
  int appends = 0;             // messages actually appended
  int fail_after_append = -1;  // the n-th append is stored, then "the reply is lost"
  // Each call first lets the other coroutines on the io_context run, as a
  // call over the network would.
  bool yield = false;

  asio::awaitable<absl::StatusOr<bool>> AppendUnlessPresent(const salvagepb::SalvageMessage& m,
                                                            uint32_t count) override {
    if (yield) co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    if (!slot_.GetMailbox(m.mailbox()).ok()) {
      auto c = slot_.CreateMailbox(m.mailbox());
      if (!c.ok() && c.status().code() != absl::StatusCode::kAlreadyExists) co_return c.status();
    }
    auto r = slot_.Append({.mailbox = m.mailbox(),
                           .body = m.body(),
                           .flags = {m.flags().begin(), m.flags().end()},
                           .internal_date = m.internal_date(),
                           .unless_present = UnlessPresent{.above_uid = m.fork_uid(),
                                                           .count = count}});
    if (!r.ok()) co_return r.status();
    if (r->already_present) co_return false;
    if (++appends == fail_after_append) co_return absl::UnavailableError("connection lost");
    co_return true;
  }

 private:
  Slot& slot_;
};

absl::StatusOr<salvagepb::SalvageProgress> RunSalvage(const std::string& path,
                                                      const SalvageSet& set, SalvageTarget& t) {
  asio::io_context io;
  absl::StatusOr<salvagepb::SalvageProgress> out = absl::UnknownError("did not run");
  asio::co_spawn(io, SalvageInto(path, set, t),
                 [&](std::exception_ptr e, absl::StatusOr<salvagepb::SalvageProgress> r) {
                   REQUIRE(!e);
                   out = std::move(r);
                 });
  io.run();
  return out;
}

// Bodies (by test message number) in the mailbox, with how often each is there.
std::map<std::string, int> Bodies(Slot& slot, const std::string& mailbox) {
  std::map<std::string, int> out;
  auto msgs = slot.ListMessages(mailbox, false);
  REQUIRE(msgs.ok());
  for (const MessageInfo& m : *msgs) {
    auto b = slot.FetchBody(mailbox, m.uid);
    REQUIRE(b.ok());
    ++out[*b];
  }
  return out;
}

TEST_CASE("the salvager appends every set-aside message to the master once, flags kept, and a "
          "lost reply or a crash mid-salvage neither loses nor duplicates one",
          "[salvage]") {
  Diverged d;
  const std::string path = d.SetAside();
  const SalvageSet* set = &d.set;

  // The new master: the same history up to the fork point, then its own
  // deliveries, one of which is an MTA's retry of a message the old master
  // stored (and had answered 250 too late).
  TempDir master_dir;
  auto master = NewSlot(master_dir.path());
  REQUIRE(master->CreateMailbox(kInbox).ok());
  for (int i = 0; i < 3; ++i) Deliver(*master, i);
  Deliver(*master, 20);
  Deliver(*master, 13);  // the retry
  Deliver(*master, 21);

  SlotTarget target(*master);
  const int lost_at = GENERATE(0, 1, 2, 3);
  if (lost_at > 0) {
    // The lost_at-th append is stored, but its reply never arrives: the
    // salvager stops there (a crash right after the append is the same).
    target.fail_after_append = lost_at;
    auto first = RunSalvage(path, *set, target);
    CHECK(first.status().code() == absl::StatusCode::kUnavailable);
    auto progress = ReadSalvageProgress(path);
    REQUIRE(progress.ok());
    CHECK(progress->next() < set->messages.size());
  }
  auto done = RunSalvage(path, *set, target);
  REQUIRE(done.ok());
  CHECK(done->next() == set->messages.size());
  // 10, 11 and 14 appended once each (the one whose reply was lost is
  // found there on the resume); 13 was there already (the MTA's retry).
  CHECK(target.appends == 3);
  CHECK(done->appended() + done->already_there() == 4);
  if (lost_at == 0) CHECK(done->already_there() == 1);

  std::map<std::string, int> inbox = Bodies(*master, kInbox);
  for (int n : {0, 1, 2, 10, 11, 13, 20, 21}) {
    INFO("message " << n);
    CHECK(inbox[TestMessage(n)] == 1);
  }
  CHECK(inbox.size() == 8);
  CHECK(Bodies(*master, "user/alice/Later")[TestMessage(14)] == 1);
  // Flags kept, new UIDs above the master's own.
  auto msgs = master->ListMessages(kInbox, false);
  REQUIRE(msgs.ok());
  std::map<std::string, MessageInfo> by_guid;
  for (const MessageInfo& m : *msgs) by_guid[m.guid] = m;
  CHECK(by_guid[Sha1(TestMessage(10))].flags == std::vector<std::string>{"$Label1", "\\Flagged"});
  CHECK(by_guid[Sha1(TestMessage(11))].flags == std::vector<std::string>{"\\Seen"});
  CHECK(by_guid[Sha1(TestMessage(10))].uid > 6);

  // Run again from the start (the progress file lost): every message is
  // found there, nothing is appended.
  REQUIRE(::unlink(SalvageProgressPath(path).c_str()) == 0);
  auto again = RunSalvage(path, *set, target);
  REQUIRE(again.ok());
  CHECK(again->already_there() == 4);
  CHECK(target.appends == 3);
}

TEST_CASE("two identical messages set aside in one mailbox are both salvaged, each once",
          "[salvage]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox(kInbox).ok());
  Deliver(*slot, 0);
  const uint64_t fork = slot->last_lsn();
  Deliver(*slot, 5);
  Deliver(*slot, 5);
  SalvageSet collected;
  const std::string path = WriteSetAside(*slot, dir.path(), fork, &collected);
  const SalvageSet* set = &collected;
  REQUIRE(set->messages.size() == 2);
  TempDir master_dir;
  auto master = NewSlot(master_dir.path());
  REQUIRE(master->CreateMailbox(kInbox).ok());
  Deliver(*master, 0);
  SlotTarget target(*master);
  target.fail_after_append = 1;
  CHECK(!RunSalvage(path, *set, target).ok());
  REQUIRE(RunSalvage(path, *set, target).ok());
  CHECK(Bodies(*master, kInbox)[TestMessage(5)] == 2);
}

TEST_CASE("two salvagers of overlapping salvage sets running at the same time append each "
          "message once",
          "[salvage]") {
  // The old master A stored 12 messages past the fork point (one of them
  // twice, one in a mailbox created past it); replica B had received A's
  // records up to some point (all of them, or 5 messages past the fork)
  // when A died. Both set aside what they hold past the fork point and
  // salvage it into the new master at the same time.
  const int b_messages = GENERATE(5, 12);
  const int threads = GENERATE(1, 2);
  TempDir a_dir, b_dir;
  auto a = NewSlot(a_dir.path());
  REQUIRE(a->CreateMailbox(kInbox).ok());
  for (int i = 0; i < 3; ++i) Deliver(*a, i);
  const uint64_t fork = a->last_lsn();
  for (int n = 10; n < 20; ++n) Deliver(*a, n);
  Deliver(*a, 15);  // the same bytes again: two messages
  REQUIRE(a->CreateMailbox("user/alice/Later").ok());
  REQUIRE(a->Append({.mailbox = "user/alice/Later", .body = TestMessage(30)}).ok());
  std::vector<LogRecord> records = RecordsFrom(a_dir.path(), 1);
  if (b_messages < 12) records.resize(fork + b_messages);  // an append per LSN past the fork
  auto b = NewSlot(b_dir.path());
  REQUIRE(b->AppendReplicated(records).ok());
  SalvageSet a_set, b_set;
  const std::string a_path = WriteSetAside(*a, a_dir.path(), fork, &a_set);
  const std::string b_path = WriteSetAside(*b, b_dir.path(), fork, &b_set);
  REQUIRE(a_set.messages.size() == 12);
  REQUIRE(b_set.messages.size() == static_cast<size_t>(b_messages));

  // The new master: the history up to the fork point, then a delivery of its own.
  TempDir master_dir;
  auto master = NewSlot(master_dir.path());
  REQUIRE(master->CreateMailbox(kInbox).ok());
  for (int i = 0; i < 3; ++i) Deliver(*master, i);
  Deliver(*master, 40);

  SlotTarget a_target(*master), b_target(*master);
  a_target.yield = b_target.yield = true;
  asio::io_context io;
  absl::StatusOr<salvagepb::SalvageProgress> a_done = absl::UnknownError("did not run");
  absl::StatusOr<salvagepb::SalvageProgress> b_done = a_done;
  asio::co_spawn(io, SalvageInto(a_path, a_set, a_target),
                 [&](std::exception_ptr, absl::StatusOr<salvagepb::SalvageProgress> r) {
                   a_done = std::move(r);
                 });
  asio::co_spawn(io, SalvageInto(b_path, b_set, b_target),
                 [&](std::exception_ptr, absl::StatusOr<salvagepb::SalvageProgress> r) {
                   b_done = std::move(r);
                 });
  std::vector<std::thread> more;
  for (int t = 1; t < threads; ++t) more.emplace_back([&] { io.run(); });
  io.run();
  for (std::thread& t : more) t.join();
  INFO(a_done.status() << " / " << b_done.status());
  REQUIRE(a_done.ok());
  REQUIRE(b_done.ok());
  CHECK(a_done->next() == 12);
  CHECK(b_done->next() == static_cast<uint32_t>(b_messages));
  CHECK(a_done->appended() + a_done->already_there() == 12);
  CHECK(b_done->appended() + b_done->already_there() == static_cast<uint32_t>(b_messages));
  CHECK(a_target.appends + b_target.appends == 12);
  CHECK(a_done->appended() + b_done->appended() == 12);

  std::map<std::string, int> inbox = Bodies(*master, kInbox);
  for (int n : {0, 1, 2, 40, 10, 11, 12, 13, 14, 16, 17, 18, 19}) {
    INFO("message " << n);
    CHECK(inbox[TestMessage(n)] == 1);
  }
  CHECK(inbox[TestMessage(15)] == 2);
  CHECK(inbox.size() == 14);
  std::map<std::string, int> later = Bodies(*master, "user/alice/Later");
  CHECK(later[TestMessage(30)] == 1);
  CHECK(later.size() == 1);
}

// Runs io until done() or 30 s have passed (the server keeps io busy).
void RunUntil(asio::io_context& io, const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.run_one_for(std::chrono::milliseconds(100));
  }
}

// Two slots with the same records up to a point, at epoch 1: `new_master`
// with an INBOX and `delivered` messages, and `old_master` holding its
// records (reopened, it takes local writes: a restarted master).
struct ForkedPair {
  TempDir old_dir, new_dir;
  std::unique_ptr<Slot> old_master = NewSlot(old_dir.path());
  std::unique_ptr<Slot> new_master = NewSlot(new_dir.path());

  explicit ForkedPair(int delivered) {
    REQUIRE(new_master->BeginEpoch(1).ok());
    REQUIRE(new_master->CreateMailbox(kInbox).ok());
    for (int i = 0; i < delivered; ++i) Deliver(*new_master, i);
    REQUIRE(old_master->AppendReplicated(RecordsFrom(new_dir.path(), 1)).ok());
    old_master.reset();
    old_master = ReopenSlot(old_dir.path());
  }
  // A sync client pushing new_master to a sync server on the port.
  sync::SyncClientOptions Client(uint16_t port) const {
    sync::SyncClientOptions o;
    o.slot = SlotPaths::Under(new_dir.path());
    o.server = absl::StrCat("127.0.0.1:", port);
    o.secret = "salvage-test-secret";
    return o;
  }
};

TEST_CASE("a replica told DIVERGED by a master of a newer epoch sets its records past the fork "
          "point aside, is rewound, and the master's next session reseeds it with a snapshot",
          "[salvage][sync]") {
  // The old master: epoch 1, three messages, then two of its own past the
  // fork point. The new master: the same up to the fork, then epoch 2.
  ForkedPair p(3);
  auto& old_master = p.old_master;
  auto& new_master = p.new_master;
  const std::string& old_dir = p.old_dir.path();
  const uint64_t fork = old_master->last_lsn();
  Deliver(*old_master, 30, {"\\Answered"});
  Deliver(*old_master, 31);
  REQUIRE(new_master->BeginEpoch(2).ok());
  Deliver(*new_master, 40);

  asio::io_context io;
  std::vector<std::pair<uint64_t, uint64_t>> calls;  // (fork, master epoch)
  sync::SyncServer server(
      io, *old_master,
      {.listen = "127.0.0.1:0",
       .secret = "salvage-test-secret",
       .on_diverged = [&](uint64_t f, uint64_t epoch) -> absl::Status {
         calls.emplace_back(f, epoch);
         auto set = CollectSalvage(*old_master, f, epoch);
         if (!set.ok()) return set.status();
         absl::Status w =
             WriteSalvageFile(SalvageFilePath(SalvageDir(old_dir), set->header), *set);
         if (!w.ok()) return w;
         return old_master->DiscardState();
       }});
  REQUIRE(server.Listen().ok());
  asio::co_spawn(io, server.Run(), asio::detached);
  auto run_client = [&]() {
    sync::SyncClientOptions o = p.Client(server.port());
    o.mode = sync::SyncClientOptions::Mode::kCatchUp;
    sync::SyncClient client(io, o);
    absl::Status result = absl::UnknownError("did not finish");
    bool done = false;
    asio::co_spawn(io, client.Run(), [&](std::exception_ptr, absl::Status st) {
      result = st;
      done = true;
    });
    RunUntil(io, [&] { return done; });
    REQUIRE(done);
    return result;
  };
  absl::Status first = run_client();
  CHECK(first.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(first.message()), Catch::Contains("diverged after LSN"));
  // The client is gone once it sent DIVERGED; the server acts on it after.
  RunUntil(io, [&] { return server.stats().divergences == 1; });
  REQUIRE(server.stats().divergences == 1);
  REQUIRE(calls.size() == 1);
  CHECK(calls[0] == std::make_pair(fork, uint64_t{2}));
  CHECK(old_master->last_lsn() == 0);
  auto pending = PendingSalvageFiles(SalvageDir(old_dir));
  REQUIRE(pending.ok());
  REQUIRE(pending->size() == 1);
  auto set = ReadSalvageFile(pending->front());
  REQUIRE(set.ok());
  REQUIRE(set->messages.size() == 2);
  CHECK(set->messages[0].body() == TestMessage(30));
  CHECK(set->messages[0].flags(0) == "\\Answered");

  REQUIRE(run_client().ok());
  CHECK(old_master->last_lsn() == new_master->last_lsn());
  CHECK(old_master->epoch() == 2);
  CHECK(old_master->SlotDigest().Bytes() == new_master->SlotDigest().Bytes());
  CHECK(calls.size() == 1);
  server.Stop();
  io.run_for(std::chrono::seconds(5));
}

TEST_CASE("a master of an epoch no newer than the replica's records cannot have it rewound",
          "[salvage][sync]") {
  // Both at epoch 1; the replica has two records the master lacks, and
  // the master (wrongly) claims a fork: nothing is set aside or discarded.
  ForkedPair p(0);
  auto& old_master = p.old_master;
  Deliver(*old_master, 30);
  Deliver(*old_master, 31);
  const uint64_t last = old_master->last_lsn();
  asio::io_context io;
  int calls = 0;
  sync::SyncServer server(io, *old_master,
                          {.listen = "127.0.0.1:0",
                           .secret = "salvage-test-secret",
                           .on_diverged = [&](uint64_t, uint64_t) -> absl::Status {
                             ++calls;
                             return old_master->DiscardState();
                           }});
  REQUIRE(server.Listen().ok());
  asio::co_spawn(io, server.Run(), asio::detached);
  sync::SyncClient client(io, p.Client(server.port()));
  bool done = false;
  asio::co_spawn(io, client.Run(), [&](std::exception_ptr, absl::Status st) {
    CHECK(st.code() == absl::StatusCode::kFailedPrecondition);
    done = true;
  });
  RunUntil(io, [&] { return done && server.stats().divergences_refused == 1; });
  REQUIRE(done);
  CHECK(server.stats().divergences_refused == 1);
  CHECK(calls == 0);
  CHECK(old_master->last_lsn() == last);
  server.Stop();
  io.run_for(std::chrono::seconds(5));
}

}  // namespace
}  // namespace mailrepl
