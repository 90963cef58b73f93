// `replctl mail` (tools/replctl_mail.h): read-only views of a user's mail on
// a live cluster. The name mapping; the digest command against a fake slot
// API (the digest shown as the slot sent it, a replicad that sends none, a
// mailbox that keeps changing); then a real dev cluster: mail delivered with
// smtplib.LMTP is listed, shown and fetched byte for byte on the master and
// on a replica, their mailbox digests agree with each other and with the
// slot's own (mailctl digest on the stopped replica), also after an
// expunge, and every failure says what failed and exits as replctl
// documents.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "asio.hpp"
#include "catch2/catch.hpp"
#include "common/file_util.h"
#include "proto/api.pb.h"
#include "proto/coord.pb.h"
#include "rpc/rpc_server.h"
#include "store/mailbox_name.h"
#include "test/cluster_harness.h"
#include "test/test_util.h"
#include "tools/replctl_mail.h"

namespace mailrepl::testing {
namespace {

// What the LMTP server puts in front of every message it stores
// (replicad/lmtp_server.cc); lmtp_deliver.py's envelope sender.
constexpr char kReturnPath[] = "Return-Path: <bench@bench.invalid>\r\n";

// A message to USER with a dot-stuffed line and 8-bit bytes.
std::string Eml(int i, const std::string& user) {
  return absl::StrCat("From: sender@example.org\r\nTo: ", user,
                      "@example.com\r\nSubject: replctl mail test ", i, "\r\nMessage-ID: <", i,
                      ".mail@example.org>\r\n\r\nBody of message ", i,
                      ".\r\n.a line that starts with a dot\r\n\xc3\xa9t\xc3\xa9\r\n");
}

// Writes messages[i] as DIR/i.eml (tools/lmtp_deliver.py's input) and
// delivers them all with smtplib.LMTP; REQUIREs a 250 for each.
void DeliverAll(Cluster& c, const TempDir& dir, const std::vector<std::string>& messages) {
  for (size_t i = 0; i < messages.size(); ++i) {
    REQUIRE(WriteFileAtomically(dir.Sub(absl::StrCat(i, ".eml")), messages[i]).ok());
  }
  std::string summary;
  const auto results =
      c.Deliver(dir.path(), 0, static_cast<int>(messages.size()), 1, 10, &summary);
  INFO(summary << Cluster::NotAcked(results));
  REQUIRE(Cluster::Count(results, 250) == static_cast<int>(messages.size()));
}

// The string or number after "key": in a one-line JSON object ("" if none).
std::string JsonField(const std::string& json, const std::string& key) {
  const std::string start = absl::StrCat("\"", key, "\":");
  size_t at = json.find(start);
  if (at == std::string::npos) return "";
  at += start.size();
  if (json[at] == '"') return json.substr(at + 1, json.find('"', at + 1) - at - 1);
  return json.substr(at, json.find_first_of(",}", at) - at);
}

// The store's epoch, from its master (writes must carry it).
uint64_t Epoch(Cluster& c, uint64_t master) {
  apipb::Request get_slot;
  get_slot.mutable_get_slot();
  absl::StatusOr<apipb::Response> r = c.Api(master, get_slot);
  REQUIRE(r.ok());
  return r->slot().epoch();
}

// The UID and the rest of each line of `mail messages` (header skipped).
std::map<uint32_t, std::vector<std::string>> MessageLines(const std::string& out) {
  std::map<uint32_t, std::vector<std::string>> lines;
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    uint32_t uid;
    if (!f.empty() && absl::SimpleAtoi(f[0], &uid)) lines[uid] = f;
  }
  return lines;
}

TEST_CASE("mailbox names are taken and shown as the user sees them", "[mail]") {
  using tools::MailboxFullName;
  using tools::MailboxShortName;
  CHECK(tools::MailUser("Bob+lists@Example.com") == "bob");
  CHECK(MailboxFullName("bob", "INBOX") == "user/bob");
  CHECK(MailboxFullName("bob", "inbox") == "user/bob");
  CHECK(MailboxFullName("bob", "Sent") == "user/bob/Sent");
  CHECK(MailboxFullName("bob", "INBOX/Sent") == "user/bob/Sent");
  CHECK(MailboxFullName("bob", "user/bob/Sent") == "user/bob/Sent");
  // Another user's name is a folder of bob's; "../" is left to the slot.
  CHECK(MailboxFullName("bob", "user/alice") == "user/bob/user/alice");
  CHECK(MailboxFullName("bob", "../alice") == "user/bob/../alice");
  CHECK(MailboxShortName("bob", "user/bob") == "INBOX");
  CHECK(MailboxShortName("bob", "user/bob/Sent") == "INBOX/Sent");
  CHECK(MailboxFullName("bob", MailboxShortName("bob", "user/bob/INBOX")) == "user/bob/INBOX");
}

// Sends stdout and stderr to files while it lives, to check what an
// in-process RunMail() printed.
class OutputCapture {
 public:
  OutputCapture() {
    std::fflush(stdout);
    for (int fd : {1, 2}) {
      char path[] = "/tmp/replctl_mail_test_XXXXXX";
      const int file = mkstemp(path);
      REQUIRE(file >= 0);
      unlink(path);
      files_[fd] = file;
      saved_[fd] = dup(fd);
      REQUIRE(saved_[fd] >= 0);
      REQUIRE(dup2(file, fd) == fd);
    }
  }
  ~OutputCapture() { Stop(); }
  // Restores stdout and stderr; out and err then hold what was written.
  void Stop() {
    if (saved_[1] < 0) return;
    std::fflush(stdout);
    for (int fd : {1, 2}) {
      dup2(saved_[fd], fd);
      close(saved_[fd]);
      saved_[fd] = -1;
      std::string& text = fd == 1 ? out : err;
      char buf[4096];
      ssize_t n;
      off_t at = 0;
      while ((n = pread(files_[fd], buf, sizeof(buf), at)) > 0) {
        text.append(buf, n);
        at += n;
      }
      close(files_[fd]);
    }
  }
  std::string out, err;

