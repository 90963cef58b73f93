#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace mailrepl {
namespace {
std::atomic<bool> quiet{false};
}

void SetLogQuiet(bool q) { quiet = q; }

void LogLine(Severity severity, absl::string_view event, absl::string_view fields) {
  if (severity == Severity::kInfo && quiet) return;
  const char* level = severity == Severity::kInfo      ? "INFO"
                      : severity == Severity::kWarning ? "WARN"
                                                       : "ERROR";
  std::string line = absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()), " ",
      level, " ", event, fields, "\n");
  ssize_t ignored = ::write(2, line.data(), line.size());
  (void)ignored;
}

}  // namespace mailrepl
