#include "test/fuzz/disk_fuzz.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <random>

#include "absl/status/status.h"
#include "common/crc32c.h"
#include "google/protobuf/stubs/logging.h"
#include "proto/log.pb.h"
#include "proto/salvage.pb.h"
#include "store/digest.h"
#include "store/spool.h"

namespace mailrepl::fuzz {
namespace {

// Protobuf logs every string field that is not UTF-8 it parses: mutated
// inputs are full of them.
const bool protobuf_quiet = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();

}  // namespace

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

uint32_t GetFixed32(absl::string_view s, size_t pos) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    v |= static_cast<uint32_t>(static_cast<uint8_t>(s[pos + i])) << (8 * i);
  }
  return v;
}

uint64_t GetFixed64(absl::string_view s, size_t pos) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(s[pos + i])) << (8 * i);
  }
  return v;
}

void PutFixed32(std::string* s, size_t pos, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*s)[pos + i] = static_cast<char>(v >> (8 * i));
}

bool PlausibleRecord(absl::string_view at, size_t* length) {
  if (at.size() < kRecordHeaderSize) return false;
  const uint32_t len = GetFixed32(at, 4);
  const uint8_t type = static_cast<uint8_t>(at[24]);
  if (!(IsLogRecordType(type) || IsSnapshotEntryType(type) || IsSalvageEntryType(type))) {
    return false;
  }
  if (len > kMaxRecordPayload || len > at.size() - kRecordHeaderSize) return false;
  *length = len;
  return true;
}

size_t RepairRecordCrcs(std::string* stream, size_t from) {
  size_t pos = from;
  size_t length = 0;
  while (pos <= stream->size() &&
         PlausibleRecord(absl::string_view(*stream).substr(pos), &length)) {
    const uint32_t crc =
        crc32c::Extend(0, stream->data() + pos + 4, kRecordHeaderSize - 4 + length);
    PutFixed32(stream, pos, crc32c::Mask(crc));
    pos += kRecordHeaderSize + length;
  }
  return pos;
}

std::vector<std::string> Split(absl::string_view bytes, absl::string_view sep) {
  std::vector<std::string> out;
  for (;;) {
    const size_t at = bytes.find(sep);
    if (at == absl::string_view::npos) break;
    out.emplace_back(bytes.substr(0, at));
    bytes.remove_prefix(at + sep.size());
  }
  out.emplace_back(bytes);
  return out;
}

std::unique_ptr<google::protobuf::Message> PayloadMessage(RecordType type) {
  switch (type) {
    case RecordType::kCreateMailbox: return std::make_unique<logpb::CreateMailbox>();
    case RecordType::kRenameMailbox: return std::make_unique<logpb::RenameMailbox>();
    case RecordType::kDeleteMailbox: return std::make_unique<logpb::DeleteMailbox>();
    case RecordType::kAppend: return std::make_unique<logpb::Append>();
    case RecordType::kSetFlags: return std::make_unique<logpb::SetFlags>();
    case RecordType::kExpunge: return std::make_unique<logpb::Expunge>();
    case RecordType::kSetQuota: return std::make_unique<logpb::SetQuota>();
    case RecordType::kBeginEpoch: return std::make_unique<logpb::BeginEpoch>();
    case RecordType::kAdminNote: return std::make_unique<logpb::AdminNote>();
    case RecordType::kRepairMailbox: return std::make_unique<logpb::RepairMailbox>();
    case RecordType::kSnapshotHeader: return std::make_unique<logpb::SnapshotHeader>();
    case RecordType::kSnapshotMailbox: return std::make_unique<logpb::SnapshotMailbox>();
    case RecordType::kSnapshotMessage: return std::make_unique<logpb::SnapshotMessage>();
    case RecordType::kSnapshotBody: return std::make_unique<logpb::SnapshotBody>();
    case RecordType::kSnapshotQuota: return std::make_unique<logpb::SnapshotQuota>();
    case RecordType::kSnapshotTrailer: return std::make_unique<logpb::SnapshotTrailer>();
    case RecordType::kSalvageHeader: return std::make_unique<salvagepb::SalvageHeader>();
    case RecordType::kSalvageMessage: return std::make_unique<salvagepb::SalvageMessage>();
    case RecordType::kSalvageTrailer: return std::make_unique<salvagepb::SalvageTrailer>();
  }
  return nullptr;
}

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using Rng = std::minstd_rand;

// Values seen in the input, to be borrowed by other records: mailbox ids
// and names, GUIDs, UIDs, LSNs, epochs.
struct Pool {
  std::vector<std::string> strings;
  std::vector<uint64_t> numbers;
};

