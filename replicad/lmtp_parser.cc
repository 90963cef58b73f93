#include "replicad/lmtp_parser.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace mailrepl::lmtp {
namespace {

// Input already consumed is dropped once it passes this size.
constexpr size_t kCompactBytes = 64 << 10;
// A message line without its LF yet is copied out once it passes this size,
// so a huge line never sits whole in the input buffer.
constexpr size_t kPartialLineBytes = 8 << 10;

LmtpReply Reply(int code, std::string enhanced, std::string text) {
  return LmtpReply{code, std::move(enhanced), std::move(text)};
}

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return absl::EqualsIgnoreCase(Absl(a), Absl(b));
}

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && EqualsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool HasControlChars(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

// Parses "<path> params" (after "FROM:" or "TO:"). Returns false on a
// syntax error. A source route ("<@a,@b:user@d>") is dropped (RFC 5321
// 4.1.1.3 says to accept and ignore it). Quoted local parts may hold '>'.
bool ParsePath(std::string_view args, std::string* address, std::string_view* params) {
  args = TrimSpaces(args);
  if (args.empty() || args.front() != '<') return false;
  bool quoted = false;
  size_t end = std::string_view::npos;
  for (size_t i = 1; i < args.size(); ++i) {
    const char c = args[i];
    if (quoted && c == '\\') {
      ++i;
    } else if (c == '"') {
      quoted = !quoted;
    } else if (c == '>' && !quoted) {
      end = i;
      break;
    }
  }
  if (end == std::string_view::npos) return false;
  std::string_view path = args.substr(1, end - 1);
  if (!path.empty() && path.front() == '@') {
    const size_t colon = path.find(':');
    if (colon == std::string_view::npos) return false;
    path.remove_prefix(colon + 1);
  }
  *address = std::string(path);
  *params = TrimSpaces(args.substr(end + 1));
  if (!params->empty() && args[end + 1] != ' ' && args[end + 1] != '\t') return false;
  return true;
}

// Splits ESMTP parameters "A=1 B" into (key, value) pairs.
std::vector<std::pair<std::string_view, std::string_view>> SplitParams(std::string_view s) {
  std::vector<std::pair<std::string_view, std::string_view>> out;
  while (!(s = TrimSpaces(s)).empty()) {
    const size_t sp = s.find_first_of(" \t");
    std::string_view item = s.substr(0, sp);
    s.remove_prefix(sp == std::string_view::npos ? s.size() : sp);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      out.emplace_back(item, std::string_view());
    } else {
      out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    }
  }
  return out;
}

}  // namespace

LmtpParser::LmtpParser(LmtpParserOptions options) : options_(std::move(options)) {}

void LmtpParser::Compact() {
  if (pos_ == in_.size()) {
    in_.clear();
    pos_ = 0;
  } else if (pos_ > kCompactBytes) {
    in_.erase(0, pos_);
    pos_ = 0;
  }
}

void LmtpParser::Feed(std::string_view bytes) {
  if (state_ == State::kClosed) return;
  Compact();
  in_.append(bytes.data(), bytes.size());
}

void LmtpParser::AcceptRecipient(const std::string& address) { recipients_.push_back(address); }

void LmtpParser::ResetTransaction() {
  mail_given_ = false;
  from_.clear();
  recipients_.clear();
  message_.clear();
  message_bytes_ = 0;
  oversized_ = false;
  mid_line_ = false;
}

bool LmtpParser::Next(LmtpEvent* event) {
  *event = LmtpEvent{};
  for (;;) {
    if (owed_552_ > 0) {
      --owed_552_;
      event->reply = Reply(552, "5.3.4",
                           absl::StrCat("message exceeds the size limit of ",
                                        options_.max_message_bytes, " bytes"));
      return true;
    }
    switch (state_) {
      case State::kClosed:
        return false;
      case State::kData:
        if (NextData(event)) return true;
        if (state_ == State::kData) return false;  // needs more input
        break;  // an oversized message ended: the 552s are owed
      case State::kCommand:
      case State::kDiscardLine:
        return NextCommand(event);
    }
  }
}

