// libFuzzer target for the LMTP parser (replicad/lmtp_parser.h), driven the
// way lmtp_server.cc drives it: Feed() a piece, then take events with Next()
// until it wants more, answering each recipient check (the backend refuses
// addresses starting with "unknown", like lmtp_parser_test.cc's Driver).
//
// Input: 5 control bytes, then the bytes the client sends.
//   byte 0: the parser's limits (bits 0-1 max_message_bytes, 2-3
//           max_line_bytes, 4-5 max_recipients, 6-7 max_bad_commands),
//           small ones too so that every limit is reached;
//   bytes 1-4: the sizes of the pieces the session is fed in, cycled
//           (0 = 4096), as reads of a socket would cut it.
// The session is also run fed whole, and both transcripts must agree.
//
// Invariants checked, from the parser's contract:
//   - every reply formats (FormatReply) to one "DDD[ X.Y.Z] text\r\n" line:
//     a known code, an enhanced code of the same class (none only for 354),
//     text without control characters; the LHLO reply is well formed;
//   - a model of the session agrees with the events: MAIL accepted only
//     after LHLO and outside a transaction, RCPT checks only inside one and
//     below max_recipients, 354 only with an accepted recipient, a delivery
//     carries exactly the accepted recipients in order (addresses without
//     control characters), an oversized message gets one 552 5.3.4 per
//     recipient, 452 only at max_recipients, and in_transaction() says what
//     the model says;
//   - a delivered message is at most max_message_bytes, has CRLF line ends
//     only (no bare LF) and ends with CRLF;
//   - 421 comes exactly after max_bad_commands refused commands in a row;
//     after 221 or 421 the parser is closed for good (no event, whatever is
//     fed);
//   - the parser buffers at most a command line (max_line_bytes) or a
//     partial message line (8 KiB) between reads;
//   - feeding in pieces gives the same transcript as feeding whole.
//
// Seeds (test/fuzz/corpus/lmtp_fuzzer/) were written once by
// test/fuzz/make_lmtp_seeds.py: realistic sessions (LHLO, MAIL FROM with
// SIZE and BODY, several RCPT, DATA with dot-stuffing and bare LFs, RSET,
// QUIT, pipelined) and the edge cases of test/lmtp_parser_test.cc.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "replicad/lmtp_parser.h"

