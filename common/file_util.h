// Small POSIX file helpers that turn errno into absl::Status with the path in
// the message. Thread-safe: no shared state.
#ifndef MAILREPL_COMMON_FILE_UTIL_H_
#define MAILREPL_COMMON_FILE_UTIL_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mailrepl {

// "OP PATH: strerror" with a code chosen by errno (ENOSPC/EDQUOT ->
// kResourceExhausted, ENOENT -> kNotFound, EACCES -> kPermissionDenied, ...).
absl::Status ErrnoStatus(int err, absl::string_view op, absl::string_view path);

// fsync() on a directory, so that entries created or renamed in it are durable.
absl::Status SyncDir(const std::string& dir);

// fsync() of one file.
absl::Status SyncFile(const std::string& path);

// Writes contents to path durably and atomically: PATH.tmp, fsync, rename,
// fsync of the directory. Readers see the old file or the new one, never a mix.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// Writes all of data to fd, retrying on short writes and EINTR.
absl::Status WriteAll(int fd, absl::string_view data, const std::string& path_for_errors);
// The same at a file offset (pwrite), leaving the file position alone.
absl::Status PwriteAll(int fd, absl::string_view data, uint64_t offset,
                       const std::string& path_for_errors);

absl::StatusOr<std::string> ReadFile(const std::string& path);

// mkdir -p; fsyncs each parent whose entry it created.
absl::Status MakeDirs(const std::string& path);

}  // namespace mailrepl

#endif  // MAILREPL_COMMON_FILE_UTIL_H_