bool LmtpParser::NextCommand(LmtpEvent* event) {
  if (bad_commands_ >= options_.max_bad_commands) {
    event->kind = LmtpEvent::kQuit;
    event->reply = Reply(421, "4.7.0", "too many errors, closing the connection");
    state_ = State::kClosed;
    return true;
  }
  const size_t lf = in_.find('\n', pos_);
  if (lf == std::string::npos) {
    if (state_ == State::kDiscardLine || in_.size() - pos_ > options_.max_line_bytes) {
      state_ = State::kDiscardLine;  // drop what we have; the reply comes at the LF
      pos_ = in_.size();
      Compact();
    }
    return false;
  }
  const bool too_long = state_ == State::kDiscardLine || lf + 1 - pos_ > options_.max_line_bytes;
  std::string_view line(in_.data() + pos_, lf - pos_);
  pos_ = lf + 1;
  state_ = State::kCommand;
  if (too_long) {
    event->reply = Reply(500, "5.5.6", absl::StrCat("command line longer than ",
                                                    options_.max_line_bytes, " bytes"));
  } else {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    HandleCommand(line, event);
  }
  const bool refused = event->kind == LmtpEvent::kReply && event->reply.code >= 500 &&
                       event->reply.code != 552;
  bad_commands_ = refused ? bad_commands_ + 1 : 0;
  return true;
}

void LmtpParser::HandleCommand(std::string_view line, LmtpEvent* event) {
  const size_t sp = line.find(' ');
  const std::string_view verb = line.substr(0, sp);
  const std::string_view args =
      sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
  auto is = [&](std::string_view name) { return EqualsIgnoreCase(verb, name); };
  if (is("LHLO")) {
    if (TrimSpaces(args).empty()) {
      event->reply = Reply(501, "5.5.4", "LHLO needs the client's name");
      return;
    }
    if (HasControlChars(TrimSpaces(args))) {  // a NUL, CR or other control byte
      event->reply = Reply(501, "5.5.4", "bad client name syntax");
      return;
    }
    lhlo_given_ = true;
    ResetTransaction();
    event->kind = LmtpEvent::kLhlo;
    event->address = std::string(TrimSpaces(args));
  } else if (is("MAIL")) {
    HandleMail(args, event);
  } else if (is("RCPT")) {
    HandleRcpt(args, event);
  } else if (is("DATA")) {
    HandleData(args, event);
  } else if (is("RSET")) {
    if (!TrimSpaces(args).empty()) {
      event->reply = Reply(501, "5.5.4", "RSET takes no arguments");
      return;
    }
    ResetTransaction();
    event->reply = Reply(250, "2.0.0", "OK");
  } else if (is("NOOP")) {
    event->reply = Reply(250, "2.0.0", "OK");
  } else if (is("QUIT")) {
    event->kind = LmtpEvent::kQuit;
    event->reply = Reply(221, "2.0.0", "bye");
    state_ = State::kClosed;
  } else if (is("VRFY")) {
    event->reply = Reply(252, "2.5.0", "cannot VRFY user, but will accept message and attempt delivery");
  } else if (is("HELO") || is("EHLO")) {
    event->reply = Reply(500, "5.5.1", "this is LMTP: use LHLO");
  } else if (is("EXPN") || is("HELP") || is("TURN") || is("ETRN") || is("BDAT") ||
             is("STARTTLS") || is("AUTH") || is("SEND") || is("SOML") || is("SAML")) {
    event->reply = Reply(502, "5.5.2", "command not implemented");
  } else {
    event->reply = Reply(500, "5.5.1", "command not recognized");
  }
}

void LmtpParser::HandleMail(std::string_view args, LmtpEvent* event) {
  std::string address;
  std::string_view params;
  if (!StartsWithIgnoreCase(args, "FROM:") || !ParsePath(args.substr(5), &address, &params)) {
    event->reply = Reply(501, "5.5.4", "syntax: MAIL FROM:<address> [SIZE=n] [BODY=8BITMIME]");
    return;
  }
  if (!lhlo_given_) {
    event->reply = Reply(503, "5.5.1", "send LHLO first");
    return;
  }
  if (mail_given_) {
    event->reply = Reply(503, "5.5.1", "nested MAIL command");
    return;
  }
  if (HasControlChars(address)) {
    event->reply = Reply(501, "5.1.7", "bad sender address syntax");
    return;
  }
  for (const auto& [key, value] : SplitParams(params)) {
    if (EqualsIgnoreCase(key, "SIZE")) {
      uint64_t size = 0;
      if (!absl::SimpleAtoi(Absl(value), &size)) {
        event->reply = Reply(501, "5.5.4", "SIZE needs a number");
        return;
      }
      if (size > options_.max_message_bytes) {
        event->reply = Reply(552, "5.3.4",
                             absl::StrCat("message size exceeds the limit of ",
                                          options_.max_message_bytes, " bytes"));
        return;
      }
    } else if (EqualsIgnoreCase(key, "BODY")) {
      if (!EqualsIgnoreCase(value, "7BIT") && !EqualsIgnoreCase(value, "8BITMIME")) {
        event->reply = Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME");
        return;
      }
    } else {
      event->reply = Reply(555, "5.5.4", absl::StrCat("unsupported MAIL parameter ", Absl(key)));
      return;
    }
  }
  mail_given_ = true;
  from_ = std::move(address);
  event->reply = Reply(250, "2.1.0", "sender OK");
}

