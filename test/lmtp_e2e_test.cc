// End-to-end tests of the LMTP front end: the real `lmtpd` binary on a fresh
// slot, driven by real clients (Python's smtplib.LMTP, a raw pipelining
// socket, swaks). After lmtpd stops (SIGTERM, exit 0) the slot is opened
// in-process: every acknowledged message must be there with its exact bytes
// after the Return-Path line, and nothing that was refused.
#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"
#include "test/process_util.h"
#include "test/test_util.h"

namespace mailrepl::testing {
namespace {

constexpr char kSender[] = "sender@example.test";
constexpr char kReturnPath[] = "Return-Path: <sender@example.test>\r\n";


std::string Bin(const std::string& name) {
  const char* bin = std::getenv("MAILREPL_BIN");
  if (bin == nullptr) throw std::runtime_error("MAILREPL_BIN is not set");
  return absl::StrCat(bin, "/", name);
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  if (!out) throw std::runtime_error("cannot write " + path);
}

// A message with dot-leading lines, an 8-bit line and a size depending on n.
std::string Message(int n) {
  std::string m = absl::StrCat("From: Tester <t", n, "@example.test>\r\nSubject: e2e ", n,
                               "\r\nMessage-ID: <e2e.", n, "@example.test>\r\n\r\n",
                               ".a line with a leading dot\r\n..two dots\r\n.\r\ncaf\xc3\xa9\r\n");
  const size_t size = 300 + (n * 7919) % 20000;
  while (m.size() < size) absl::StrAppend(&m, "body of message ", n, " line ", m.size(), "\r\n");
  return m;
}

// A slot with INBOXes user/user0..user3 (lmtpd --create-users) and the
// folder user/user1/Lists; lmtpd running on it; helpers to run clients and
// to read the slot back once lmtpd is stopped.
class Fixture {
 public:
  explicit Fixture(std::vector<std::string> lmtpd_args = {}) {
    NewSlot(slot_dir())->CreateMailbox("user/user1/Lists").IgnoreError();
    std::vector<std::string> argv = {Bin("lmtpd"),        "--slot",         slot_dir(),
                                     "--listen",          "127.0.0.1:0",    "--create-users",
                                     "4",                 "--max-message-bytes", "100000"};
    argv.insert(argv.end(), lmtpd_args.begin(), lmtpd_args.end());
    lmtpd_ = std::make_unique<Process>(argv);
    REQUIRE(WaitFor([&] { return absl::StrContains(lmtpd_->Stderr(), "port=<") ||
                                 !lmtpd_->Running(); },
                    absl::Seconds(30)));
    const std::string err = lmtpd_->Stderr();
    const size_t at = err.find("port=<");
    INFO(lmtpd_->Describe());
    REQUIRE(at != std::string::npos);
    REQUIRE(absl::SimpleAtoi(err.substr(at + 6, err.find('>', at) - at - 6), &port_));
  }

  std::string slot_dir() const { return dir_.Sub("slot"); }
  static std::string script() { return LMTP_CLIENT_PY; }
  std::string port() const { return absl::StrCat(port_); }
  Process& lmtpd() { return *lmtpd_; }

  // Writes message n to a file and returns its path.
  std::string MessageFile(int n, const std::string& content = "") {
    const std::string path = dir_.Sub(absl::StrCat("m", n, ".eml"));
    WriteFile(path, content.empty() ? Message(n) : content);
    return path;
  }

