// Helpers shared by the tests: temporary directories, byte surgery on files,
// and a slot opened in a fresh directory. Thread-compatible.
#ifndef MAILREPL_TEST_TEST_UTIL_H_
#define MAILREPL_TEST_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>

#include "store/slot.h"

namespace mailrepl::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on
// destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Creates and opens a slot (cluster "test", store 1, slot 1) under dir.
std::unique_ptr<Slot> NewSlot(const std::string& dir, SlotOptions options = {});
std::unique_ptr<Slot> ReopenSlot(const std::string& dir, SlotOptions options = {});

// A small valid RFC 5322 message whose bytes depend on n.
std::string TestMessage(int n, size_t body_bytes = 200);

// Byte surgery for format tests.
void FlipByte(const std::string& path, uint64_t offset);
// Overwrites one byte in place.
void WriteByteAt(const std::string& path, uint64_t offset, char c);
uint64_t FileSize(const std::string& path);
void TruncateFile(const std::string& path, uint64_t size);
void AppendBytes(const std::string& path, const std::string& bytes);

// Where a body is in the slot's spool: its pack file, the offset of its
// entry and of its first byte. Flushes the background writer first.
struct PackedBody {
  std::string path;
  uint64_t entry_offset = 0;
  uint64_t body_offset = 0;
};
PackedBody FindPackedBody(Slot& slot, const std::string& guid);

// The path of the single (or last) log segment of a slot.
std::string LastSegment(const std::string& slot_dir);

// The replicated records (local ones skipped) in the log of the slot under
// slot_dir from LSN `from` on, as a master's sync client would send them.
std::vector<LogRecord> RecordsFrom(const std::string& slot_dir, uint64_t from);

}  // namespace mailrepl::testing

#endif  // MAILREPL_TEST_TEST_UTIL_H_