void Collect(const Message& m, Pool* pool, int depth) {
  if (depth > 3) return;
  const Descriptor* d = m.GetDescriptor();
  const Reflection* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    const int n = f->is_repeated() ? r->FieldSize(m, f) : 1;
    for (int k = 0; k < n && k < 8; ++k) {
      const bool rep = f->is_repeated();
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_STRING: {
          std::string s = rep ? r->GetRepeatedString(m, f, k) : r->GetString(m, f);
          if (!s.empty() && s.size() <= 256) pool->strings.push_back(std::move(s));
          break;
        }
        case FieldDescriptor::CPPTYPE_UINT32:
          pool->numbers.push_back(rep ? r->GetRepeatedUInt32(m, f, k) : r->GetUInt32(m, f));
          break;
        case FieldDescriptor::CPPTYPE_UINT64:
          pool->numbers.push_back(rep ? r->GetRepeatedUInt64(m, f, k) : r->GetUInt64(m, f));
          break;
        case FieldDescriptor::CPPTYPE_INT64:
          pool->numbers.push_back(
              static_cast<uint64_t>(rep ? r->GetRepeatedInt64(m, f, k) : r->GetInt64(m, f)));
          break;
        case FieldDescriptor::CPPTYPE_MESSAGE:
          Collect(rep ? r->GetRepeatedMessage(m, f, k) : r->GetMessage(m, f), pool, depth + 1);
          break;
        default:
          break;
      }
    }
  }
}

uint64_t Number(uint64_t current, uint64_t max, Rng& rng, const Pool& pool) {
  uint64_t v = 0;
  switch (rng() % 8) {
    case 0: v = 0; break;
    case 1: v = 1; break;
    case 2: v = current + 1; break;
    case 3: v = current - 1; break;
    case 4: v = max; break;
    case 5: v = pool.numbers.empty() ? current : pool.numbers[rng() % pool.numbers.size()]; break;
    case 6: v = (pool.numbers.empty() ? current : pool.numbers[rng() % pool.numbers.size()]) + 1;
      break;
    default: v = (static_cast<uint64_t>(rng()) << 31) ^ rng(); break;
  }
  return v & max;
}

std::string MutateString(std::string s, Rng& rng, const Pool& pool) {
  switch (rng() % 5) {
    case 0:
      if (!pool.strings.empty()) return pool.strings[rng() % pool.strings.size()];
      return s;
    case 1:
      return std::string();
    case 2:
      return "user/" + std::to_string(rng() % 4) + (rng() % 2 ? "/Sub" : "");
    default: {
      if (s.empty()) s = "x";
      const size_t old = std::min<size_t>(s.size(), 4096);
      s.resize(old + 32);
      s.resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(s.data()), old, s.size()));
      return s;
    }
  }
}

void MutateMessage(Message* m, Rng& rng, const Pool& pool, int depth);

