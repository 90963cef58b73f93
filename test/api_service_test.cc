// ApiService end to end: a real Slot in a temporary directory, a real
// RpcServer on 127.0.0.1 serving ApiService::Handler(), and a real
// RpcClient (authenticated, framed) calling it from the io thread.
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "asio.hpp"
#include "catch2/catch.hpp"
#include "proto/api.pb.h"
#include "replicad/api_service.h"
#include "rpc/rpc_client.h"
#include "rpc/rpc_server.h"
#include "test/process_util.h"
#include "test/test_util.h"

namespace mailrepl::api {
namespace {

using Catch::Matchers::Contains;
using testing::TempDir;

constexpr char kSecret[] = "api service test secret";
constexpr uint64_t kEpoch = 5;

// The role replicad would report: master at kEpoch unless told otherwise.
struct FakeRole {
  std::atomic<bool> master{true};
  std::atomic<uint64_t> epoch{kEpoch};
  std::atomic<int> checks{0};
  // Set: check_write blocks in it (DrainWrites test).
  std::function<void()> hold;

  absl::Status CheckWrite(uint64_t e) {
    ++checks;
    if (hold) hold();
    if (!master) {
      return absl::FailedPreconditionError(absl::StrCat(
          "this slot is a replica at epoch ", epoch.load(), "; the master is 127.0.0.1:7001"));
    }
    if (e != epoch) {
      return absl::FailedPreconditionError(absl::StrCat(
          "epoch ", e, " is not current: the current epoch is ", epoch.load(),
          " and this slot is its master"));
    }
    return absl::OkStatus();
  }
  apipb::SlotState State() const {
    apipb::SlotState s;
    s.set_master(master);
    s.set_epoch(epoch);
    s.set_master_api_address("127.0.0.1:7001");
    return s;
  }
};

class ApiHarness {
 public:
  explicit ApiHarness(int threads = 4) : slot_(testing::NewSlot(dir_.path())) {
    service_ = std::make_unique<ApiService>(
        *slot_, ApiServiceOptions{
                    .threads = threads,
                    .check_write = [this](uint64_t e) { return role.CheckWrite(e); },
                    .slot_state = [this] { return role.State(); }});
    server_ = std::make_unique<rpc::RpcServer>(
        io_, rpc::RpcServerOptions{.listen = "127.0.0.1:0", .service = "api", .secret = kSecret},
        service_->Handler());
    REQUIRE(server_->Listen().ok());
    asio::co_spawn(io_, server_->Run(), asio::detached);
    for (int i = 0; i < 4; ++i) {
      clients_.push_back(std::make_unique<rpc::RpcClient>(
          io_, rpc::RpcClientOptions{.address = absl::StrCat("127.0.0.1:", server_->port()),
                                     .service = "api",
                                     .secret = kSecret,
                                     .client = absl::StrCat("api_service_test ", i)}));
    }
    thread_ = std::thread([this] { io_.run(); });
  }
  ~ApiHarness() {
    asio::post(io_, [this] {
      for (auto& c : clients_) c->Close();
      server_->Stop();
    });
    thread_.join();
  }

  // One call through client `which`, waited for from the test thread.
  absl::StatusOr<apipb::Response> Call(const apipb::Request& request, int which = 0) {
    rpc::RpcClient* client = clients_[which].get();
    auto call = [client, request]() -> asio::awaitable<absl::StatusOr<apipb::Response>> {
      co_return co_await client->Call<apipb::Response>(request, absl::Seconds(30));
    };
    return asio::co_spawn(io_, std::move(call), asio::use_future).get();
  }
  absl::StatusOr<std::string> CallRaw(std::string bytes) {
    rpc::RpcClient* client = clients_[0].get();
    auto call = [client, bytes]() -> asio::awaitable<absl::StatusOr<std::string>> {
      co_return co_await client->CallRaw(bytes, absl::Seconds(30));
    };
    return asio::co_spawn(io_, std::move(call), asio::use_future).get();
  }
  std::future<void> Drain() {
    auto drain = [this]() -> asio::awaitable<void> { co_await service_->DrainWrites(); };
    return asio::co_spawn(io_, std::move(drain), asio::use_future);
  }