 private:
  int files_[3] = {-1, -1, -1};
  int saved_[3] = {-1, -1, -1};
};

constexpr char kFakeSecret[] = "replctl mail test secret";

// A slot's client API that answers list_mailboxes with mailbox() and
// get_slot with store 7, slot 1, LSN 40; on 127.0.0.1, from a thread of its
// own. Digest() runs `replctl mail digest bob INBOX` in process against it,
// with a coordinator that makes it store 7's master.
class FakeSlotApi {
 public:
  explicit FakeSlotApi(std::function<apipb::Mailbox()> mailbox) : mailbox_(std::move(mailbox)) {
    server_ = std::make_unique<rpc::RpcServer>(
        io_,
        rpc::RpcServerOptions{.listen = "127.0.0.1:0", .service = "api", .secret = kFakeSecret},
        [this](std::string bytes,
               const rpc::RpcPeer&) -> asio::awaitable<absl::StatusOr<std::string>> {
          co_return Answer(bytes);
        });
    REQUIRE(server_->Listen().ok());
    asio::co_spawn(io_, server_->Run(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~FakeSlotApi() {
    asio::post(io_, [this] { server_->Stop(); });
    thread_.join();
  }

  int Digest(bool json, OutputCapture* output) {
    const std::string api = absl::StrCat("127.0.0.1:", server_->port());
    auto coordinator = [&](const coordpb::Request& request) -> absl::StatusOr<coordpb::Response> {
      if (!request.has_lookup_user()) return absl::UnimplementedError("not faked");
      coordpb::Response response;
      coordpb::LookupUserReply* l = response.mutable_lookup_user();
      l->set_found(true);
      l->set_store_id(7);
      l->mutable_master()->set_slot_id(1);
      l->mutable_master()->set_host("host1");
      l->mutable_master()->set_api_address(api);
      return response;
    };
    const int exit = tools::RunMail(
        {.args = {"mail", "digest", "bob", "INBOX"}, .json = json, .secret = kFakeSecret},
        coordinator);
    output->Stop();
    return exit;
  }

 private:
  absl::StatusOr<std::string> Answer(const std::string& bytes) {
    apipb::Request request;
    if (!request.ParseFromString(bytes)) return absl::InvalidArgumentError("unparsable request");
    apipb::Response response;
    if (request.has_list_mailboxes()) {
      *response.add_mailboxes() = mailbox_();
    } else if (request.has_get_slot()) {
      response.mutable_slot()->set_store_id(7);
      response.mutable_slot()->set_slot_id(1);
      response.mutable_slot()->set_last_lsn(40);
    } else {
      return absl::UnimplementedError("not faked");
    }
    return response.SerializeAsString();
  }

  std::function<apipb::Mailbox()> mailbox_;
  asio::io_context io_;
  std::unique_ptr<rpc::RpcServer> server_;
  std::thread thread_;
};

constexpr char kBobDigest[] = "00112233445566778899aabbccddeeff";

apipb::Mailbox BobInbox(const std::string& digest, uint64_t highest_modseq = 9) {
  apipb::Mailbox mb;
  mb.set_id("0123456789abcdef0123456789abcdef");
  mb.set_name("user/bob");
  mb.set_uidvalidity(1700000000);
  mb.set_last_uid(4);
  mb.set_highest_modseq(highest_modseq);
  mb.set_messages(3);
  mb.set_bytes(1234);
  mb.set_digest(digest);
  return mb;
}

TEST_CASE("replctl mail digest shows the digest the slot sent, with the LSN read between two "
          "equal reads of the mailbox",
          "[mail]") {
  FakeSlotApi slot([] { return BobInbox(kBobDigest); });
  OutputCapture text;
  REQUIRE(slot.Digest(/*json=*/false, &text) == 0);
  INFO(text.out << text.err);
  CHECK(absl::StrContains(text.out, absl::StrCat("mailbox user/bob\ndigest ", kBobDigest,
                                                 "\nlsn 40\nslot 1@host1 (master)\n")));
  CHECK(absl::StrContains(text.out, "\nmessages 3\nbytes 1234\n"));
  CHECK(text.err.empty());
  OutputCapture json;
  REQUIRE(slot.Digest(/*json=*/true, &json) == 0);
  INFO(json.out << json.err);
  CHECK(JsonField(json.out, "digest") == kBobDigest);
  CHECK(JsonField(json.out, "lsn") == "40");
  CHECK(JsonField(json.out, "bytes") == "1234");
}

TEST_CASE("replctl mail digest exits 1 naming the slot when its replicad sends no digest, or when "
          "the mailbox changes during every read",
          "[mail]") {
  using Catch::Matchers::Contains;
  SECTION("a replicad older than Mailbox.digest") {
    FakeSlotApi slot([] { return BobInbox(""); });
    OutputCapture output;
    CHECK(slot.Digest(/*json=*/false, &output) == 1);
    INFO(output.err);
    CHECK(output.out.empty());
    CHECK_THAT(output.err, Contains("slot 1@host1") && Contains("sends no mailbox digest") &&
                               Contains("older"));
  }
  SECTION("a write between the reads, every time") {
    std::atomic<uint64_t> modseq{9};
    FakeSlotApi slot([&] { return BobInbox(kBobDigest, ++modseq); });
    OutputCapture output;
    CHECK(slot.Digest(/*json=*/false, &output) == 1);
    INFO(output.err);
    CHECK(output.out.empty());
    CHECK_THAT(output.err, Contains("changed during each of 5 reads") && Contains("slot 1@host1"));
  }
}

TEST_CASE("replctl mail lists, shows and fetches mail delivered over LMTP on the master and on a "
          "replica; their mailbox digests agree with each other and with the slot's own, also "
          "after an expunge",
          "[cluster][mail]") {
  Cluster c({.net = "127.0.37", .hosts = 2, .slots_per_host = 1});
  const uint64_t store = c.StoreOf("user1");
  const uint64_t master = c.store(store).master_slot_id();
  const uint64_t replica = c.store(store).replica_slot_ids(0);
  REQUIRE(c.StoreOf("user10") == store);
  // Three messages to user1 and one to user10, whose INBOX "user/user10"
  // starts with "user/user1".
  const std::vector<std::string> sent = {Eml(0, "user1"), Eml(1, "user1"), Eml(2, "user1"),
                                         Eml(3, "user10")};
  TempDir eml;
  DeliverAll(c, eml, sent);
  // Flags on UID 2, as an IMAP server would set them (at the store's epoch).
  apipb::Request flags;
  flags.set_epoch(Epoch(c, master));
  flags.mutable_set_flags()->set_mailbox("user/user1");
  flags.mutable_set_flags()->add_uids(2);
  flags.mutable_set_flags()->set_op(apipb::SetFlags::ADD);
  flags.mutable_set_flags()->add_flags("\\Seen");
  flags.mutable_set_flags()->add_flags("$Important");
  REQUIRE(c.Api(master, flags).ok());

  // list: user1's INBOX only, not user10's.
  RunResult list = c.Replctl({"mail", "list", "user1"});
  INFO(list.out << list.err);
  REQUIRE(list.exit == 0);
  CHECK(absl::StrContains(list.out, "INBOX  user/user1 "));
  CHECK_FALSE(absl::StrContains(list.out, "user/user10"));
  RunResult list_json = c.Replctl({"mail", "list", "user1", "--json"});
  INFO(list_json.out << list_json.err);
  REQUIRE(list_json.exit == 0);
  CHECK(absl::StrContains(list_json.out, "\"name\":\"INBOX\",\"mailbox\":\"user/user1\""));
  CHECK(JsonField(list_json.out, "next_uid") == "4");
  CHECK(JsonField(list_json.out, "messages") == "3");
  CHECK(JsonField(list_json.out, "bytes") ==
        absl::StrCat(3 * strlen(kReturnPath) + sent[0].size() + sent[1].size() + sent[2].size()));
  CHECK(JsonField(list_json.out, "role") == "master");
  CHECK_FALSE(absl::StrContains(list_json.out, "user/user10"));

  // messages: UIDs 1..3, sizes, flags on UID 2 only.
  RunResult messages = c.Replctl({"mail", "messages", "user1", "INBOX"});
  INFO(messages.out << messages.err);
  REQUIRE(messages.exit == 0);
  std::map<uint32_t, std::vector<std::string>> lines = MessageLines(messages.out);
  REQUIRE(lines.size() == 3);
  for (uint32_t uid = 1; uid <= 3; ++uid) {
    INFO("UID " << uid);
    REQUIRE(lines.contains(uid));
    const std::vector<std::string>& f = lines[uid];  // UID GUID SIZE DATE MODSEQ FLAGS...
    REQUIRE(f.size() >= 5);
    CHECK(f[1].size() == 40);
    CHECK(f[2] == absl::StrCat(strlen(kReturnPath) + sent[uid - 1].size()));
    CHECK(std::vector<std::string>(f.begin() + 5, f.end()) ==
          (uid == 2 ? std::vector<std::string>{"$Important", "\\Seen"}
                    : std::vector<std::string>{}));
  }

  // fetch: exactly the stored bytes, from the master and from the replica.
  REQUIRE(c.WaitCaughtUp(absl::Seconds(60)));
  for (uint32_t uid = 1; uid <= 3; ++uid) {
    INFO("UID " << uid);
    apipb::Request fetch;
    fetch.mutable_fetch_body()->set_mailbox("user/user1");
    fetch.mutable_fetch_body()->set_uid(uid);
    absl::StatusOr<apipb::Response> stored = c.Api(master, fetch);
    REQUIRE(stored.ok());
    CHECK(stored->body() == kReturnPath + sent[uid - 1]);
    RunResult from_master = c.Replctl({"mail", "fetch", "user1", "INBOX", absl::StrCat(uid)});
    INFO(from_master.err);
    REQUIRE(from_master.exit == 0);
    CHECK(from_master.out == stored->body());
    RunResult from_replica = c.Replctl(
        {"mail", "fetch", "user1", "user/user1", absl::StrCat(uid), "--slot",
         absl::StrCat(replica)});
    INFO(from_replica.err);
    REQUIRE(from_replica.exit == 0);
    CHECK(from_replica.out == stored->body());
  }

  // digest: the same on the master and the replica (--slot) once it caught
  // up, at the same LSN; `unlike`: not this digest (an older state).
  struct Digests {
    RunResult master, replica;
  };
  auto digests_agree = [&](const std::string& user, Digests* d, const std::string& unlike) {
    const bool agree = WaitFor(
        [&] {
          d->master = c.Replctl({"mail", "digest", user, "INBOX", "--json"});
          d->replica = c.Replctl(
              {"mail", "digest", user, "INBOX", "--json", "--slot", absl::StrCat(replica)});
          const std::string digest = JsonField(d->master.out, "digest");
          return d->master.exit == 0 && d->replica.exit == 0 && digest != unlike &&
                 digest == JsonField(d->replica.out, "digest") &&
                 JsonField(d->master.out, "lsn") == JsonField(d->replica.out, "lsn");
        },
        absl::Seconds(60), absl::Milliseconds(200));
    INFO(user << ": " << d->master.out << d->master.err << d->replica.out << d->replica.err);
    REQUIRE(agree);
    CHECK(JsonField(d->master.out, "digest").size() == 32);
    CHECK(JsonField(d->master.out, "slot_id") == absl::StrCat(master));
    CHECK(JsonField(d->replica.out, "slot_id") == absl::StrCat(replica));
    CHECK(JsonField(d->replica.out, "role") == "replica");
  };
  Digests before;
  digests_agree("user1", &before, "");
  const std::string digest_before = JsonField(before.master.out, "digest");
  RunResult text = c.Replctl({"mail", "digest", "user1", "INBOX"});
  INFO(text.out << text.err);
  REQUIRE(text.exit == 0);
  CHECK(absl::StrContains(text.out, absl::StrCat("digest ", digest_before, "\n")));
  CHECK(absl::StrContains(text.out, absl::StrCat("slot ", master, "@")));

  // An expunged message stays in the digest as a tombstone: the digest
  // changes, is still given, and agrees on both slots once replicated.
  apipb::Request expunge;
  expunge.set_epoch(Epoch(c, master));
  expunge.mutable_expunge()->set_mailbox("user/user1");
  expunge.mutable_expunge()->add_uids(3);
  REQUIRE(c.Api(master, expunge).ok());
  Digests after;
  digests_agree("user1", &after, digest_before);
  const std::string digest = JsonField(after.master.out, "digest");
  CHECK(JsonField(after.master.out, "messages") == "2");
  CHECK(JsonField(after.master.out, "last_uid") == "3");
  RunResult listed = c.Replctl({"mail", "messages", "user1", "INBOX"});
  REQUIRE(listed.exit == 0);
  lines = MessageLines(listed.out);
  CHECK(lines.size() == 2);
  CHECK_FALSE(lines.contains(3));
  // user10's INBOX, in the same store, had no expunge.
  Digests user10;
  digests_agree("user10", &user10, "");

  // The replica's own digests (mailctl, on the stopped slot) are the ones
  // replctl showed, with and without an expunge; a stopped slot is
  // reported unreachable.
  const configpb::DevSlot& r = c.slot(replica);
  REQUIRE(c.Stop(r.host(), absl::Seconds(30)));
  RunResult down = c.Replctl({"mail", "list", "user1", "--slot", absl::StrCat(replica)});
  INFO(down.out << down.err);
  CHECK(down.exit == 1);
  CHECK_THAT(down.err, Catch::Matchers::Contains(absl::StrCat("slot ", replica, "@")) &&
                           Catch::Matchers::Contains("unreachable"));
  RunResult own = Run({Bin("mailctl"), "--slot", r.data(), "--meta", r.meta(), "--spool",
                       r.spool(), "digest", "--json"});
  INFO(own.out << own.err);
  REQUIRE(own.exit == 0);
  CHECK(absl::StrContains(own.out, absl::StrCat("\"name\":\"user/user1\",\"id\":\"",
                                                JsonField(after.master.out, "id"),
                                                "\",\"digest\":\"", digest, "\"")));
  CHECK(absl::StrContains(own.out, absl::StrCat("\"name\":\"user/user10\",\"id\":\"",
                                                JsonField(user10.master.out, "id"),
                                                "\",\"digest\":\"",
                                                JsonField(user10.master.out, "digest"), "\"")));
}

TEST_CASE("replctl mail: an unknown user, a missing mailbox or UID and a slot outside the store "
          "exit 1 saying which; names with ../ are refused by the slot and change nothing; "
          "usage errors exit 2",
          "[cluster][mail]") {
  Cluster c({.net = "127.0.38", .hosts = 2, .slots_per_host = 1});
  const uint64_t master = c.store(c.StoreOf("user2")).master_slot_id();
  TempDir eml;
  DeliverAll(c, eml, {Eml(0, "user2")});
  using Catch::Matchers::Contains;

  RunResult unknown = c.Replctl({"mail", "messages", "nosuchuser", "INBOX"});
  CHECK(unknown.exit == 1);
  CHECK_THAT(unknown.err, Contains("unknown user 'nosuchuser'"));

  for (const std::string verb : {"messages", "digest"}) {
    RunResult missing = c.Replctl({"mail", verb, "user2", "Nope"});
    INFO(verb << ": " << missing.out << missing.err);
    CHECK(missing.exit == 1);
    CHECK_THAT(missing.err, Contains("'user/user2/Nope' does not exist") &&
                                Contains(absl::StrCat("slot ", master, "@")) &&
                                Contains("replctl mail list user2"));
  }
  RunResult no_uid = c.Replctl({"mail", "fetch", "user2", "INBOX", "99"});
  CHECK(no_uid.exit == 1);
  CHECK_THAT(no_uid.err, Contains("no message with UID 99") &&
                             Contains("replctl mail messages user2 INBOX"));
  CHECK(no_uid.out.empty());
  // user3 is assigned to the store but has no mail yet.
  RunResult empty = c.Replctl({"mail", "messages", "user3", "INBOX"});
  CHECK(empty.exit == 1);
  CHECK_THAT(empty.err, Contains("'user/user3' does not exist"));
  RunResult outside = c.Replctl({"mail", "list", "user2", "--slot", "999"});
  CHECK(outside.exit == 1);
  CHECK_THAT(outside.err, Contains("slot 999 is not a slot of store"));

  // ../ out of user2's mailboxes: the slot refuses the name; nothing changes.
  apipb::Request get_slot;
  get_slot.mutable_get_slot();
  apipb::Request all;
  all.mutable_list_mailboxes();
  absl::StatusOr<apipb::Response> slot_before = c.Api(master, get_slot);
  absl::StatusOr<apipb::Response> mailboxes_before = c.Api(master, all);
  REQUIRE(slot_before.ok());
  REQUIRE(mailboxes_before.ok());
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"messages", "user2", "../user3"},
           {"fetch", "user2", "../user2", "1"},
           {"digest", "user2", "INBOX/../../user3"},
           {"messages", "user2", "user/user2/../user3"}}) {
    std::vector<std::string> argv = {"mail"};
    argv.insert(argv.end(), args.begin(), args.end());
    RunResult refused = c.Replctl(argv);
    INFO(absl::StrJoin(argv, " ") << ": " << refused.out << refused.err);
    CHECK(refused.exit == 1);
    CHECK_THAT(refused.err, Contains("refused the request") && Contains("'..' component"));
    CHECK(refused.out.empty());
  }
  // A list prefix is only matched, and never leaves the user's mailboxes.
  RunResult prefix = c.Replctl({"mail", "list", "user2", "../", "--json"});
  CHECK(prefix.exit == 0);
  CHECK(absl::StrContains(prefix.out, "\"mailboxes\":[]"));
  absl::StatusOr<apipb::Response> slot_after = c.Api(master, get_slot);
  absl::StatusOr<apipb::Response> mailboxes_after = c.Api(master, all);
  REQUIRE(slot_after.ok());
  REQUIRE(mailboxes_after.ok());
  CHECK(slot_after->slot().last_lsn() == slot_before->slot().last_lsn());
  CHECK(mailboxes_after->SerializeAsString() == mailboxes_before->SerializeAsString());

  // Usage: exit 2 before anything is asked.
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {"mail"}, {"mail", "list"}, {"mail", "frobnicate", "user2"},
           {"mail", "fetch", "user2", "INBOX", "one"}, {"mail", "messages", "user2"}}) {
    RunResult usage = c.Replctl(argv);
    INFO(absl::StrJoin(argv, " ") << ": " << usage.err);
    CHECK(usage.exit == 2);
    CHECK_THAT(usage.err, Contains("mail"));
  }
}

}  // namespace
}  // namespace mailrepl::testing
