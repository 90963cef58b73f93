// libFuzzer target for the salvage-file reader (store/salvage_file.h:
// ParseSalvageFile, what ReadSalvageFile runs over the file's bytes).
// Built and run by scripts/fuzz.sh.
//
// Input: one control byte, then the bytes of a salvage file.
//   bit 0: repair the CRC of each entry (walking the declared lengths), so
//          that mutations reach the header/message/trailer logic; clear:
//          the framing itself.
//   bit 1: first make every message entry's GUID the SHA-1 of its body
//          (re-encoding it), so that mutations get past that check too.
// A custom mutator (disk_fuzz.h) mutates decoded entries and re-encodes
// them with valid CRCs.
//
// Invariants: a refused file is kDataLoss naming the file and an offset
// inside it; a file that reads has as many messages as its trailer says,
// each hashing to its GUID, and written again the way WriteSalvageFile
// writes it, it reads back the same.
//
// Seeds: test/fuzz/corpus/salvage_fuzzer/, made by the project's own
// writers (CollectSalvage, WriteSalvageFile): build-fuzz/bin/make_disk_seeds
// test/fuzz/corpus (test/fuzz/make_disk_seeds.cc; flock /tmp/mr-build.lock
// cmake --build build-fuzz --target make_disk_seeds).
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "proto/salvage.pb.h"
#include "store/log_format.h"
#include "store/salvage_file.h"
#include "store/spool.h"
#include "test/fuzz/disk_fuzz.h"

namespace mailrepl {
namespace {

using fuzz::Check;

constexpr char kName[] = "/fuzz/00000000000000000001-00000000000000000002.salvage";

// Re-encodes every message entry whose payload parses with GUID =
// SHA-1(body); stops at the first entry that does not decode.
std::string FixGuids(absl::string_view in) {
  std::string out;
  absl::string_view rest = in;
  while (!rest.empty()) {
    LogRecord r;
    size_t consumed = 0;
    if (DecodeRecord(rest, &r, &consumed) != DecodeStatus::kOk) break;
    salvagepb::SalvageMessage m;
    if (r.type == RecordType::kSalvageMessage && m.ParseFromString(r.payload)) {
      m.set_guid(Sha1(m.body()));
      r.payload = m.SerializeAsString();
    }
    EncodeRecord(r, &out);
    rest.remove_prefix(consumed);
  }
  out.append(rest.data(), rest.size());
  return out;
}

// As WriteSalvageFile encodes a set.
std::string Encode(const SalvageSet& set) {
  std::string data;
  auto add = [&](RecordType type, const google::protobuf::MessageLite& m) {
    LogRecord r;
    r.type = type;
    r.payload = m.SerializeAsString();
    EncodeRecord(r, &data);
  };
  add(RecordType::kSalvageHeader, set.header);
  for (const auto& m : set.messages) add(RecordType::kSalvageMessage, m);
  salvagepb::SalvageTrailer t;
  t.set_messages(static_cast<uint32_t>(set.messages.size()));
  add(RecordType::kSalvageTrailer, t);
  return data;
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
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((control & 1) != 0) fuzz::RepairRecordCrcs(&bytes);
  if ((control & 2) != 0) bytes = FixGuids(bytes);

  absl::StatusOr<SalvageSet> set = ParseSalvageFile(bytes, kName);
  if (!set.ok()) {
    const absl::Status& s = set.status();
    Check(s.code() == absl::StatusCode::kDataLoss, "a bad salvage file is kDataLoss");
    const std::string prefix = std::string("salvage file ") + kName + " at offset ";
    Check(absl::StartsWith(s.message(), prefix), "a refusal names the file and the offset");
    const absl::string_view digits = s.message().substr(prefix.size());
    uint64_t offset = 0;
    Check(absl::SimpleAtoi(digits.substr(0, digits.find(':')), &offset) && offset <= bytes.size(),
          "the offset named is inside the file");
    return 0;
  }
  uint32_t trailer = 0;
  {
    // The last entry is the trailer, and it ends the file.
    absl::string_view rest = bytes;
    LogRecord r, last;
    size_t consumed = 0;
    while (!rest.empty()) {
      Check(DecodeRecord(rest, &r, &consumed) == DecodeStatus::kOk, "a file read is all entries");
      rest.remove_prefix(consumed);
      last = r;
    }
    salvagepb::SalvageTrailer t;
    Check(last.type == RecordType::kSalvageTrailer && t.ParseFromString(last.payload),
          "a file read ends with its trailer");
    trailer = t.messages();
  }
  Check(set->messages.size() == trailer, "a file read holds the messages its trailer counts");
  for (const auto& m : set->messages) {
    Check(Sha1(m.body()) == m.guid(), "every message read hashes to its GUID");
  }
  absl::StatusOr<SalvageSet> again = ParseSalvageFile(Encode(*set), kName);
  Check(again.ok(), "a set read, written again, reads");
  Check(again->header.SerializeAsString() == set->header.SerializeAsString() &&
            again->messages.size() == set->messages.size(),
        "a set read, written again, reads the same");
  for (size_t i = 0; i < set->messages.size(); ++i) {
    Check(again->messages[i].SerializeAsString() == set->messages[i].SerializeAsString(),
          "a set read, written again, reads the same messages");
  }
  return 0;
}
