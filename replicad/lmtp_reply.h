// File: replicad/lmtp_reply.h
//
// One LMTP reply: code, enhanced status code (RFC 3463, "" for replies that
// carry none, such as 220 and 354) and text, sent as "250 2.1.5 OK".
// FormatReply() in lmtp_parser.h makes the wire form.
// Thread-compatible value type.
#ifndef MAILREPL_REPLICAD_LMTP_REPLY_H_
#define MAILREPL_REPLICAD_LMTP_REPLY_H_

#include <string>

namespace mailrepl::lmtp {

struct LmtpReply {
  int code = 0;
  std::string enhanced;
  std::string text;

  bool positive() const { return code >= 200 && code < 300; }
};

}  // namespace mailrepl::lmtp

#endif  // MAILREPL_REPLICAD_LMTP_REPLY_H_
