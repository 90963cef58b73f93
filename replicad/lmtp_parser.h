// File: replicad/lmtp_parser.h
//
// The LMTP protocol state machine (RFC 2033 with PIPELINING RFC 2920,
// ENHANCEDSTATUSCODES RFC 2034, SIZE RFC 1870 and 8BITMIME), free of I/O in
// the manner of Asio's request_parser: Feed() it the bytes read from the
// socket, then take events with Next() until it returns false (it needs more
// input). Commands pipelined in one read come out one event at a time, in
// order, so replies go out in order.
//
// What the parser decides alone: command syntax, sequence errors (503 5.5.1),
// overlong command lines (500 5.5.6, the line is discarded), the message
// size limit (bytes past it are discarded while reading, then 552 5.3.4 for
// every recipient), dot-unstuffing and the terminating <CRLF>.<CRLF>. A bare
// LF ends a line like CRLF does; message lines are stored with CRLF.
// What it leaves to its caller: whether a recipient is deliverable (the
// kCheckRecipient event; call AcceptRecipient() when the answer was 2xx)
// and the delivery itself (the kDeliver event).
//
// Thread-compatible: one parser per connection, used from one thread.
//
// Example:
//   LmtpParser parser({.max_message_bytes = 50 << 20});
//   parser.Feed(bytes_read);
//   LmtpEvent ev;
//   while (parser.Next(&ev)) {
//     if (ev.kind == LmtpEvent::kCheckRecipient) {
//       LmtpReply r = backend.CheckRecipient(ev.address);
//       if (r.positive()) parser.AcceptRecipient(ev.address);
//       Send(r);
//     } else ...
//   }
#ifndef MAILREPL_REPLICAD_LMTP_PARSER_H_
#define MAILREPL_REPLICAD_LMTP_PARSER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "replicad/lmtp_reply.h"

namespace mailrepl::lmtp {

struct LmtpParserOptions {
  // Message bytes (after dot-unstuffing, CRLF line ends) accepted per
  // transaction; also announced as SIZE in the LHLO reply.
  uint64_t max_message_bytes = 50ull << 20;
  // Longest command line, CRLF included (RFC 5321 4.5.3.1.4 text lines).
  size_t max_line_bytes = 1000;
  // Recipients per transaction; more get 452 4.5.3 (RFC 5321 4.5.3.1.8).
  size_t max_recipients = 1000;
  // After this many refused commands in a row the parser asks the caller
  // to close the connection (421 4.7.0): garbage senders do not linger.
  int max_bad_commands = 20;
};

struct LmtpEvent {
  enum Kind {
    kReply,           // send `reply`
    kLhlo,            // send the LHLO reply (FormatLhloReply); `address` holds the client's name
    kCheckRecipient,  // RCPT TO:<address>: ask the backend, send its reply
    kDeliver,         // a whole message: deliver `message` from `from` to `recipients`
    kQuit,            // send `reply`, then close the connection
  };
  Kind kind = kReply;
  LmtpReply reply;
  std::string address;
  std::string from;
  std::vector<std::string> recipients;
  std::string message;
};

class LmtpParser {
 public:
  explicit LmtpParser(LmtpParserOptions options);
  LmtpParser(const LmtpParser&) = delete;
  LmtpParser& operator=(const LmtpParser&) = delete;

  // Adds bytes read from the connection.
  void Feed(std::string_view bytes);
  // The next event, if the input fed so far completes one. False: feed more.
  bool Next(LmtpEvent* event);
  // Records that the recipient of the last kCheckRecipient event was
  // accepted (the backend answered 2xx). Call before the next Next().
  void AcceptRecipient(const std::string& address);

  // Whether a mail transaction (MAIL FROM given, or message data being
  // read) is in progress.
  bool in_transaction() const { return mail_given_ || state_ != State::kCommand; }
  // Bytes fed but not yet consumed (buffered partial lines).
  size_t buffered() const { return in_.size() - pos_; }
  const LmtpParserOptions& options() const { return options_; }

 private:
  enum class State { kCommand, kDiscardLine, kData, kClosed };

  bool NextCommand(LmtpEvent* event);
  bool NextData(LmtpEvent* event);
  void HandleCommand(std::string_view line, LmtpEvent* event);
  void HandleMail(std::string_view args, LmtpEvent* event);
  void HandleRcpt(std::string_view args, LmtpEvent* event);
  void HandleData(std::string_view args, LmtpEvent* event);
  void AppendMessage(std::string_view bytes);
  void ResetTransaction();
  void Compact();

  LmtpParserOptions options_;
  std::string in_;  // input; bytes before pos_ are consumed
  size_t pos_ = 0;
  State state_ = State::kCommand;
  int bad_commands_ = 0;
  bool lhlo_given_ = false;
  // The transaction.
  bool mail_given_ = false;
  std::string from_;
  std::vector<std::string> recipients_;
  std::string message_;
  uint64_t message_bytes_ = 0;  // counted even when discarding
  bool oversized_ = false;
  bool mid_line_ = false;       // data: part of the current line was consumed
  // Replies still owed for an oversized message (552 per recipient).
  size_t owed_552_ = 0;
};

// "250-host\r\n250-PIPELINING\r\n...250 SIZE n\r\n": the reply to LHLO.
std::string FormatLhloReply(const std::string& hostname, uint64_t max_message_bytes);
// "250 2.1.5 OK\r\n" (no enhanced code for codes that have none, e.g. 220, 354).
std::string FormatReply(const LmtpReply& reply);

}  // namespace mailrepl::lmtp

#endif  // MAILREPL_REPLICAD_LMTP_PARSER_H_
