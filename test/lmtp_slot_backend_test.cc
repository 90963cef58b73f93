// Tests of SlotBackend (replicad/slot_backend.h) on a real slot, in-process:
// addressing, the mapping of slot errors to replies, the gate, that
// deliveries run concurrently on the pool (so they can share fsyncs), and,
// behind an LmtpServer, the bytes a delivery stores.
#include "replicad/slot_backend.h"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "asio.hpp"
#include "catch2/catch.hpp"
#include "replicad/lmtp_server.h"
#include "test/test_util.h"

namespace mailrepl::lmtp {
namespace {

using testing::NewSlot;
using testing::TempDir;

// Runs backend.Deliver() calls concurrently on one io_context thread (as
// the server does) and returns their replies in call order.
std::vector<std::vector<LmtpReply>> DeliverAll(
    SlotBackend& backend, const std::vector<std::vector<std::string>>& recipient_lists,
    const std::string& message) {
  asio::io_context io;
  std::vector<std::vector<LmtpReply>> out(recipient_lists.size());
  for (size_t i = 0; i < recipient_lists.size(); ++i) {
    asio::co_spawn(
        io,
        [&, i]() -> asio::awaitable<void> {
          auto delivery = backend.Deliver("from@example.test", recipient_lists[i], message);
          out[i] = co_await std::move(delivery);
        },
        asio::detached);
  }
  io.run();
  return out;
}

std::string Codes(const std::vector<LmtpReply>& replies) {
  std::string s;
  for (const LmtpReply& r : replies) s += std::to_string(r.code) + "/" + r.enhanced + " ";
  return s;
}

TEST_CASE("recipients map to INBOXes and existing plus folders; unknown users get 550 5.1.1",
          "[lmtp]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  for (const char* mb : {"user/alice", "user/alice/Lists", "user/alice/work", "user/bob"}) {
    REQUIRE(slot->CreateMailbox(mb).ok());
  }
  SlotBackend backend(*slot, {.threads = 2});
  CHECK(backend.CheckRecipient("alice@example.test").code == 250);
  CHECK(backend.CheckRecipient("Alice@Example.Test").code == 250);
  CHECK(backend.CheckRecipient("bob").code == 250);
  CHECK(backend.CheckRecipient("alice+nosuch@example.test").code == 250);
  const LmtpReply unknown = backend.CheckRecipient("carol@example.test");
  CHECK(unknown.code == 550);
  CHECK(unknown.enhanced == "5.1.1");
  CHECK(backend.CheckRecipient("../etc@example.test").code == 550);
  CHECK(backend.CheckRecipient("\"a b\"@example.test").code == 550);

  const std::string message = "Return-Path: <from@example.test>\r\nSubject: s\r\n\r\nhi\r\n";
  auto replies = DeliverAll(backend,
                            {{"alice+Lists@example.test", "ALICE+WORK@example.test",
                              "alice+nosuch@x", "alice+../bob@x", "bob@x", "carol@x"}},
                            message)[0];
  CHECK(Codes(replies) == "250/2.1.5 250/2.1.5 250/2.1.5 250/2.1.5 250/2.1.5 550/5.1.1 ");
  auto count = [&](const std::string& mb) { return slot->GetMailbox(mb)->messages; };
  CHECK(count("user/alice/Lists") == 1);
  CHECK(count("user/alice/work") == 1);
  CHECK(count("user/alice") == 2);  // nosuch, and the invalid folder name
  CHECK(count("user/bob") == 1);
  auto body = slot->FetchBody("user/bob", 1);
  REQUIRE(body.ok());
  CHECK(*body == message);
  CHECK(backend.stats().appended == 5);
}

TEST_CASE("slot errors become LMTP replies: too big 552, over quota 452 4.2.2, disk full 4.3.1",
          "[lmtp]") {
  TempDir dir;
  auto slot = NewSlot(dir.path(), {.max_message_bytes = 1000});
  REQUIRE(slot->CreateMailbox("user/alice").ok());
  REQUIRE(slot->CreateMailbox("user/bob").ok());
  REQUIRE(slot->SetQuota("bob", 0, 1).ok());  // one message
  SlotBackend backend(*slot, {.threads = 2});
  const std::string small = "Subject: s\r\n\r\nhi\r\n";
  CHECK(Codes(DeliverAll(backend, {{"bob"}}, small)[0]) == "250/2.1.5 ");
  CHECK(Codes(DeliverAll(backend, {{"bob", "alice"}}, small)[0]) == "452/4.2.2 250/2.1.5 ");
  CHECK(Codes(DeliverAll(backend, {{"alice"}}, std::string(2000, 'x'))[0]) == "552/5.3.4 ");
  CHECK(backend.stats().failed == 2);

  using absl::StatusCode;
  auto reply = [](StatusCode code, const char* msg) {
    return SlotBackend::ReplyForAppendError(absl::Status(code, msg));
  };
  CHECK(reply(StatusCode::kResourceExhausted, "No space left on device").enhanced == "4.3.1");
  CHECK(reply(StatusCode::kResourceExhausted, "over quota: user bob").enhanced == "4.2.2");
  const LmtpReply stopped = reply(StatusCode::kFailedPrecondition, "slot stopped taking writes");
  CHECK(stopped.code == 451);
  CHECK(stopped.enhanced == "4.3.0");
  CHECK(absl::StrContains(stopped.text, "slot stopped taking writes"));
  CHECK(reply(StatusCode::kUnavailable, "x").code == 451);
  CHECK(reply(StatusCode::kInternal, "x").code == 451);
}

TEST_CASE("the gate's reply answers every recipient and nothing is stored", "[lmtp]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/alice").ok());
  bool fenced = true;
  SlotBackend backend(*slot, {.threads = 2, .gate = [&]() -> std::optional<LmtpReply> {
                                if (!fenced) return std::nullopt;
                                return LmtpReply{451, "4.3.0", "slot fenced; master is host2"};
                              }});
  CHECK(backend.CheckRecipient("alice").code == 451);
  CHECK(Codes(DeliverAll(backend, {{"alice", "nobody"}}, "m\r\n")[0]) == "451/4.3.0 451/4.3.0 ");
  CHECK(slot->GetMailbox("user/alice")->messages == 0);
  fenced = false;
  CHECK(Codes(DeliverAll(backend, {{"alice"}}, "m\r\n")[0]) == "250/2.1.5 ");
}

