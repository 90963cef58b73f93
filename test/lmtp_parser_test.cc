// Unit tests of the I/O-free LMTP state machine (replicad/lmtp_parser.h):
// pipelining, dot-stuffing, the end of data split across reads, line and
// message size limits, sequence errors and garbage.
#include "replicad/lmtp_parser.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "catch2/catch.hpp"

namespace mailrepl::lmtp {
namespace {

// Runs the parser's events like a session would, accepting every recipient
// whose address does not start with "unknown", and records a transcript:
// "250 2.1.0", "LHLO client", "RCPT a@b -> 250", "DELIVER <from> a,b <bytes>",
// "QUIT 221".
struct Driver {
  explicit Driver(LmtpParserOptions options = {}) : parser(options) {}

  void Feed(const std::string& bytes) {
    parser.Feed(bytes);
    LmtpEvent ev;
    while (parser.Next(&ev)) {
      switch (ev.kind) {
        case LmtpEvent::kReply:
          out.push_back(absl::StrCat(ev.reply.code, " ", ev.reply.enhanced));
          break;
        case LmtpEvent::kLhlo:
          out.push_back("LHLO " + ev.address);
          break;
        case LmtpEvent::kCheckRecipient: {
          const bool ok = !absl::StartsWith(ev.address, "unknown");
          if (ok) parser.AcceptRecipient(ev.address);
          out.push_back(absl::StrCat("RCPT ", ev.address, ok ? " -> 250" : " -> 550"));
          break;
        }
        case LmtpEvent::kDeliver:
          out.push_back(absl::StrCat("DELIVER <", ev.from, "> ", absl::StrJoin(ev.recipients, ","),
                                     " ", ev.message.size()));
          messages.push_back(ev.message);
          break;
        case LmtpEvent::kQuit:
          out.push_back(absl::StrCat("QUIT ", ev.reply.code));
          break;
      }
    }
  }
  void FeedByteByByte(const std::string& bytes) {
    for (char c : bytes) Feed(std::string(1, c));
  }