  // Starts the client script with args (after the mode and port).
  std::unique_ptr<Process> StartClient(const std::string& mode, std::vector<std::string> args) {
    std::vector<std::string> argv = {"/usr/bin/env", "python3", script(), mode, port()};
    argv.insert(argv.end(), args.begin(), args.end());
    return std::make_unique<Process>(argv);
  }
  // Runs the client script to its end (exit 0 required) and returns its stdout.
  std::string RunClient(const std::string& mode, std::vector<std::string> args) {
    auto p = StartClient(mode, std::move(args));
    const std::optional<int> code = p->Wait(absl::Seconds(300));
    INFO(p->Describe());
    REQUIRE(code == 0);
    return p->Stdout();
  }
  // Delivers manifest entries ("rcpts file") and returns "file rcpt=.. data=.." per message.
  std::map<std::string, std::string> Deliver(const std::vector<std::string>& manifest, int conns,
                                             const std::string& style = "lowlevel") {
    return ParseResults(RunClient("deliver", {WriteManifest(manifest), absl::StrCat(conns), style}));
  }
  std::string WriteManifest(const std::vector<std::string>& manifest) {
    std::string text;
    for (const auto& l : manifest) absl::StrAppend(&text, l, "\n");
    WriteFile(dir_.Sub("manifest"), text);
    return dir_.Sub("manifest");
  }
  static std::map<std::string, std::string> ParseResults(const std::string& out) {
    std::map<std::string, std::string> results;
    for (absl::string_view line : absl::StrSplit(out, '\n')) {
      if (!absl::ConsumePrefix(&line, "RESULT ")) continue;
      const size_t sp = line.find(' ');
      results[std::string(line.substr(0, sp))] = std::string(line.substr(sp + 1));
    }
    return results;
  }

  // SIGTERM; lmtpd must exit 0.
  void StopLmtpd() {
    lmtpd_->Signal(SIGTERM);
    const std::optional<int> code = lmtpd_->Wait(absl::Seconds(30));
    INFO(lmtpd_->Describe());
    REQUIRE(code == 0);
  }

  // Every stored body, sorted, per mailbox. REQUIRES: lmtpd stopped.
  std::map<std::string, std::vector<std::string>> Stored() {
    std::unique_ptr<Slot> slot = ReopenSlot(slot_dir());
    std::map<std::string, std::vector<std::string>> out;
    for (const MailboxInfo& mb : slot->ListMailboxes()) {
      auto msgs = slot->ListMessages(mb.name, false);
      REQUIRE(msgs.ok());
      std::vector<std::string>& bodies = out[mb.name];
      for (const MessageInfo& m : *msgs) {
        auto body = slot->FetchBody(mb.name, m.uid);
        REQUIRE(body.ok());
        bodies.push_back(*body);
      }
      std::sort(bodies.begin(), bodies.end());
    }
    return out;
  }

