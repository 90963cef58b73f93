// Structured, greppable log lines on stderr: a fixed event text followed by
// key=<value> pairs, e.g.
//   2026-11-23T13:40:00Z WARN log torn tail truncated file=<...> offset=<123>
// Thread-safe: each line is written with one write(2).
#ifndef MAILREPL_COMMON_LOG_H_
#define MAILREPL_COMMON_LOG_H_

#include "absl/strings/string_view.h"

#include "absl/strings/str_cat.h"

namespace mailrepl {

enum class Severity { kInfo, kWarning, kError };

// fields is already formatted: use Kv() to build it.
void LogLine(Severity severity, absl::string_view event, absl::string_view fields);

template <typename T>
std::string Kv(absl::string_view key, const T& value) {
  return absl::StrCat(" ", key, "=<", value, ">");
}

// Suppresses kInfo lines (tests and CLIs that print their own output).
void SetLogQuiet(bool quiet);

}  // namespace mailrepl

#endif  // MAILREPL_COMMON_LOG_H_
