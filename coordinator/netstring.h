// File: coordinator/netstring.h
//
// Netstrings (D. J. Bernstein): "LEN:DATA," where LEN is the decimal length
// of DATA. Postfix's socketmap protocol (socketmap_table(5)) sends every
// request and every reply as one netstring; docs/protocol.md "Socketmap
// routing lookups". An I/O-free codec: the parser looks at the bytes
// received so far and says good (one netstring, and how many bytes it
// took), need more, or bad (with the reason); the length is bounded, so a
// peer cannot make the server buffer more than max_length + a few bytes.
//
// Thread-safe: pure functions.
//
// Example:
//   NetstringParse p = ParseNetstring(buffer, kMaxSocketmapRequest);
//   if (p.result == NetstringResult::kGood) {
//     Handle(p.payload);
//     buffer.erase(0, p.consumed);
//   }
#ifndef MAILREPL_COORDINATOR_NETSTRING_H_
#define MAILREPL_COORDINATOR_NETSTRING_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace mailrepl::coord {

enum class NetstringResult { kGood, kNeedMore, kBad };

struct NetstringParse {
  NetstringResult result = NetstringResult::kNeedMore;
  absl::string_view payload;  // kGood: DATA (points into the input)
  size_t consumed = 0;        // kGood: bytes of the whole netstring
  std::string error;          // kBad: what is wrong, for the peer and the log
};

// Parses the netstring at the start of `input`. LEN is 1 to 9 decimal
// digits (leading zeros allowed, as Postfix's own reader allows them) and
// at most max_length; anything else is kBad: an empty or non-digit length,
// a length over max_length (said as soon as the digits show it, without
// waiting for the data), a missing ',' after DATA.
NetstringParse ParseNetstring(absl::string_view input, size_t max_length);

// "LEN:DATA,".
std::string EncodeNetstring(absl::string_view data);

}  // namespace mailrepl::coord

#endif  // MAILREPL_COORDINATOR_NETSTRING_H_