  LmtpParser parser;
  std::vector<std::string> out;
  std::vector<std::string> messages;
};

// Dot-stuffs a CRLF message for the wire and appends the terminator.
std::string Stuff(const std::string& message) {
  std::string wire;
  size_t start = 0;
  while (start < message.size()) {
    size_t end = message.find("\r\n", start);
    end = end == std::string::npos ? message.size() : end + 2;
    if (message[start] == '.') wire += '.';
    wire.append(message, start, end - start);
    start = end;
  }
  return wire + ".\r\n";
}

const char kHello[] = "LHLO client.test\r\n";

TEST_CASE("pipelined commands in one read are all answered, in order", "[lmtp]") {
  Driver d;
  d.Feed(std::string(kHello) +
         "MAIL FROM:<a@b.test> SIZE=20\r\nRCPT TO:<u1@x>\r\nRCPT TO:<unknown@x>\r\n"
         "RCPT TO:<u2@x>\r\nDATA\r\n");
  CHECK(d.out == std::vector<std::string>{"LHLO client.test", "250 2.1.0", "RCPT u1@x -> 250",
                                          "RCPT unknown@x -> 550", "RCPT u2@x -> 250", "354 "});
  d.out.clear();
  d.Feed("Subject: x\r\n\r\nhello\r\n.\r\nNOOP\r\nVRFY u1\r\nQUIT\r\n");
  CHECK(d.out == std::vector<std::string>{"DELIVER <a@b.test> u1@x,u2@x 21", "250 2.0.0",
                                          "252 2.5.0", "QUIT 221"});
  REQUIRE(d.messages.size() == 1);
  CHECK(d.messages[0] == "Subject: x\r\n\r\nhello\r\n");
}

TEST_CASE("dot-stuffed lines come back unstuffed, byte for byte", "[lmtp]") {
  const std::string message =
      ".leading dot\r\n..two dots\r\n.\r\n \r\n. \r\n\r\nlast line .\r\n.\r\nx\r\n";
  Driver d;
  d.Feed(std::string(kHello) + "MAIL FROM:<>\r\nRCPT TO:<u@x>\r\nDATA\r\n" + Stuff(message));
  REQUIRE(d.messages.size() == 1);
  CHECK(d.messages[0] == message);
  CHECK(d.out.back() == absl::StrCat("DELIVER <> u@x ", message.size()));
}

TEST_CASE("the end of data split across feeds byte by byte is found", "[lmtp]") {
  const std::string message = "A: b\r\n\r\n.dot\r\nbody\r\n";
  const std::string session = std::string(kHello) +
                              "MAIL FROM:<a@b>\r\nRCPT TO:<u@x>\r\nDATA\r\n" + Stuff(message) +
                              "MAIL FROM:<c@d>\r\nRCPT TO:<v@x>\r\nDATA\r\n" + Stuff(message) +
                              "QUIT\r\n";
  Driver whole, bytewise;
  whole.Feed(session);
  bytewise.FeedByteByByte(session);
  CHECK(bytewise.out == whole.out);
  REQUIRE(bytewise.messages.size() == 2);
  CHECK(bytewise.messages[0] == message);
  CHECK(bytewise.messages[1] == message);
  CHECK(bytewise.out.back() == "QUIT 221");
}

TEST_CASE("a bare LF ends lines, and message lines are stored with CRLF", "[lmtp]") {
  Driver d;
  d.Feed("LHLO c\nMAIL FROM:<a@b>\nRCPT TO:<u@x>\nDATA\nline one\n..dot\n.\n");
  REQUIRE(d.messages.size() == 1);
  CHECK(d.messages[0] == "line one\r\n.dot\r\n");
}

TEST_CASE("a message line longer than the read buffer survives intact", "[lmtp]") {
  const std::string long_line = "." + std::string(100000, 'x') + "\r";  // a bare CR inside
  const std::string message = "H: v\r\n\r\n" + long_line + "\r\nend\r\n";
  Driver d;
  d.Feed(std::string(kHello) + "MAIL FROM:<a@b>\r\nRCPT TO:<u@x>\r\nDATA\r\n");
  const std::string wire = Stuff(message);
  for (size_t i = 0; i < wire.size(); i += 3000) d.Feed(wire.substr(i, 3000));
  REQUIRE(d.messages.size() == 1);
  CHECK(d.messages[0] == message);
  CHECK(d.parser.buffered() == 0);
}

TEST_CASE("an overlong command line gets 500 5.5.6 and is discarded", "[lmtp]") {
  Driver d({.max_line_bytes = 1000});
  d.Feed(kHello);
  SECTION("in one read") {
    d.Feed("MAIL FROM:<" + std::string(1200, 'a') + "@b>\r\nNOOP\r\n");
  }
  SECTION("in many reads, never buffered whole") {
    d.Feed("MAIL FROM:<");
    for (int i = 0; i < 100; ++i) {
      d.Feed(std::string(1000, 'a'));
      REQUIRE(d.parser.buffered() <= 1000);
    }
    d.Feed("@b>\r\nNOOP\r\n");
  }
  CHECK(d.out == std::vector<std::string>{"LHLO client.test", "500 5.5.6", "250 2.0.0"});
  CHECK_FALSE(d.parser.in_transaction());
  // A line of exactly 1000 bytes with its CRLF is fine.
  d.out.clear();
  d.Feed("NOOP " + std::string(1000 - 7, 'n') + "\r\n");
  CHECK(d.out == std::vector<std::string>{"250 2.0.0"});
}

TEST_CASE("an oversized message is discarded while read, then 552 5.3.4 for every recipient",
          "[lmtp]") {
  Driver d({.max_message_bytes = 10000});
  d.Feed(std::string(kHello) +
         "MAIL FROM:<a@b>\r\nRCPT TO:<u1@x>\r\nRCPT TO:<u2@x>\r\nRCPT TO:<u3@x>\r\nDATA\r\n");
  const std::string line = std::string(98, 'z') + "\r\n";
  for (int i = 0; i < 2000; ++i) {  // 200 KB
    d.Feed(line);
    REQUIRE(d.parser.buffered() < 1000);
  }
  d.out.clear();
  d.Feed(".\r\nMAIL FROM:<a@b>\r\nRCPT TO:<u1@x>\r\nDATA\r\nsmall\r\n.\r\n");
  CHECK(d.out == std::vector<std::string>{"552 5.3.4", "552 5.3.4", "552 5.3.4", "250 2.1.0",
                                          "RCPT u1@x -> 250", "354 ", "DELIVER <a@b> u1@x 7"});
  CHECK(d.messages == std::vector<std::string>{"small\r\n"});
}

TEST_CASE("a message of exactly the limit is accepted", "[lmtp]") {
  Driver d({.max_message_bytes = 12});
  d.Feed(std::string(kHello) + "MAIL FROM:<a@b>\r\nRCPT TO:<u@x>\r\nDATA\r\n0123456789\r\n.\r\n");
  CHECK(d.messages == std::vector<std::string>{"0123456789\r\n"});
}

TEST_CASE("MAIL parameters: SIZE over the limit, BODY and unknown ones", "[lmtp]") {
  Driver d({.max_message_bytes = 1000});
  d.Feed(std::string(kHello) +
         "MAIL FROM:<a@b> SIZE=1001\r\n"
         "MAIL FROM:<a@b> SIZE=ten\r\n"
         "MAIL FROM:<a@b> BODY=BINARYMIME\r\n"
         "MAIL FROM:<a@b> NOTIFY=NEVER\r\n"
         "mail from: <a@b> size=1000 body=8bitmime\r\n");
  CHECK(d.out == std::vector<std::string>{"LHLO client.test", "552 5.3.4", "501 5.5.4",
                                          "501 5.5.4", "555 5.5.4", "250 2.1.0"});
}

TEST_CASE("commands out of sequence get 503 5.5.1", "[lmtp]") {
  Driver d;
  d.Feed("MAIL FROM:<a@b>\r\n");  // before LHLO
  d.Feed(std::string(kHello) + "RCPT TO:<u@x>\r\nDATA\r\n");
  d.Feed("MAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\nDATA\r\n");  // nested MAIL, no recipient
  d.Feed("RCPT TO:<unknown1@x>\r\nDATA\r\n");                // no valid recipient
  d.Feed("RSET\r\nRCPT TO:<u@x>\r\n");                       // RSET ends the transaction
  CHECK(d.out == std::vector<std::string>{"503 5.5.1", "LHLO client.test", "503 5.5.1",
                                          "503 5.5.1", "250 2.1.0", "503 5.5.1", "503 5.5.1",
                                          "RCPT unknown1@x -> 550", "503 5.5.1", "250 2.0.0",
                                          "503 5.5.1"});
  CHECK(d.messages.empty());
}

TEST_CASE("malformed addresses get 501", "[lmtp]") {
  Driver d;
  d.Feed(std::string(kHello) +
         "MAIL FROM:a@b\r\nMAIL FROM:<a@b\r\nMAIL FROM:<a@b>\r\nRCPT TO:<>\r\n"
         "RCPT TO:u@x\r\nRCPT TO:<@relay.test:u@x>\r\nRCPT TO:<\"a>b\"@x>\r\n");
  CHECK(d.out == std::vector<std::string>{"LHLO client.test", "501 5.5.4", "501 5.5.4",
                                          "250 2.1.0", "501 5.1.3", "501 5.5.4",
                                          "RCPT u@x -> 250", "RCPT \"a>b\"@x -> 250"});
}

TEST_CASE("LHLO with a NUL byte in its argument is refused with 501", "[lmtp]") {
  Driver d;
  d.Feed(std::string("LHLO cli\0ent.test\r\nLHLO \0\r\n", 27));
  d.Feed("MAIL FROM:<a@b>\r\n");  // the refused LHLOs did not count
  d.Feed(kHello);
  CHECK(d.out ==
        std::vector<std::string>{"501 5.5.4", "501 5.5.4", "503 5.5.1", "LHLO client.test"});
}

TEST_CASE("garbage gets 500 and, after too many errors, 421 and the end", "[lmtp]") {
  Driver d({.max_bad_commands = 5});
  d.Feed(std::string("\x01\x02\xff\xfe garbage\r\n", 14) + std::string("\0\0\0\r\n", 5) +
         "EHLO x\r\nEXPN list\r\n\r\n");
  CHECK(d.out == std::vector<std::string>{"500 5.5.1", "500 5.5.1", "500 5.5.1", "502 5.5.2",
                                          "500 5.5.1", "QUIT 421"});
  d.out.clear();
  d.Feed("NOOP\r\n");  // closed: nothing more
  CHECK(d.out.empty());
}

TEST_CASE("a good command resets the count of errors", "[lmtp]") {
  Driver d({.max_bad_commands = 3});
  for (int i = 0; i < 10; ++i) d.Feed("BOGUS\r\nBOGUS\r\nNOOP\r\n");
  CHECK(d.out.size() == 30);
  CHECK(d.out.back() == "250 2.0.0");
}

TEST_CASE("random input in random pieces never buffers more than a line or a message's limit",
          "[lmtp]") {
  // Protocol fragments and noise, so that random input reaches every state.
  const std::vector<std::string> pieces = {
      "LHLO x\r\n", "MAIL FROM:<a@b>\r\n", "RCPT TO:<u@x>\r\n", "RCPT TO:<unknown@x>\r\n",
      "DATA\r\n",   ".\r\n",               "\r\n.\r\n",       "..\r\n",
      "\n",          "\r",                   ".",                 std::string(3000, 'y'),
      "RSET\r\n",   std::string("\0\xff", 2), "MAIL FROM:<a@b> SIZE=99999999\r\n"};
  uint64_t seed = 42;
  auto next = [&] {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<size_t>(seed >> 33);
  };
  for (int round = 0; round < 200; ++round) {
    Driver d({.max_message_bytes = 5000, .max_bad_commands = 1000});
    for (int i = 0; i < 300; ++i) {
      const std::string& p = pieces[next() % pieces.size()];
      const size_t cut = next() % (p.size() + 1);
      d.Feed(p.substr(0, cut));
      d.Feed(p.substr(cut));
      REQUIRE(d.parser.buffered() <= 9000);  // a line, or a partial message line
    }
    for (const std::string& m : d.messages) REQUIRE(m.size() <= 5000);
  }
}

TEST_CASE("replies are formatted with enhanced codes and without control characters", "[lmtp]") {
  CHECK(FormatReply({250, "2.1.5", "OK"}) == "250 2.1.5 OK\r\n");
  CHECK(FormatReply({354, "", "go ahead"}) == "354 go ahead\r\n");
  CHECK(FormatReply({451, "4.3.0", "bad\r\nthing"}) == "451 4.3.0 bad  thing\r\n");
  CHECK(FormatLhloReply("mx.test", 1234) ==
        "250-mx.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
        "250 SIZE 1234\r\n");
}

}  // namespace
}  // namespace mailrepl::lmtp