  Slot& slot() { return *slot_; }
  ApiService& service() { return *service_; }
  FakeRole role;

 private:
  TempDir dir_;
  std::unique_ptr<Slot> slot_;
  std::unique_ptr<ApiService> service_;
  asio::io_context io_;
  std::unique_ptr<rpc::RpcServer> server_;
  std::vector<std::unique_ptr<rpc::RpcClient>> clients_;
  std::thread thread_;
};

// ---- request builders ----

apipb::Request Epoch(uint64_t epoch) {
  apipb::Request r;
  r.set_epoch(epoch);
  return r;
}
apipb::Request Create(const std::string& name, uint64_t epoch = kEpoch) {
  apipb::Request r = Epoch(epoch);
  r.mutable_create_mailbox()->set_name(name);
  return r;
}
apipb::Request Rename(const std::string& from, const std::string& to, uint64_t epoch = kEpoch) {
  apipb::Request r = Epoch(epoch);
  r.mutable_rename_mailbox()->set_from(from);
  r.mutable_rename_mailbox()->set_to(to);
  return r;
}
apipb::Request Delete(const std::string& name, uint64_t epoch = kEpoch) {
  apipb::Request r = Epoch(epoch);
  r.mutable_delete_mailbox()->set_name(name);
  return r;
}
apipb::Request AppendTo(const std::string& mailbox, const std::string& message,
                        std::vector<std::string> flags = {}, uint64_t epoch = kEpoch) {
  apipb::Request r = Epoch(epoch);
  r.mutable_append()->set_mailbox(mailbox);
  r.mutable_append()->set_message(message);
  for (const auto& f : flags) r.mutable_append()->add_flags(f);
  return r;
}
apipb::Request Flags(const std::string& mailbox, std::vector<uint32_t> uids,
                     apipb::SetFlags::Op op, std::vector<std::string> flags,
                     uint64_t epoch = kEpoch) {
  apipb::Request r = Epoch(epoch);
  apipb::SetFlags* f = r.mutable_set_flags();
  f->set_mailbox(mailbox);
  for (uint32_t u : uids) f->add_uids(u);
  f->set_op(op);
  for (const auto& flag : flags) f->add_flags(flag);
  return r;
}
apipb::Request ExpungeUids(const std::string& mailbox, std::vector<uint32_t> uids,
                           uint64_t epoch = kEpoch) {
  apipb::Request r = Epoch(epoch);
  r.mutable_expunge()->set_mailbox(mailbox);
  for (uint32_t u : uids) r.mutable_expunge()->add_uids(u);
  return r;
}
apipb::Request QuotaSet(const std::string& user, uint64_t storage, uint64_t messages,
                        uint64_t epoch = kEpoch) {
  apipb::Request r = Epoch(epoch);
  r.mutable_set_quota()->set_user(user);
  r.mutable_set_quota()->set_storage_limit(storage);
  r.mutable_set_quota()->set_message_limit(messages);
  return r;
}
apipb::Request QuotaGet(const std::string& user) {
  apipb::Request r;
  r.mutable_get_quota()->set_user(user);
  return r;
}
apipb::Request ListBoxes(const std::string& prefix = "") {
  apipb::Request r;
  r.mutable_list_mailboxes()->set_prefix(prefix);
  return r;
}
apipb::Request ListMsgs(const std::string& mailbox) {
  apipb::Request r;
  r.mutable_list_messages()->set_mailbox(mailbox);
  return r;
}
apipb::Request Fetch(const std::string& mailbox, uint32_t uid) {
  apipb::Request r;
  r.mutable_fetch_body()->set_mailbox(mailbox);
  r.mutable_fetch_body()->set_uid(uid);
  return r;
}
apipb::Request SlotInfo() {
  apipb::Request r;
  r.mutable_get_slot();
  return r;
}

std::vector<std::string> Names(const apipb::Response& r) {
  std::vector<std::string> names;
  for (const auto& m : r.mailboxes()) names.push_back(m.name());
  return names;
}

std::vector<std::string> FlagsOf(const apipb::Message& m) {
  return {m.flags().begin(), m.flags().end()};
}

// A message with CRLFs, 8-bit bytes and a NUL: fetched back byte for byte.
std::string OddMessage() {
  return std::string("From: a@example.test\r\nSubject: caf\xc3\xa9\r\n\r\nbody\0with NUL\r\n\xff\r\n",
                     55);
}

// Every kind of write, for "refused and changes nothing" checks. Each
// would succeed at kEpoch on the state that SetUpMailbox() leaves.
std::vector<std::pair<std::string, apipb::Request>> AllWrites(uint64_t epoch) {
  return {
      {"create", Create("user/alice/New", epoch)},
      {"rename", Rename("user/alice/Sent", "user/alice/Old", epoch)},
      {"delete", Delete("user/alice/Trash", epoch)},
      {"append", AppendTo("user/alice", testing::TestMessage(9), {}, epoch)},
      {"set flags", Flags("user/alice", {1}, apipb::SetFlags::ADD, {"\\Flagged"}, epoch)},
      {"expunge", ExpungeUids("user/alice", {1}, epoch)},
      {"set quota", QuotaSet("alice", 1000000, 100, epoch)},
  };
}

void SetUpMailbox(ApiHarness& h) {
  REQUIRE(h.Call(Create("user/alice")).ok());
  REQUIRE(h.Call(Create("user/alice/Sent")).ok());
  REQUIRE(h.Call(Create("user/alice/Trash")).ok());
  REQUIRE(h.Call(AppendTo("user/alice", testing::TestMessage(1))).ok());
}

// What a refused write must leave alone.
struct Snapshot {
  uint64_t lsn;
  std::string mailboxes;
  std::string messages;
  std::string quota;
};
Snapshot Take(ApiHarness& h) {
  return {h.slot().last_lsn(), h.Call(ListBoxes())->DebugString(),
          h.Call(ListMsgs("user/alice"))->DebugString(), h.Call(QuotaGet("alice"))->DebugString()};
}
void CheckUnchanged(ApiHarness& h, const Snapshot& before) {
  Snapshot after = Take(h);
  CHECK(after.lsn == before.lsn);
  CHECK(after.mailboxes == before.mailboxes);
  CHECK(after.messages == before.messages);
  CHECK(after.quota == before.quota);
}

// ---- tests ----

TEST_CASE("every operation round-trips from RpcClient through RpcServer to the slot",
          "[api]") {
  ApiHarness h;
  uint64_t last = h.slot().last_lsn();
  auto wrote = [&](const absl::StatusOr<apipb::Response>& r) {
    INFO(r.status());
    REQUIRE(r.ok());
    CHECK(r->lsn() == h.slot().last_lsn());
    CHECK(r->lsn() > last);
    last = r->lsn();
  };

  absl::StatusOr<apipb::Response> r = h.Call(Create("user/alice"));
  wrote(r);
  REQUIRE(r->mailboxes_size() == 1);
  CHECK(r->mailboxes(0).name() == "user/alice");
  CHECK(r->mailboxes(0).id().size() == 32);
  CHECK(r->mailboxes(0).uidvalidity() != 0);
  const std::string empty_digest = r->mailboxes(0).digest();
  wrote(h.Call(Create("user/alice/Sent")));
  wrote(h.Call(Create("user/bob")));

  // Append: the exact bytes, flags normalized, GUID in hex.
  const std::string message = OddMessage();
  r = h.Call(AppendTo("user/alice", message, {"\\Seen", "$Label1", "\\Seen"}));
  wrote(r);
  REQUIRE(r->messages_size() == 1);
  const apipb::Message appended = r->messages(0);
  CHECK(appended.uid() == 1);
  CHECK(appended.size() == message.size());
  CHECK(appended.guid().size() == 40);
  CHECK(appended.guid() == absl::AsciiStrToLower(appended.guid()));
  CHECK(FlagsOf(appended) == std::vector<std::string>{"$Label1", "\\Seen"});
  wrote(h.Call(AppendTo("user/alice", testing::TestMessage(2))));

  // Reads.
  r = h.Call(ListBoxes());
  REQUIRE(r.ok());
  CHECK(Names(*r) == std::vector<std::string>{"user/alice", "user/alice/Sent", "user/bob"});
  CHECK(r->lsn() == 0);  // reads carry no LSN
  r = h.Call(ListBoxes("user/alice"));
  CHECK(Names(*r) == std::vector<std::string>{"user/alice", "user/alice/Sent"});
  CHECK(r->mailboxes(0).messages() == 2);
  CHECK(r->mailboxes(0).last_uid() == 2);
  CHECK(r->mailboxes(0).bytes() == message.size() + testing::TestMessage(2).size());
  // The digest the consistency check compares: 32 hex digits, the slot's
  // own, changed by the appends.
  const std::string& digest = r->mailboxes(0).digest();
  CHECK(digest.size() == 32);
  CHECK(digest.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(digest != empty_digest);
  CHECK(digest == h.slot().GetMailbox("user/alice")->MailboxDigest().Hex());

  r = h.Call(ListMsgs("user/alice"));
  REQUIRE(r.ok());
  REQUIRE(r->messages_size() == 2);
  CHECK(r->messages(0).uid() == 1);
  CHECK(r->messages(0).guid() == appended.guid());
  CHECK(r->messages(0).size() == message.size());
  CHECK(r->messages(0).internal_date() > 0);
  CHECK(r->messages(0).modseq() > 0);
  CHECK(FlagsOf(r->messages(0)) == std::vector<std::string>{"$Label1", "\\Seen"});

  r = h.Call(Fetch("user/alice", 1));
  REQUIRE(r.ok());
  CHECK(r->body() == message);

  // Flags: add, remove, replace.
  wrote(h.Call(Flags("user/alice", {1, 2}, apipb::SetFlags::ADD, {"\\Flagged"})));
  r = h.Call(ListMsgs("user/alice"));
  CHECK(FlagsOf(r->messages(0)) == std::vector<std::string>{"$Label1", "\\Flagged", "\\Seen"});
  CHECK(FlagsOf(r->messages(1)) == std::vector<std::string>{"\\Flagged"});
  wrote(h.Call(Flags("user/alice", {1}, apipb::SetFlags::REMOVE, {"\\Seen"})));
  wrote(h.Call(Flags("user/alice", {2}, apipb::SetFlags::REPLACE, {"\\Answered"})));
  r = h.Call(ListMsgs("user/alice"));
  CHECK(FlagsOf(r->messages(0)) == std::vector<std::string>{"$Label1", "\\Flagged"});
  CHECK(FlagsOf(r->messages(1)) == std::vector<std::string>{"\\Answered"});

  // Expunge hides the message from lists and fetches.
  wrote(h.Call(ExpungeUids("user/alice", {2})));
  r = h.Call(ListMsgs("user/alice"));
  REQUIRE(r->messages_size() == 1);
  CHECK(r->messages(0).uid() == 1);

  // Quota.
  r = h.Call(QuotaSet("alice", 10 << 20, 1000));
  wrote(r);
  CHECK(r->quota().storage_limit() == 10 << 20);
  r = h.Call(QuotaGet("alice"));
  REQUIRE(r.ok());
  CHECK(r->quota().user() == "alice");
  CHECK(r->quota().storage_limit() == 10 << 20);
  CHECK(r->quota().message_limit() == 1000);
  CHECK(r->quota().messages_used() == 1);
  CHECK(r->quota().storage_used() == message.size());

  // Rename carries the children along; delete.
  wrote(h.Call(Rename("user/alice/Sent", "user/alice/Archive")));
  wrote(h.Call(Delete("user/bob")));
  r = h.Call(ListBoxes());
  CHECK(Names(*r) == std::vector<std::string>{"user/alice", "user/alice/Archive"});

  CHECK(h.service().stats().writes == 12);
  CHECK(h.service().stats().refused_writes == 0);
  CHECK(h.role.checks == 12);
}

TEST_CASE("a write with a stale epoch or epoch 0 is refused and changes nothing", "[api]") {
  ApiHarness h;
  SetUpMailbox(h);
  const Snapshot before = Take(h);
  for (uint64_t epoch : {uint64_t{0}, kEpoch - 1, kEpoch + 1}) {
    for (const auto& [what, request] : AllWrites(epoch)) {
      INFO(what << " at epoch " << epoch);
      absl::StatusOr<apipb::Response> r = h.Call(request);
      CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
      if (epoch == 0) {
        CHECK_THAT(std::string(r.status().message()),
                   Contains("every write carries the epoch; ask GetSlot"));
      } else {
        // replicad's message names the current epoch.
        CHECK_THAT(std::string(r.status().message()), Contains("the current epoch is 5"));
      }
    }
  }
  CheckUnchanged(h, before);
  // Epoch 0 is refused before replicad is even asked.
  CHECK(h.role.checks == 4 + 2 * 7);
  CHECK(h.service().stats().refused_writes == 3 * 7);
  // The same writes at the current epoch go through.
  for (const auto& [what, request] : AllWrites(kEpoch)) {
    INFO(what);
    CHECK(h.Call(request).ok());
  }
  CHECK(h.slot().last_lsn() == before.lsn + 7);
}

TEST_CASE("mailbox names with .. or control characters are refused and nothing is created",
          "[api]") {
  ApiHarness h;
  SetUpMailbox(h);
  const Snapshot before = Take(h);
  const int checks = h.role.checks;
  const std::vector<std::string> bad = {
      "user/../x",        "user/alice/../bob", "user/alice/..",  "user/./alice",
      "/user/alice",      "/etc/passwd",       "user/alice/",    "user//alice",
      "user/a\x01z",      "user/alice\nFolder", std::string("user/a\0b", 8),
      "user/alice/\x7f", "",                  "elsewhere/alice"};
  for (const std::string& name : bad) {
    INFO(absl::CEscape(name));
    for (const apipb::Request& request :
         {Create(name), Rename("user/alice/Sent", name), Rename(name, "user/alice/Other"),
          Delete(name), AppendTo(name, testing::TestMessage(3)),
          Flags(name, {1}, apipb::SetFlags::ADD, {"\\Seen"}), ExpungeUids(name, {1}),
          ListMsgs(name), Fetch(name, 1)}) {
      INFO(request.ShortDebugString());
      absl::StatusOr<apipb::Response> r = h.Call(request);
      CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK_THAT(std::string(r.status().message()), Contains("mailbox name"));
    }
  }
  CheckUnchanged(h, before);
  CHECK(h.role.checks == checks);  // refused before replicad was asked
  // Bad flags and user names likewise.
  CHECK(h.Call(AppendTo("user/alice", "x", {"bad flag"})).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(h.Call(Flags("user/alice", {1}, apipb::SetFlags::ADD, {"(x"})).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(h.Call(QuotaSet("../alice", 1, 1)).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(h.Call(QuotaGet("al/ice")).status().code() == absl::StatusCode::kInvalidArgument);
  CheckUnchanged(h, before);
}

TEST_CASE("a refusal quoting a long mailbox name of multi-byte characters reaches the client",
          "[api]") {
  // The refusal shows the first 80 bytes of the name: cut through a UTF-8
  // character, the message was not UTF-8, the Reply not a valid proto3
  // message, and the client failed to parse it instead of seeing the
  // refusal (found by test/fuzz/rpc_fuzzer).
  ApiHarness h;
  SetUpMailbox(h);
  auto accents = [](std::string s, size_t n) {
    while (n-- > 0) s += "\xc3\xa9";  // e-acute, two bytes
    return s;
  };
  for (const char* prefix : {"user/alice/", "user/alice/a"}) {
    // Over 490 bytes; and one that is too short for that but has "..".
    for (const std::string& bad : {accents(prefix, 250), accents(prefix, 50) + "/../x"}) {
      INFO(absl::CEscape(bad));
      absl::StatusOr<apipb::Response> r = h.Call(Create(bad));
      CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK_THAT(std::string(r.status().message()), Contains("create_mailbox.name"));
      CHECK_THAT(std::string(r.status().message()), Contains("\xc3\xa9"));
    }
  }
  CHECK(h.Call(ListBoxes()).ok());  // the connection is still good
}

TEST_CASE("a write is refused with replicad's message when the slot is not master, "
          "and reads still work",
          "[api]") {
  ApiHarness h;
  SetUpMailbox(h);
  const Snapshot before = Take(h);
  h.role.master = false;
  for (const auto& [what, request] : AllWrites(kEpoch)) {
    INFO(what);
    absl::StatusOr<apipb::Response> r = h.Call(request);
    CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK(r.status().message() ==
          "this slot is a replica at epoch 5; the master is 127.0.0.1:7001");
  }
  CheckUnchanged(h, before);
  // Reads are answered by any slot.
  absl::StatusOr<apipb::Response> r = h.Call(ListBoxes());
  REQUIRE(r.ok());
  CHECK(Names(*r) ==
        std::vector<std::string>{"user/alice", "user/alice/Sent", "user/alice/Trash"});
  r = h.Call(Fetch("user/alice", 1));
  REQUIRE(r.ok());
  CHECK(r->body() == testing::TestMessage(1));
  CHECK(h.Call(QuotaGet("alice"))->quota().messages_used() == 1);
  r = h.Call(SlotInfo());
  REQUIRE(r.ok());
  CHECK_FALSE(r->slot().master());
  CHECK(r->slot().master_api_address() == "127.0.0.1:7001");
}

TEST_CASE("GetSlot reports replicad's role and the slot's own identity and LSN", "[api]") {
  ApiHarness h;
  SetUpMailbox(h);
  absl::StatusOr<apipb::Response> r = h.Call(SlotInfo());
  REQUIRE(r.ok());
  CHECK(r->slot().store_id() == 1);
  CHECK(r->slot().slot_id() == 1);
  CHECK(r->slot().master());
  CHECK(r->slot().epoch() == kEpoch);
  CHECK(r->slot().last_lsn() == h.slot().last_lsn());
  CHECK(r->slot().last_lsn() >= 4);
}

TEST_CASE("a request without an operation, or unparsable, is refused as INVALID_ARGUMENT",
          "[api]") {
  ApiHarness h;
  SetUpMailbox(h);
  const Snapshot before = Take(h);
  absl::StatusOr<apipb::Response> r = h.Call(apipb::Request());
  CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(r.status().message()), Contains("no operation"));
  CHECK(h.Call(Epoch(kEpoch)).status().code() == absl::StatusCode::kInvalidArgument);

  // An operation from a newer client (an unknown field of the oneof).
  std::string unknown = Epoch(kEpoch).SerializeAsString();
  unknown += std::string("\xa2\x06\x00", 3);  // field 100, length-delimited, empty
  absl::StatusOr<std::string> raw = h.CallRaw(unknown);
  CHECK(raw.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(raw.status().message()), Contains("no operation"));

  raw = h.CallRaw(std::string("\xff\xff\xff\xff\x0f", 5));
  CHECK(raw.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(raw.status().message()), Contains("unparsable"));

  // An unknown SetFlags op value.
  apipb::Request flags = Flags("user/alice", {1}, apipb::SetFlags::ADD, {"\\Seen"});
  flags.mutable_set_flags()->set_op(static_cast<apipb::SetFlags::Op>(7));
  r = h.Call(flags);
  CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(r.status().message()), Contains("set_flags.op"));
  CheckUnchanged(h, before);
  // The connection is still good after errors.
  CHECK(h.Call(ListBoxes()).ok());
}

TEST_CASE("slot errors come back with the slot's code and message", "[api]") {
  ApiHarness h;
  SetUpMailbox(h);
  absl::StatusOr<apipb::Response> r = h.Call(AppendTo("user/nobody", "x"));
  CHECK(r.status().code() == absl::StatusCode::kNotFound);
  CHECK(r.status().message() == "mailbox 'user/nobody' does not exist");
  r = h.Call(Fetch("user/alice", 99));
  CHECK(r.status().code() == absl::StatusCode::kNotFound);
  r = h.Call(Delete("user/alice"));
  CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(r.status().message()), Contains("has children"));
  r = h.Call(Create("user/alice"));
  CHECK(r.status().code() == absl::StatusCode::kAlreadyExists);
  REQUIRE(h.Call(QuotaSet("alice", 0, 1)).ok());
  r = h.Call(AppendTo("user/alice", testing::TestMessage(4)));
  CHECK(r.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(r.status().message()), Contains("over quota"));
  r = h.Call(AppendTo("user/alice", ""));
  CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(h.service().stats().errors == 6);
}

TEST_CASE("an append with unless_present appends nothing and says already_present when the "
          "mailbox holds the message above the given UID",
          "[api]") {
  ApiHarness h;
  SetUpMailbox(h);  // message 1 at UID 1
  auto unless = [](int n, uint32_t above_uid, uint32_t count) {
    apipb::Request r = AppendTo("user/alice", testing::TestMessage(n));
    r.mutable_append()->mutable_unless_present()->set_above_uid(above_uid);
    r.mutable_append()->mutable_unless_present()->set_count(count);
    return r;
  };
  const uint64_t lsn = h.slot().last_lsn();
  absl::StatusOr<apipb::Response> r = h.Call(unless(1, 0, 1));
  REQUIRE(r.ok());
  CHECK(r->already_present());
  REQUIRE(r->messages_size() == 1);
  CHECK(r->messages(0).uid() == 1);
  CHECK(r->messages(0).guid() == absl::BytesToHexString(Sha1(testing::TestMessage(1))));
  CHECK(h.slot().last_lsn() == lsn);

  // Not above UID 1, or a second copy wanted: appended.
  r = h.Call(unless(1, 1, 1));
  REQUIRE(r.ok());
  CHECK_FALSE(r->already_present());
  REQUIRE(r->messages_size() == 1);
  CHECK(r->messages(0).uid() == 2);
  CHECK(r->lsn() == lsn + 1);
  r = h.Call(unless(1, 0, 3));
  REQUIRE(r.ok());
  CHECK_FALSE(r->already_present());
  CHECK(r->messages(0).uid() == 3);
  r = h.Call(unless(1, 0, 3));
  REQUIRE(r.ok());
  CHECK(r->already_present());
  CHECK(r->messages(0).uid() == 3);
  CHECK(h.Call(ListMsgs("user/alice"))->messages_size() == 3);

  // A count of 0 is refused before it reaches the slot.
  r = h.Call(unless(1, 0, 0));
  CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(r.status().message()), Contains("append.unless_present.count"));
}

TEST_CASE("appends from several connections run concurrently and all land", "[api]") {
  ApiHarness h;
  REQUIRE(h.Call(Create("user/alice")).ok());
  std::vector<std::thread> threads;
  std::atomic<int> failed{0};
  for (int c = 0; c < 4; ++c) {
    threads.emplace_back([&h, &failed, c] {
      for (int i = 0; i < 10; ++i) {
        if (!h.Call(AppendTo("user/alice", testing::TestMessage(c * 100 + i)), c).ok()) {
          ++failed;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failed == 0);
  absl::StatusOr<apipb::Response> r = h.Call(ListMsgs("user/alice"));
  REQUIRE(r.ok());
  CHECK(r->messages_size() == 40);
}

TEST_CASE("DrainWrites returns only after a write that passed check_write is durable",
          "[api]") {
  ApiHarness h;
  REQUIRE(h.Call(Create("user/alice")).ok());
  // Nothing in flight: returns at once.
  REQUIRE(h.Drain().wait_for(std::chrono::seconds(30)) == std::future_status::ready);

  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> entered{false};
  h.role.hold = [&] {
    entered = true;
    released.wait();
  };
  const uint64_t lsn_before = h.slot().last_lsn();
  std::future<absl::StatusOr<apipb::Response>> write = std::async(
      std::launch::async, [&] { return h.Call(AppendTo("user/alice", testing::TestMessage(1))); });
  REQUIRE(testing::WaitFor([&] { return entered.load(); }, absl::Seconds(30)));
  // The write passed (is in) check_write: a drain must wait for it.
  std::atomic<uint64_t> lsn_at_drain{0};
  std::future<void> drained = std::async(std::launch::async, [&] {
    h.Drain().get();
    lsn_at_drain = h.slot().last_lsn();
  });
  CHECK(drained.wait_for(std::chrono::milliseconds(200)) == std::future_status::timeout);
  release.set_value();
  drained.get();
  REQUIRE(write.get().ok());
  CHECK(lsn_at_drain == lsn_before + 1);
}

}  // namespace
}  // namespace mailrepl::api