// Sets element k of a repeated field (or the field when k < 0).
void MutateScalar(Message* m, const FieldDescriptor* f, int k, Rng& rng, const Pool& pool,
                  int depth) {
  const Reflection* r = m->GetReflection();
  const bool rep = k >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: {
      const int32_t v = static_cast<int32_t>(Number(
          static_cast<uint32_t>(rep ? r->GetRepeatedInt32(*m, f, k) : r->GetInt32(*m, f)),
          0xffffffffu, rng, pool));
      rep ? r->SetRepeatedInt32(m, f, k, v) : r->SetInt32(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      const uint32_t v = static_cast<uint32_t>(
          Number(rep ? r->GetRepeatedUInt32(*m, f, k) : r->GetUInt32(*m, f), 0xffffffffu, rng,
                 pool));
      rep ? r->SetRepeatedUInt32(m, f, k, v) : r->SetUInt32(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      const int64_t v = static_cast<int64_t>(Number(
          static_cast<uint64_t>(rep ? r->GetRepeatedInt64(*m, f, k) : r->GetInt64(*m, f)),
          ~uint64_t{0}, rng, pool));
      rep ? r->SetRepeatedInt64(m, f, k, v) : r->SetInt64(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      const uint64_t v = Number(rep ? r->GetRepeatedUInt64(*m, f, k) : r->GetUInt64(*m, f),
                                ~uint64_t{0}, rng, pool);
      rep ? r->SetRepeatedUInt64(m, f, k, v) : r->SetUInt64(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      const bool v = !(rep ? r->GetRepeatedBool(*m, f, k) : r->GetBool(*m, f));
      rep ? r->SetRepeatedBool(m, f, k, v) : r->SetBool(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string v = MutateString(rep ? r->GetRepeatedString(*m, f, k) : r->GetString(*m, f),
                                   rng, pool);
      rep ? r->SetRepeatedString(m, f, k, std::move(v)) : r->SetString(m, f, std::move(v));
      break;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      if (depth < 3) {
        MutateMessage(rep ? r->MutableRepeatedMessage(m, f, k) : r->MutableMessage(m, f), rng,
                      pool, depth + 1);
      }
      break;
    default:
      break;
  }
}

void MutateMessage(Message* m, Rng& rng, const Pool& pool, int depth) {
  const Descriptor* d = m->GetDescriptor();
  const Reflection* r = m->GetReflection();
  if (d->field_count() == 0) return;
  const FieldDescriptor* f = d->field(static_cast<int>(rng() % d->field_count()));
  if (!f->is_repeated()) {
    MutateScalar(m, f, -1, rng, pool, depth);
    return;
  }
  const int n = r->FieldSize(*m, f);
  switch (rng() % 4) {
    case 0: {  // a new element, then changed
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_UINT32: r->AddUInt32(m, f, 0); break;
        case FieldDescriptor::CPPTYPE_UINT64: r->AddUInt64(m, f, 0); break;
        case FieldDescriptor::CPPTYPE_INT64: r->AddInt64(m, f, 0); break;
        case FieldDescriptor::CPPTYPE_INT32: r->AddInt32(m, f, 0); break;
        case FieldDescriptor::CPPTYPE_BOOL: r->AddBool(m, f, false); break;
        case FieldDescriptor::CPPTYPE_STRING: r->AddString(m, f, ""); break;
        case FieldDescriptor::CPPTYPE_MESSAGE: r->AddMessage(m, f); break;
        default: return;
      }
      MutateScalar(m, f, n, rng, pool, depth);
      break;
    }
    case 1:
      if (n > 0) r->RemoveLast(m, f);
      break;
    case 2:
      if (n > 1) r->SwapElements(m, f, static_cast<int>(rng() % n), static_cast<int>(rng() % n));
      break;
    default:
      if (n > 0) MutateScalar(m, f, static_cast<int>(rng() % n), rng, pool, depth);
      break;
  }
}

// Where a message has both, makes `guid` the SHA-1 of `body` (the check
// every reader of bodies makes).
void FixGuid(Message* m) {
  const Descriptor* d = m->GetDescriptor();
  const FieldDescriptor* guid = d->FindFieldByName("guid");
  const FieldDescriptor* body = d->FindFieldByName("body");
  if (guid == nullptr || body == nullptr || guid->is_repeated() || body->is_repeated()) return;
  const Reflection* r = m->GetReflection();
  r->SetString(m, guid, Sha1(r->GetString(*m, body)));
}

void MutatePayloadBytes(std::string* payload) {
  if (payload->empty()) payload->push_back('\0');
  const size_t old = payload->size();
  payload->resize(old + 16);
  payload->resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(payload->data()), old,
                                   payload->size()));
}

struct Span {
  std::string gap;  // bytes before the record, kept as they are
  LogRecord record;
};

constexpr uint8_t kTypes[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 64, 65, 66, 67, 68, 69, 80, 81, 82};

}  // namespace

size_t MutateRecords(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  Rng rng(seed);
  if (size < 2 || rng() % 3 == 0) return LLVMFuzzerMutate(data, size, max_size);
  const absl::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  std::vector<Span> spans;
  std::string gap;
  size_t pos = 0;
  while (pos < in.size()) {
    size_t length = 0;
    if (PlausibleRecord(in.substr(pos), &length)) {
      Span s;
      s.gap = std::move(gap);
      gap.clear();
      s.record.lsn = GetFixed64(in, pos + 8);
      s.record.epoch = GetFixed64(in, pos + 16);
      s.record.type = static_cast<RecordType>(static_cast<uint8_t>(in[pos + 24]));
      s.record.payload.assign(in.data() + pos + kRecordHeaderSize, length);
      spans.push_back(std::move(s));
      pos += kRecordHeaderSize + length;
    } else {
      gap.push_back(in[pos]);
      ++pos;
    }
  }
  if (spans.empty()) return LLVMFuzzerMutate(data, size, max_size);
  Pool pool;
  for (const Span& s : spans) {
    pool.numbers.push_back(s.record.lsn);
    pool.numbers.push_back(s.record.epoch);
    if (auto m = PayloadMessage(s.record.type); m && m->ParseFromString(s.record.payload)) {
      Collect(*m, &pool, 0);
    }
  }
  const size_t i = rng() % spans.size();
  LogRecord& rec = spans[i].record;
  switch (rng() % 8) {
    case 0:
    case 1:
    case 2: {  // a field of the payload
      auto m = PayloadMessage(rec.type);
      if (m && m->ParseFromString(rec.payload)) {
        const int times = 1 + static_cast<int>(rng() % 3);
        for (int t = 0; t < times; ++t) MutateMessage(m.get(), rng, pool, 0);
        if (rng() % 2 == 0) FixGuid(m.get());
        rec.payload = m->SerializeAsString();
      } else {
        MutatePayloadBytes(&rec.payload);
      }
      break;
    }
    case 3: {  // the header
      switch (rng() % 4) {
        case 0: rec.lsn = Number(rec.lsn, ~uint64_t{0}, rng, pool); break;
        case 1: rec.epoch = Number(rec.epoch, ~uint64_t{0}, rng, pool); break;
        case 2: rec.type = static_cast<RecordType>(kTypes[rng() % sizeof kTypes]); break;
        default:  // renumber from here on, densely
          for (size_t k = i + 1; k < spans.size(); ++k) {
            spans[k].record.lsn = IsLocalRecordType(spans[k].record.type)
                                      ? spans[k - 1].record.lsn
                                      : spans[k - 1].record.lsn + 1;
          }
          break;
      }
      break;
    }
    case 4:  // duplicate
      spans.insert(spans.begin() + static_cast<std::ptrdiff_t>(i) + 1, Span{"", rec});
      break;
    case 5:  // drop
      spans.erase(spans.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    case 6: {  // swap
      const size_t j = rng() % spans.size();
      std::swap(spans[i].record, spans[j].record);
      break;
    }
    default: {  // bytes of the payload, CRC kept valid
        MutatePayloadBytes(&rec.payload);
      break;
    }
  }
  std::string out(1, static_cast<char>(data[0]));
  for (const Span& s : spans) {
    out.append(s.gap);
    EncodeRecord(s.record, &out);
  }
  out.append(gap);
  if (out.size() > max_size) return LLVMFuzzerMutate(data, size, max_size);
  std::copy(out.begin(), out.end(), data);
  return out.size();
}

void CheckIndexConsistent(Index& index) {
  struct Rows {
    Digest sum;
    uint64_t messages = 0;
    uint64_t bytes = 0;
  };
  std::map<std::string, Rows> rows;
  absl::Status s = index.ForEachMessage([&](const std::string& id, const MessageInfo& m) {
    Check(index.FindMailbox(id) != nullptr, "every message row is of a mailbox the index has");
    Rows& r = rows[id];
    r.sum.Add(MessageDigest(m.uid, m.guid, m.flags, m.modseq, m.expunged));
    if (!m.expunged) {
      r.messages += 1;
      r.bytes += m.size;
    }
    return absl::OkStatus();
  });
  Check(s.ok(), "the index's message rows can be read");
  Digest slot;
  for (const auto& [id, mb] : index.mailboxes()) {
    Check(mb.id == id, "a mailbox is kept under its id");
    const Rows& r = rows[id];
    Check(mb.message_sum == r.sum, "a mailbox's message digest is the sum of its rows");
    Check(mb.messages == r.messages, "a mailbox counts its rows that are not expunged");
    Check(mb.bytes == r.bytes, "a mailbox sums the sizes of its rows that are not expunged");
    Check(index.FindMailboxByName(mb.name) == &mb, "a mailbox is found by its name");
    slot.Add(MailboxSlotDigest(id, mb.MailboxDigest()));
  }
  for (const auto& [user, q] : index.quota_limits()) {
    slot.Add(QuotaDigest(user, q.storage_limit, q.message_limit));
  }
  Check(slot == index.slot_digest(), "the slot digest is the sum of the index's rows");
}

namespace {
std::string* scratch = nullptr;
void RemoveScratch() {
  std::error_code ec;
  if (scratch != nullptr) std::filesystem::remove_all(*scratch, ec);
}
}  // namespace

const std::string& ScratchDir() {
  if (scratch == nullptr) {
    const char* base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/mailrepl-fuzz-XXXXXX";
    Check(::mkdtemp(tmpl.data()) != nullptr, "scratch directory made");
    scratch = new std::string(tmpl);
    std::atexit(RemoveScratch);
  }
  return *scratch;
}

void ClearDir(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::filesystem::remove_all(e.path(), ec);
  }
}

}  // namespace mailrepl::fuzz
