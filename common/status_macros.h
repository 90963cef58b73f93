// Tiny helpers for absl::Status propagation (our Abseil, 20220623, has no
// ABSL_RETURN_IF_ERROR). Thread-safe: stateless macros.
//
// Example:
//   RETURN_IF_ERROR(file.Sync());
//   ASSIGN_OR_RETURN(auto slot, Slot::Open(paths));
#ifndef MAILREPL_COMMON_STATUS_MACROS_H_
#define MAILREPL_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MR_CONCAT_INNER_(a, b) a##b
#define MR_CONCAT_(a, b) MR_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status mr_status_ = (expr);              \
    if (!mr_status_.ok()) return mr_status_;         \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(MR_CONCAT_(mr_statusor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // MAILREPL_COMMON_STATUS_MACROS_H_
