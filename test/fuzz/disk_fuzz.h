// Shared by the fuzzers of the on-disk decoders (log_record_fuzzer,
// log_segment_fuzzer, snapshot_fuzzer, salvage_fuzzer, pack_fuzzer):
// invariant checks, CRC repair, a structure-aware mutator for inputs made
// of change-log-framed records, an index consistency check, and scratch
// space on tmpfs. Seeds: test/fuzz/make_disk_seeds.cc.
#ifndef MAILREPL_TEST_FUZZ_DISK_FUZZ_H_
#define MAILREPL_TEST_FUZZ_DISK_FUZZ_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "store/index.h"
#include "store/log_format.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace mailrepl::fuzz {

// Aborts (a crash libFuzzer keeps) when an invariant does not hold.
void Check(bool condition, const char* what);

uint32_t GetFixed32(absl::string_view s, size_t pos);
uint64_t GetFixed64(absl::string_view s, size_t pos);
void PutFixed32(std::string* s, size_t pos, uint32_t v);

// Whether the 25 bytes at the start of `at` are a plausible record header:
// a known type and a length within kMaxRecordPayload that fits in `at`.
bool PlausibleRecord(absl::string_view at, size_t* length);

// Rewrites the CRC of each complete record of stream from `from`, walking
// the declared lengths; stops at the first implausible header. Returns
// where it stopped.
size_t RepairRecordCrcs(std::string* stream, size_t from = 0);

// Splits bytes at every occurrence of sep (sep itself dropped).
std::vector<std::string> Split(absl::string_view bytes, absl::string_view sep);

// A new, empty message of the type a record of this type carries
// (proto/log.proto, proto/salvage.proto); nullptr for an unknown type.
std::unique_ptr<google::protobuf::Message> PayloadMessage(RecordType type);

// The structure-aware half of the mutators of the record-framed fuzzers.
// data[0] is the control byte (kept); the rest holds records, perhaps
// with other bytes between them (kept as they are). Picks a record and
// changes its decoded payload (a field: a number, a string borrowed from
// another record, a GUID made the SHA-1 of its body, ...) or its header
// (LSN, epoch, type), or drops, duplicates or swaps records, and re-encodes
// every record it found with a valid CRC. Falls back to LLVMFuzzerMutate
// (which it also uses a third of the time).
size_t MutateRecords(uint8_t* data, size_t size, size_t max_size, unsigned seed);

// An index's state is consistent: its in-memory slot digest is what the
// rows in SQLite sum to (docs/formats.md "Digests"), each mailbox's
// counters match its message rows, and no message row names a mailbox
// the index does not have.
void CheckIndexConsistent(Index& index);

// A directory of this process on tmpfs (/dev/shm, else $TMPDIR or /tmp),
// removed at exit.
const std::string& ScratchDir();
// Removes everything under dir (not dir itself).
void ClearDir(const std::string& dir);

}  // namespace mailrepl::fuzz

#endif  // MAILREPL_TEST_FUZZ_DISK_FUZZ_H_