namespace mailrepl::lmtp {
namespace {

constexpr size_t kPartialLineBytes = 8 << 10;  // lmtp_parser.cc

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// "D.D{1,3}.D{1,3}" whose class digit is `klass`.
bool WellFormedEnhanced(std::string_view e, char klass) {
  if (e.size() < 5 || e[0] != klass || e[1] != '.') return false;
  size_t i = 2;
  for (int part = 0; part < 2; ++part) {
    size_t digits = 0;
    while (i < e.size() && IsDigit(e[i])) ++i, ++digits;
    if (digits == 0 || digits > 3) return false;
    if (part == 0) {
      if (i >= e.size() || e[i] != '.') return false;
      ++i;
    }
  }
  return i == e.size();
}

void CheckReply(const LmtpReply& reply) {
  static const int kCodes[] = {221, 250, 252, 354, 421, 452, 500, 501, 502, 503, 552, 555};
  bool known = false;
  for (int c : kCodes) known |= c == reply.code;
  Check(known, "reply code is one the parser sends");
  const std::string code = absl::StrCat(reply.code);
  if (reply.code == 354) {
    Check(reply.enhanced.empty(), "354 has no enhanced code");
  } else {
    Check(WellFormedEnhanced(reply.enhanced, code[0]), "enhanced code of the reply's class");
  }
  const std::string line = FormatReply(reply);
  Check(line.size() >= 6 && absl::EndsWith(line, "\r\n"), "reply ends with CRLF");
  Check(line.compare(0, 3, code) == 0 && line[3] == ' ', "reply starts with its code");
  Check(line.size() <= 3 + 1 + 9 + 1 + 400 + 2, "reply text is bounded");
  for (size_t i = 0; i + 2 < line.size(); ++i) {
    const auto u = static_cast<unsigned char>(line[i]);
    Check(u >= 0x20 && u != 0x7f, "no control characters in a reply line");
  }
}

void CheckLhloReply(const std::string& hostname, uint64_t max_message_bytes) {
  const std::string r = FormatLhloReply(hostname, max_message_bytes);
  Check(absl::StartsWith(r, "250-") &&
            absl::EndsWith(r, absl::StrCat("250 SIZE ", max_message_bytes, "\r\n")),
        "LHLO reply: 250- lines, then 250 SIZE");
}

// One event as a line of the transcript (to compare piecewise and whole).
std::string Describe(const LmtpEvent& ev) {
  return absl::StrCat(ev.kind, "|", ev.reply.code, "|", ev.reply.enhanced, "|", ev.reply.text, "|",
                      ev.address, "|", ev.from, "|", ev.recipients.size(), "|", ev.message);
}

struct Model {
  bool lhlo = false;
  bool mail = false;
  bool data = false;  // between 354 and the end of the message
  std::vector<std::string> accepted;
  size_t owed_552 = 0;  // 552s still expected for an oversized message
  int bad_in_a_row = 0;
  bool closed = false;
  void Reset() {
    mail = false;
    data = false;
    accepted.clear();
  }
};

// Runs the session; returns the transcript.
std::vector<std::string> Run(const LmtpParserOptions& options, std::string_view session,
                             const size_t pieces[4]) {
  LmtpParser parser(options);
  Model m;
  std::vector<std::string> transcript;
  size_t pos = 0;
  for (int n = 0; pos < session.size(); ++n) {
    const size_t piece = std::min(pieces[n % 4], session.size() - pos);
    const size_t before = parser.buffered();
    parser.Feed(session.substr(pos, piece));
    pos += piece;
    if (m.closed) Check(parser.buffered() == before, "nothing is taken in once closed");
    LmtpEvent ev;
    while (parser.Next(&ev)) {
      Check(!m.closed, "no event after 221 or 421");
      transcript.push_back(Describe(ev));
      if (m.owed_552 > 0) {
        Check(ev.kind == LmtpEvent::kReply && ev.reply.code == 552 && ev.reply.enhanced == "5.3.4",
              "an oversized message gets 552 5.3.4 for each recipient");
        --m.owed_552;
        Check(!parser.in_transaction(), "the oversized message's transaction is over");
        continue;
      }
      if (m.bad_in_a_row >= options.max_bad_commands) {
        Check(ev.kind == LmtpEvent::kQuit && ev.reply.code == 421,
              "421 after max_bad_commands refused commands in a row");
      }
      switch (ev.kind) {
        case LmtpEvent::kReply: {
          CheckReply(ev.reply);
          const int code = ev.reply.code;
          if (m.data) {
            // The end of an oversized message: 552 for every recipient.
            Check(code == 552 && ev.reply.enhanced == "5.3.4",
                  "a message ends in a delivery or 552s");
            Check(!m.accepted.empty(), "data had recipients");
            m.owed_552 = m.accepted.size() - 1;
            m.Reset();
            Check(!parser.in_transaction(), "the oversized message's transaction is over");
            continue;
          }
          const bool refused = code >= 500 && code != 552;
          m.bad_in_a_row = refused ? m.bad_in_a_row + 1 : 0;
          Check(m.bad_in_a_row <= options.max_bad_commands, "bad command count within limit");
          if (code == 250 && ev.reply.enhanced == "2.1.0") {
            Check(m.lhlo && !m.mail, "MAIL accepted only after LHLO, outside a transaction");
            m.mail = true;
          } else if (code == 354) {
            Check(m.mail && !m.accepted.empty(), "DATA accepted only with a recipient");
            m.data = true;
          } else if (code == 250 && ev.reply.enhanced == "2.0.0") {
            if (!parser.in_transaction()) m.Reset();  // RSET (or a NOOP outside one)
          } else if (code == 452) {
            Check(m.mail && m.accepted.size() >= options.max_recipients,
                  "452 only at max_recipients");
          }
          break;
        }
        case LmtpEvent::kLhlo:
          m.bad_in_a_row = 0;
          Check(!ev.address.empty(), "LHLO has a name");
          for (char c : ev.address) {
            const auto u = static_cast<unsigned char>(c);
            Check(u >= 0x20 && u != 0x7f, "LHLO name without control characters");
          }
          Check(ev.address.front() != ' ' && ev.address.back() != ' ', "LHLO name trimmed");
          CheckLhloReply("mx.test", options.max_message_bytes);
          m.lhlo = true;
          m.Reset();
          break;
        case LmtpEvent::kCheckRecipient: {
          m.bad_in_a_row = 0;
          Check(m.mail && !m.data, "RCPT checked only in a transaction");
          Check(m.accepted.size() < options.max_recipients, "RCPT below max_recipients");
          Check(!ev.address.empty(), "recipient address not empty");
          for (char c : ev.address) {
            const auto u = static_cast<unsigned char>(c);
            Check(u >= 0x20 && u != 0x7f, "recipient without control characters");
          }
          if (!absl::StartsWith(ev.address, "unknown")) {
            parser.AcceptRecipient(ev.address);
            m.accepted.push_back(ev.address);
          }
          break;
        }
        case LmtpEvent::kDeliver: {
          Check(m.data, "delivery only after 354");
          for (char c : ev.from) {
            const auto u = static_cast<unsigned char>(c);
            Check(u >= 0x20 && u != 0x7f, "sender without control characters");
          }
          Check(ev.recipients == m.accepted, "delivery to exactly the accepted recipients");
          Check(!ev.recipients.empty() && ev.recipients.size() <= options.max_recipients,
                "delivery has 1..max_recipients recipients");
          Check(ev.message.size() <= options.max_message_bytes, "message within the size limit");
          for (size_t i = 0; i < ev.message.size(); ++i) {
            if (ev.message[i] == '\n') Check(i > 0 && ev.message[i - 1] == '\r', "no bare LF");
          }
          Check(ev.message.empty() || absl::EndsWith(ev.message, "\r\n"), "message ends in CRLF");
          m.Reset();
          Check(!parser.in_transaction(), "a delivery ends the transaction");
          break;
        }
        case LmtpEvent::kQuit:
          CheckReply(ev.reply);
          Check(ev.reply.code == 221 || ev.reply.code == 421, "quit is 221 or 421");
          Check(ev.reply.code == 421 || m.bad_in_a_row < options.max_bad_commands,
                "221 only below the error limit");
          m.closed = true;
          break;
      }
      if (!m.closed && m.owed_552 == 0) {
        Check(parser.in_transaction() == (m.mail || m.data), "in_transaction() agrees");
      }
    }
    if (!m.closed) {
      Check(parser.buffered() <= (m.data ? kPartialLineBytes : options.max_line_bytes),
            "buffers at most a line between reads");
    }
  }
  return transcript;
}

}  // namespace
}  // namespace mailrepl::lmtp

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mailrepl::lmtp;
  if (size < 5) return 0;
  static const uint64_t kMessageBytes[] = {0, 40, 1000, 50ull << 20};
  static const size_t kLineBytes[] = {12, 64, 512, 1000};
  static const size_t kRecipients[] = {1, 2, 5, 1000};
  static const int kBadCommands[] = {1, 3, 20, 1000};
  const uint8_t c = data[0];
  const LmtpParserOptions options{.max_message_bytes = kMessageBytes[c & 3],
                                  .max_line_bytes = kLineBytes[(c >> 2) & 3],
                                  .max_recipients = kRecipients[(c >> 4) & 3],
                                  .max_bad_commands = kBadCommands[(c >> 6) & 3]};
  size_t pieces[4];
  for (int i = 0; i < 4; ++i) pieces[i] = data[1 + i] == 0 ? 4096 : data[1 + i];
  const std::string_view session(reinterpret_cast<const char*>(data + 5), size - 5);
  const std::vector<std::string> piecewise = Run(options, session, pieces);
  const size_t whole[4] = {session.size() + 1, 1, 1, 1};
  const std::vector<std::string> at_once = Run(options, session, whole);
  Check(piecewise == at_once, "the same transcript fed in pieces and whole");
  return 0;
}
