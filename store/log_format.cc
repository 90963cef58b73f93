#include "store/log_format.h"

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "common/crc32c.h"

namespace mailrepl {
namespace {

void PutFixed32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
void PutFixed64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
uint32_t GetFixed32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}
uint64_t GetFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

}  // namespace

bool IsLogRecordType(uint8_t t) { return t >= 1 && t <= 10; }
bool IsLocalRecordType(RecordType t) {
  return t == RecordType::kAdminNote || t == RecordType::kRepairMailbox;
}
bool IsSnapshotEntryType(uint8_t t) { return t >= 64 && t <= 69; }

bool IsSalvageEntryType(uint8_t t) { return t >= 80 && t <= 82; }

absl::string_view RecordTypeName(RecordType type) {
  switch (type) {
    case RecordType::kCreateMailbox: return "CREATE";
    case RecordType::kRenameMailbox: return "RENAME";
    case RecordType::kDeleteMailbox: return "DELETE";
    case RecordType::kAppend: return "APPEND";
    case RecordType::kSetFlags: return "FLAGS";
    case RecordType::kExpunge: return "EXPUNGE";
    case RecordType::kSetQuota: return "QUOTA";
    case RecordType::kBeginEpoch: return "EPOCH";
    case RecordType::kAdminNote: return "ADMIN";
    case RecordType::kRepairMailbox: return "REPAIR";
    case RecordType::kSnapshotHeader: return "SNAPSHOT-HEADER";
    case RecordType::kSnapshotMailbox: return "SNAPSHOT-MAILBOX";
    case RecordType::kSnapshotMessage: return "SNAPSHOT-MESSAGE";
    case RecordType::kSnapshotBody: return "SNAPSHOT-BODY";
    case RecordType::kSnapshotQuota: return "SNAPSHOT-QUOTA";
    case RecordType::kSnapshotTrailer: return "SNAPSHOT-TRAILER";
    case RecordType::kSalvageHeader: return "SALVAGE-HEADER";
    case RecordType::kSalvageMessage: return "SALVAGE-MESSAGE";
    case RecordType::kSalvageTrailer: return "SALVAGE-TRAILER";
  }
  return "UNKNOWN";
}

void EncodeRecord(const LogRecord& record, std::string* out) {
  size_t start = out->size();
  out->resize(start + kRecordHeaderSize);
  char* h = out->data() + start;
  PutFixed32(h + 4, static_cast<uint32_t>(record.payload.size()));
  PutFixed64(h + 8, record.lsn);
  PutFixed64(h + 16, record.epoch);
  h[24] = static_cast<char>(record.type);
  out->append(record.payload);
  h = out->data() + start;  // append may have moved the buffer
  uint32_t crc = crc32c::Extend(0, h + 4, out->size() - start - 4);
  PutFixed32(h, crc32c::Mask(crc));
}

DecodeStatus DecodeRecord(absl::string_view data, LogRecord* record, size_t* consumed) {
  if (data.size() < kRecordHeaderSize) return DecodeStatus::kNeedMore;
  const char* h = data.data();
  uint32_t length = GetFixed32(h + 4);
  uint8_t type = static_cast<uint8_t>(h[24]);
  if (length > kMaxRecordPayload || !(IsLogRecordType(type) || IsSnapshotEntryType(type) || IsSalvageEntryType(type))) {
    return DecodeStatus::kBad;
  }
  if (data.size() < kRecordHeaderSize + length) return DecodeStatus::kNeedMore;
  uint32_t expected = crc32c::Unmask(GetFixed32(h));
  uint32_t actual = crc32c::Extend(0, h + 4, kRecordHeaderSize - 4 + length);
  if (expected != actual) return DecodeStatus::kBad;
  record->lsn = GetFixed64(h + 8);
  record->epoch = GetFixed64(h + 16);
  record->type = static_cast<RecordType>(type);
  record->payload.assign(h + kRecordHeaderSize, length);
  *consumed = kRecordHeaderSize + length;
  return DecodeStatus::kOk;
}

std::string SegmentFileName(uint64_t first_lsn) {
  return absl::StrFormat("%020u.log", first_lsn);
}

bool ParseSegmentFileName(absl::string_view name, uint64_t* first_lsn) {
  if (name.size() != 24 || name.substr(20) != ".log") return false;
  for (char c : name.substr(0, 20)) {
    if (c < '0' || c > '9') return false;
  }
  return absl::SimpleAtoi(name.substr(0, 20), first_lsn);
}

}  // namespace mailrepl
