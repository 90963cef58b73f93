// libFuzzer target for the change-log record codec (store/log_format.h:
// header, CRC, payload) and the decoding of each record's payload into its
// typed form (proto/log.proto) as the index's applier does it, and, with a
// control bit, the applier itself (Index::Apply on an in-memory index, as
// a replica applies replicated records). Built and run by scripts/fuzz.sh.
//
// Input: one control byte, then a stream of encoded records.
//   bit 0: repair the CRC of each record (walking the declared lengths),
//          so that mutations reach the payload decoding and the applier
//          instead of stopping at the checksum; clear: the framing itself.
//   bit 1: apply the records that decode to a fresh in-memory index.
//   bit 2: ... with quarantine_misfits (a replica's apply).
// A custom mutator (disk_fuzz.h) also mutates decoded payload fields and
// headers and re-encodes with valid CRCs.
//
// Invariants: a record that decodes re-encodes to exactly its bytes, and
// every shorter prefix of it needs more bytes; kNeedMore and kBad are what
// the header says; a payload that parses re-serializes stably and names
// the mailbox RecordMailboxId gives; Apply either succeeds, leaving the
// index at the last replicated LSN, or fails with a message and leaves it
// as it was; the index stays consistent (digest = its rows).
//
// Seeds: test/fuzz/corpus/log_record_fuzzer/, made by the project's own
// writers: build-fuzz/bin/make_disk_seeds test/fuzz/corpus (test/fuzz/
// make_disk_seeds.cc; flock /tmp/mr-build.lock cmake --build build-fuzz
// --target make_disk_seeds).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "proto/log.pb.h"
#include "store/index.h"
#include "store/log_format.h"
#include "test/fuzz/disk_fuzz.h"

namespace mailrepl {
namespace {

using fuzz::Check;

// The payload as its type's message, as Index::ApplyOne parses it; checks
// that a payload that parses re-serializes stably and that RecordMailboxId
// agrees with it.
void DecodePayload(const LogRecord& r) {
  std::unique_ptr<google::protobuf::Message> m = fuzz::PayloadMessage(r.type);
  Check(m != nullptr, "every record type that decodes has a payload message");
  const bool parsed = m->ParseFromString(r.payload);
  std::string mailbox_id;
  if (parsed) {
    const std::string once = m->SerializeAsString();
    std::unique_ptr<google::protobuf::Message> again = fuzz::PayloadMessage(r.type);
    Check(again->ParseFromString(once), "a serialized payload parses");
    Check(again->SerializeAsString() == once, "a payload re-serializes stably");
    const auto* field = m->GetDescriptor()->FindFieldByName("mailbox_id");
    if (field != nullptr && r.type != RecordType::kSnapshotMessage &&
        r.type != RecordType::kSnapshotMailbox) {
      mailbox_id = m->GetReflection()->GetString(*m, field);
    }
  }
  Check(RecordMailboxId(r) == mailbox_id, "RecordMailboxId names the payload's mailbox");
}

void Apply(const std::vector<LogRecord>& records, bool quarantine) {
  auto index = Index::Open(":memory:");
  Check(index.ok(), "an in-memory index opens");
  Index& ix = **index;
  absl::Status s = ix.Apply(records, quarantine);
  if (!s.ok()) {
    Check(!s.message().empty(), "a refused batch says why");
    Check(ix.applied_lsn() == 0 && ix.applied_local() == 0, "a refused batch applies nothing");
    Check(ix.mailboxes().empty() && ix.quota_limits().empty() && ix.epoch_history().empty(),
          "a refused batch leaves no state");
    Check(ix.slot_digest() == Digest{}, "a refused batch leaves the digest");
  } else {
    uint64_t last = 0;
    for (const LogRecord& r : records) {
      if (!IsLocalRecordType(r.type)) last = r.lsn;
    }
    Check(ix.applied_lsn() == last, "an applied batch leaves the index at its last LSN");
  }
  fuzz::CheckIndexConsistent(ix);
}

}  // namespace
}  // namespace mailrepl

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  return mailrepl::fuzz::MutateRecords(data, size, max_size, seed);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mailrepl;
  if (size == 0) return 0;
  const uint8_t control = data[0];
  std::string stream(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((control & 1) != 0) fuzz::RepairRecordCrcs(&stream);
  std::vector<LogRecord> records;
  absl::string_view rest = stream;
  while (!rest.empty()) {
    LogRecord r;
    size_t consumed = 0;
    const DecodeStatus st = DecodeRecord(rest, &r, &consumed);
    if (rest.size() < kRecordHeaderSize) {
      Check(st == DecodeStatus::kNeedMore, "a partial header needs more");
      break;
    }
    const uint32_t length = fuzz::GetFixed32(rest, 4);
    const uint8_t type = static_cast<uint8_t>(rest[24]);
    const bool known = IsLogRecordType(type) || IsSnapshotEntryType(type) ||
                       IsSalvageEntryType(type);
    if (length > kMaxRecordPayload || !known) {
      Check(st == DecodeStatus::kBad, "an implausible header is bad");
      break;
    }
    if (rest.size() < kRecordHeaderSize + length) {
      Check(st == DecodeStatus::kNeedMore, "a record cut short needs more");
      break;
    }
    const uint32_t crc = crc32c::Extend(0, rest.data() + 4, kRecordHeaderSize - 4 + length);
    if (crc32c::Mask(crc) != fuzz::GetFixed32(rest, 0)) {
      Check(st == DecodeStatus::kBad, "a CRC mismatch is bad");
      break;
    }
    Check(st == DecodeStatus::kOk, "a whole record with its CRC decodes");
    Check(consumed == kRecordHeaderSize + r.payload.size() && consumed <= rest.size(),
          "a record consumes its header and payload, within the input");
    Check(static_cast<uint8_t>(r.type) == type, "the type is the header's");
    std::string again;
    EncodeRecord(r, &again);
    Check(again == rest.substr(0, consumed), "a decoded record re-encodes to its bytes");
    LogRecord shorter;
    size_t unused = 0;
    Check(DecodeRecord(rest.substr(0, consumed - 1), &shorter, &unused) == DecodeStatus::kNeedMore,
          "a record cut by one byte needs more");
    DecodePayload(r);
    records.push_back(std::move(r));
    rest.remove_prefix(consumed);
  }
  if ((control & 2) != 0 && !records.empty()) Apply(records, (control & 4) != 0);
  return 0;
}
