// Constants of the change-log record format, shared by the log writer, the
// log reader, snapshots and the replication stream. The format is specified
// in ../docs/formats.md ("Change log"); change both together.
#ifndef MAILREPL_STORE_LOG_FORMAT_H_
#define MAILREPL_STORE_LOG_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

namespace mailrepl {

// Record types. Numbers are written to disk: never change or reuse one.
enum class RecordType : uint8_t {
  kCreateMailbox = 1,
  kRenameMailbox = 2,
  kDeleteMailbox = 3,
  kAppend = 4,
  kSetFlags = 5,
  kExpunge = 6,
  kSetQuota = 7,
  kBeginEpoch = 8,
  kAdminNote = 9,       // local
  kRepairMailbox = 10,  // local
  // Snapshot entries (snapshot files only, never in the change log).
  kSnapshotHeader = 64,
  kSnapshotMailbox = 65,
  kSnapshotMessage = 66,
  kSnapshotBody = 67,
  kSnapshotQuota = 68,
  kSnapshotTrailer = 69,
  // Salvage file entries (docs/formats.md "Salvage files"; never in the
  // change log). Payloads: proto/salvage.proto.
  kSalvageHeader = 80,
  kSalvageMessage = 81,
  kSalvageTrailer = 82,
};

bool IsLogRecordType(uint8_t type);
// Local records belong to one slot: they carry the LSN of the record before
// them (0 at the start of a log), take no LSN of their own and are never
// replicated. All other log records take the next LSN.
bool IsLocalRecordType(RecordType type);
bool IsSnapshotEntryType(uint8_t type);
bool IsSalvageEntryType(uint8_t type);
absl::string_view RecordTypeName(RecordType type);

// Header: masked CRC32C (4) | payload length (4) | LSN (8) | epoch (8) | type (1).
// All integers little-endian. The CRC covers bytes 4.. of the header and the payload.
inline constexpr size_t kRecordHeaderSize = 25;
// Upper bound of one payload: a maximum-size message plus its metadata.
inline constexpr uint32_t kMaxRecordPayload = 64u << 20;
// A segment is closed and a new one started once it passes this size.
inline constexpr uint64_t kDefaultSegmentBytes = 64u << 20;

struct LogRecord {
  uint64_t lsn = 0;
  uint64_t epoch = 0;
  RecordType type = RecordType::kAdminNote;
  std::string payload;  // serialized protobuf, see proto/log.proto
};

// Appends the encoded record (header + payload) to *out.
void EncodeRecord(const LogRecord& record, std::string* out);

enum class DecodeStatus { kOk, kNeedMore, kBad };

// Decodes one record at the start of data. On kOk sets *record and
// *consumed. kNeedMore: data holds only a prefix of a record (or of a header).
// kBad: the header is implausible or the CRC does not match.
DecodeStatus DecodeRecord(absl::string_view data, LogRecord* record, size_t* consumed);

// Segment file name for a segment whose first record has this LSN:
// 20 decimal digits + ".log", so names sort in LSN order.
std::string SegmentFileName(uint64_t first_lsn);
// Parses a segment file name; false if name is not one.
bool ParseSegmentFileName(absl::string_view name, uint64_t* first_lsn);

}  // namespace mailrepl

#endif  // MAILREPL_STORE_LOG_FORMAT_H_