void LmtpParser::HandleRcpt(std::string_view args, LmtpEvent* event) {
  std::string address;
  std::string_view params;
  if (!StartsWithIgnoreCase(args, "TO:") || !ParsePath(args.substr(3), &address, &params)) {
    event->reply = Reply(501, "5.5.4", "syntax: RCPT TO:<address>");
    return;
  }
  if (!mail_given_) {
    event->reply = Reply(503, "5.5.1", "need MAIL before RCPT");
    return;
  }
  if (address.empty() || HasControlChars(address)) {
    event->reply = Reply(501, "5.1.3", "bad recipient address syntax");
    return;
  }
  if (!params.empty()) {
    event->reply = Reply(555, "5.5.4", "RCPT parameters are not supported");
    return;
  }
  if (recipients_.size() >= options_.max_recipients) {
    event->reply = Reply(452, "4.5.3", "too many recipients");
    return;
  }
  event->kind = LmtpEvent::kCheckRecipient;
  event->address = std::move(address);
}

void LmtpParser::HandleData(std::string_view args, LmtpEvent* event) {
  if (!TrimSpaces(args).empty()) {
    event->reply = Reply(501, "5.5.4", "DATA takes no arguments");
  } else if (!mail_given_) {
    event->reply = Reply(503, "5.5.1", "need MAIL command");
  } else if (recipients_.empty()) {
    event->reply = Reply(503, "5.5.1", "no valid recipients");
  } else {
    state_ = State::kData;
    mid_line_ = false;
    message_.clear();
    message_bytes_ = 0;
    oversized_ = false;
    event->reply = Reply(354, "", "go ahead, end with <CRLF>.<CRLF>");
  }
}

void LmtpParser::AppendMessage(std::string_view bytes) {
  message_bytes_ += bytes.size();
  if (oversized_) return;
  if (message_bytes_ > options_.max_message_bytes) {
    oversized_ = true;  // keep reading to the end, keep nothing
    std::string().swap(message_);
    return;
  }
  message_.append(bytes.data(), bytes.size());
}

bool LmtpParser::NextData(LmtpEvent* event) {
  for (;;) {
    const size_t lf = in_.find('\n', pos_);
    if (lf == std::string::npos) {
      if (in_.size() - pos_ > kPartialLineBytes) {
        // Consume all but the last byte (it may be the CR of CRLF). A line
        // this long is not the terminating ".", but its first dot is still
        // a stuffed one.
        size_t start = pos_;
        if (!mid_line_ && in_[pos_] == '.') ++start;
        AppendMessage(std::string_view(in_.data() + start, in_.size() - 1 - start));
        pos_ = in_.size() - 1;
        mid_line_ = true;
      }
      Compact();
      return false;
    }
    std::string_view line(in_.data() + pos_, lf - pos_);
    pos_ = lf + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!mid_line_ && !line.empty() && line.front() == '.') {
      if (line.size() == 1) break;  // the end of the data
      line.remove_prefix(1);
    }
    mid_line_ = false;
    AppendMessage(line);
    AppendMessage("\r\n");
  }
  state_ = State::kCommand;
  if (oversized_) {
    owed_552_ = recipients_.size();
    ResetTransaction();
    return false;
  }
  event->kind = LmtpEvent::kDeliver;
  event->from = std::move(from_);
  event->recipients = std::move(recipients_);
  event->message = std::move(message_);
  ResetTransaction();
  return true;
}

std::string FormatReply(const LmtpReply& reply) {
  std::string text = reply.text;
  constexpr size_t kMaxText = 400;
  if (text.size() > kMaxText) text.resize(kMaxText);
  for (char& c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = ' ';
  }
  if (reply.enhanced.empty()) return absl::StrCat(reply.code, " ", text, "\r\n");
  return absl::StrCat(reply.code, " ", reply.enhanced, " ", text, "\r\n");
}

std::string FormatLhloReply(const std::string& hostname, uint64_t max_message_bytes) {
  return absl::StrCat("250-", hostname, "\r\n", "250-PIPELINING\r\n", "250-ENHANCEDSTATUSCODES\r\n",
                      "250-8BITMIME\r\n", "250 SIZE ", max_message_bytes, "\r\n");
}

}  // namespace mailrepl::lmtp