TEST_CASE("deliveries from several connections run concurrently on the pool", "[lmtp]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/alice").ok());
  // The gate runs inside each delivery: it lets them go only once four are
  // inside at the same time, which never happens if deliveries are serialized.
  std::mutex mu;
  std::condition_variable cv;
  int inside = 0;
  SlotBackend backend(*slot, {.threads = 4, .gate = [&]() -> std::optional<LmtpReply> {
                                std::unique_lock<std::mutex> l(mu);
                                ++inside;
                                cv.notify_all();
                                if (!cv.wait_for(l, std::chrono::seconds(10),
                                                 [&] { return inside >= 4; })) {
                                  return LmtpReply{451, "4.3.0", "not concurrent"};
                                }
                                return std::nullopt;
                              }});
  auto replies = DeliverAll(backend, {{"alice"}, {"alice"}, {"alice"}, {"alice"}}, "m\r\n");
  for (const auto& r : replies) CHECK(Codes(r) == "250/2.1.5 ");
  CHECK(slot->GetMailbox("user/alice")->messages == 4);
}

TEST_CASE("an LMTP delivery is stored as Return-Path + unstuffed CRLF data, under its SHA-1 GUID",
          "[lmtp]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/alice").ok());
  SlotBackend backend(*slot, {.threads = 1});
  asio::io_context io;
  LmtpServer server(io, backend, {.listen = "127.0.0.1:0"});
  REQUIRE(server.Listen().ok());
  asio::co_spawn(io, server.Run(), asio::detached);
  // The data has a bare LF line end, a dot-stuffed line and CRLF line ends.
  const std::string session =
      "LHLO client.test\r\nMAIL FROM:<sender@example.test>\r\nRCPT TO:<alice@example.test>\r\n"
      "DATA\r\nSubject: stored\n\r\n..a leading dot\r\nlast line\r\n.\r\nQUIT\r\n";
  std::string replies;
  std::exception_ptr client_error;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        asio::ip::tcp::socket socket(io);
        co_await socket.async_connect({asio::ip::make_address("127.0.0.1"), server.port()},
                                      asio::use_awaitable);
        co_await asio::async_write(socket, asio::buffer(session), asio::use_awaitable);
        asio::error_code eof;  // the server closes the connection after QUIT
        co_await asio::async_read(socket, asio::dynamic_buffer(replies),
                                  asio::redirect_error(asio::use_awaitable, eof));
      },
      [&](std::exception_ptr e) {
        client_error = e;
        server.Stop();
      });
  io.run();
  REQUIRE_FALSE(client_error);
  INFO("replies: " << replies);
  REQUIRE(absl::StrContains(replies, "250 2.1.5 OK uid 1 "));

  const std::string stored =
      "Return-Path: <sender@example.test>\r\nSubject: stored\r\n\r\n.a leading dot\r\n"
      "last line\r\n";
  auto body = slot->FetchBody("user/alice", 1);
  REQUIRE(body.ok());
  CHECK(*body == stored);
  auto messages = slot->ListMessages("user/alice", false);
  REQUIRE(messages.ok());
  REQUIRE(messages->size() == 1);
  CHECK(messages->front().size == stored.size());
  // printf '<stored>' | sha1sum
  CHECK(absl::BytesToHexString(messages->front().guid) ==
        "6a8f50e8415684b31ea7f9b061fceab033118322");
}

}  // namespace
}  // namespace mailrepl::lmtp
