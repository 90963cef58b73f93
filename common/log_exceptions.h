// LogExceptions: a completion token for asio::co_spawn that logs an
// exception escaping the coroutine instead of dropping it (asio::detached
// drops it silently).
//
// Example:
//   asio::co_spawn(io, RenewLeases(), LogExceptions("lease renewal"));
#ifndef MAILREPL_COMMON_LOG_EXCEPTIONS_H_
#define MAILREPL_COMMON_LOG_EXCEPTIONS_H_

#include <exception>
#include <string>

#include "common/log.h"

namespace mailrepl {

inline auto LogExceptions(std::string what) {
  return [what = std::move(what)](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      LogLine(Severity::kError, "coroutine ended by an exception",
              Kv("task", what) + Kv("error", x.what()));
    } catch (...) {
      LogLine(Severity::kError, "coroutine ended by an exception",
              Kv("task", what) + Kv("error", "unknown"));
    }
  };
}

}  // namespace mailrepl

#endif  // MAILREPL_COMMON_LOG_EXCEPTIONS_H_