 private:
  TempDir dir_;
  std::unique_ptr<Process> lmtpd_;
  uint32_t port_ = 0;
};

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST_CASE("smtplib.LMTP: one message to two recipients gets two 250s and is stored for each",
          "[lmtp]") {
  Fixture f;
  const std::string m0 = f.MessageFile(0), m1 = f.MessageFile(1), m2 = f.MessageFile(2);
  auto results = f.Deliver({"user0@example.test,user1@example.test " + m0,
                            "user1+Lists@example.test,USER2+NoSuchFolder@Example.Test " + m1,
                            "user3 " + m2},
                           1);
  CHECK(results[m0] == "rcpt=250/2.1.5,250/2.1.5 data=250/2.1.5,250/2.1.5");
  CHECK(results[m1] == "rcpt=250/2.1.5,250/2.1.5 data=250/2.1.5,250/2.1.5");
  CHECK(results[m2] == "rcpt=250/2.1.5 data=250/2.1.5");
  f.StopLmtpd();
  auto stored = f.Stored();
  auto with_path = [](int n) { return kReturnPath + Message(n); };
  CHECK(stored["user/user0"] == std::vector<std::string>{with_path(0)});
  CHECK(stored["user/user1"] == std::vector<std::string>{with_path(0)});
  CHECK(stored["user/user1/Lists"] == std::vector<std::string>{with_path(1)});
  CHECK(stored["user/user2"] == std::vector<std::string>{with_path(1)});
  CHECK(stored["user/user3"] == std::vector<std::string>{with_path(2)});
}

TEST_CASE("smtplib.LMTP: an unknown user gets 550 5.1.1 and nothing is stored for it", "[lmtp]") {
  Fixture f;
  const std::string m0 = f.MessageFile(0), m1 = f.MessageFile(1);
  auto results = f.Deliver({"nobody@example.test " + m0,
                            "nobody@example.test,user0@example.test,user9@example.test " + m1},
                           1);
  CHECK(results[m0] == "rcpt=550/5.1.1 data=-");
  CHECK(results[m1] == "rcpt=550/5.1.1,250/2.1.5,550/5.1.1 data=250/2.1.5");
  f.StopLmtpd();
  auto stored = f.Stored();
  CHECK(stored["user/user0"] == std::vector<std::string>{kReturnPath + Message(1)});
  for (const char* mb : {"user/user1", "user/user1/Lists", "user/user2", "user/user3"}) {
    CHECK(stored[mb].empty());
  }
  CHECK(stored.count("user/nobody") == 0);
}

TEST_CASE("smtplib.LMTP: an oversized message gets 552 5.3.4 and nothing is stored", "[lmtp]") {
  Fixture f;  // --max-message-bytes 100000
  std::string big = Message(7);
  while (big.size() < 150000) big += "filler line to go over the limit of the server\r\n";
  const std::string m_big = f.MessageFile(7, big), m_ok = f.MessageFile(8);
  // Without SIZE the server reads and drops the data, then answers per recipient.
  auto results = f.Deliver({"user0@example.test,user1@example.test " + m_big, "user2 " + m_ok}, 1);
  CHECK(results[m_big] == "rcpt=250/2.1.5,250/2.1.5 data=552/5.3.4,552/5.3.4");
  CHECK(results[m_ok] == "rcpt=250/2.1.5 data=250/2.1.5");
  // With SIZE (what smtplib's sendmail sends) it refuses at MAIL.
  CHECK(f.RunClient("size", {"150000"}) == "MAIL 552/5.3.4\n");
  CHECK(f.RunClient("size", {"100000"}) == "MAIL 250/2.1.0\n");
  auto via_sendmail = f.Deliver({"user3 " + m_big}, 1, "sendmail");
  CHECK(via_sendmail[m_big] == "data=552/5.3.4");
  f.StopLmtpd();
  auto stored = f.Stored();
  CHECK(stored["user/user0"].empty());
  CHECK(stored["user/user1"].empty());
  CHECK(stored["user/user2"] == std::vector<std::string>{kReturnPath + Message(8)});
  CHECK(stored["user/user3"].empty());
}

TEST_CASE("a pipelined session gets every reply in order; SIGTERM closes idle connections",
          "[lmtp]") {
  Fixture f;
  const std::string m0 = f.MessageFile(0), m1 = f.MessageFile(1);
  const std::string out = f.RunClient("pipeline", {m0, m1});
  const std::vector<std::string> replies = absl::StrSplit(out, '\n', absl::SkipEmpty());
  CHECK(replies == std::vector<std::string>{
                       "REPLY 220 localhost",  // greeting
                       "REPLY 250 SIZE",       // LHLO (last line)
                       "REPLY 250 2.1.0",   "REPLY 250 2.1.5", "REPLY 550 5.1.1",
                       "REPLY 250 2.1.5",   "REPLY 354 go",    // DATA
                       "REPLY 250 2.1.5",   "REPLY 250 2.1.5",  // one per accepted recipient
                       "REPLY 250 2.1.0",   "REPLY 250 2.1.5", "REPLY 354 go",
                       "REPLY 250 2.1.5",   "REPLY 250 2.0.0", "REPLY 221 2.0.0"});
  // A connection that says nothing does not hold up shutdown: it gets 421.
  auto idle = f.StartClient("hold", {});
  REQUIRE(WaitFor([&] { return absl::StrContains(idle->Stdout(), "READY"); }, absl::Seconds(60)));
  f.StopLmtpd();
  REQUIRE(idle->Wait(absl::Seconds(30)) == 0);
  CHECK(absl::StrContains(idle->Stdout(), "FINAL 421 4.3.2"));
  auto stored = f.Stored();
  CHECK(stored["user/user0"] == std::vector<std::string>{kReturnPath + Message(0)});
  CHECK(stored["user/user1"] == std::vector<std::string>{kReturnPath + Message(0)});
  CHECK(stored["user/user2"] == std::vector<std::string>{kReturnPath + Message(1)});
}

TEST_CASE("connections over --max-connections get 421 4.3.2 and the others carry on",
          "[lmtp]") {
  Fixture f({"--max-connections", "1"});
  auto first = f.StartClient("hold", {});
  REQUIRE(WaitFor([&] { return absl::StrContains(first->Stdout(), "READY"); },
                  absl::Seconds(60)));
  auto second = f.StartClient("hold", {});
  REQUIRE(second->Wait(absl::Seconds(60)) == 0);
  CHECK(absl::StrContains(second->Stdout(), "FINAL 421 4.3.2"));
  f.StopLmtpd();
  REQUIRE(first->Wait(absl::Seconds(30)) == 0);
  CHECK(absl::StrContains(first->Stdout(), "FINAL 421 4.3.2 shutting down"));
}

TEST_CASE("swaks delivers over LMTP", "[lmtp]") {
  Fixture f;
  Process swaks({"/usr/bin/env", "swaks", "--protocol", "LMTP", "--server", "127.0.0.1",
                 "--port", f.port(), "--to", "user0@example.test", "--from", "a@b.test",
                 "--header", "Subject: via swaks"});
  const std::optional<int> code = swaks.Wait(absl::Seconds(60));
  INFO(swaks.Describe());
  REQUIRE(code == 0);
  CHECK(absl::StrContains(swaks.Stdout(), "<-  250 2.1.5 OK"));
  f.StopLmtpd();
  auto stored = f.Stored();
  REQUIRE(stored["user/user0"].size() == 1);
  const std::string& body = stored["user/user0"][0];
  CHECK(absl::StartsWith(body, "Return-Path: <a@b.test>\r\n"));
  CHECK(absl::StrContains(body, "Subject: via swaks\r\n"));
}

// Manifest for n messages from `first`, one recipient each, over user0..3.
std::vector<std::string> Spread(Fixture& f, int first, int n) {
  std::vector<std::string> manifest;
  for (int i = first; i < first + n; ++i) {
    manifest.push_back(absl::StrCat("user", i % 4, "@example.test ", f.MessageFile(i)));
  }
  return manifest;
}

TEST_CASE("8 concurrent smtplib connections delivering 50 messages each: 400 x 250, all stored",
          "[lmtp]") {
  Fixture f;
  auto results = f.Deliver(Spread(f, 0, 400), 8, "sendmail");
  REQUIRE(results.size() == 400);
  std::map<std::string, std::vector<std::string>> expected;
  for (int i = 0; i < 400; ++i) {
    INFO("message " << i);
    CHECK(results[f.MessageFile(i)] == "rcpt=250/- data=250/-");
    expected[absl::StrCat("user/user", i % 4)].push_back(kReturnPath + Message(i));
  }
  f.StopLmtpd();
  auto stored = f.Stored();
  for (auto& [mailbox, bodies] : expected) {
    INFO(mailbox);
    CHECK(stored[mailbox] == Sorted(bodies));
  }
}

TEST_CASE("SIGTERM during deliveries: lmtpd exits 0 and every acknowledged message is stored",
          "[lmtp]") {
  Fixture f;
  auto client = f.StartClient("deliver", {f.WriteManifest(Spread(f, 0, 1600)), "8", "lowlevel"});
  REQUIRE(WaitFor([&] { return Fixture::ParseResults(client->Stdout()).size() >= 100; },
                  absl::Seconds(120)));
  f.StopLmtpd();
  REQUIRE(client->Wait(absl::Seconds(60)).has_value());
  const auto results = Fixture::ParseResults(client->Stdout());
  auto stored = f.Stored();
  size_t acked = 0, stored_total = 0;
  for (int i = 0; i < 1600; ++i) {
    const std::string mailbox = absl::StrCat("user/user", i % 4);
    auto it = results.find(f.MessageFile(i));
    if (it == results.end() || it->second != "rcpt=250/2.1.5 data=250/2.1.5") continue;
    ++acked;
    INFO("message " << i);
    CHECK(std::binary_search(stored[mailbox].begin(), stored[mailbox].end(),
                             kReturnPath + Message(i)));
  }
  for (const auto& [mailbox, bodies] : stored) stored_total += bodies.size();
  CHECK(acked >= 100);
  CHECK(acked < 1600);  // it did stop early
  // Nothing beyond what was sent; at most the messages in flight unacknowledged.
  CHECK(stored_total >= acked);
  CHECK(stored_total <= acked + 8);
}

}  // namespace
}  // namespace mailrepl::testing
