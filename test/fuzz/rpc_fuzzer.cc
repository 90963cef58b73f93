// libFuzzer target for the request/response services' decoding (rpc/,
// proto/rpc.proto) and the checks that run before any effect: the client
// API's ValidateRequest and write rule (replicad/api_service.cc) and the
// coordinator's argument checks (CheckRequestArguments,
// coordinator/coordinator.h, which each Coordinator call makes before its
// transaction). Nothing here opens a socket, a slot or a database.
//
// Input: the payload of one frame a client sends, an rpcpb::Frame. It is
// framed (EncodeFrame), read back in two pieces by a FrameReader and parsed
// as BasicFramedConnection::DecodeBuffered does (transport/
// framed_connection.cc), then handled as RpcServer does (rpc/rpc_server.cc):
//   - Login: the version, service and challenge-response checks of
//     RpcServer::Login, against a fixed secret and server challenge;
//   - Call: its request bytes go to both services' handlers (ApiService::
//     Handle then Call up to the slot; CoordinatorService::Handle then the
//     Coordinator's checks), and every answer that is an error becomes the
//     Reply frame the server would send;
//   - anything else is refused as RpcServer refuses it.
//
// Invariants:
//   - every Reply the server would send (errors included) survives the
//     trip to the client: framed, read, parsed by the client (proto3
//     strings must be UTF-8), with the same id, code and message;
//   - ValidateRequest and CheckRequestArguments answer OK or
//     kInvalidArgument only; an API error names the field it is about;
//   - what they let through is safe, restated independently: every mailbox
//     name is "user/NAME[/...]" with no "", "." or ".." component, no
//     control character, at most 490 bytes; flags are printable atoms; user
//     names are plain; a write without epoch is refused (kFailedPrecondition)
//     before the slot; a coordinator host name is printable, its slot ids
//     unique and non-zero; a store has 2+ unique slots with its master
//     among them and a known durability; assigned users follow the user-name
//     rule; a salvage names a slot and a non-empty LSN range.
//
// Structure-aware (libprotobuf-mutator is not in Debian): a custom mutator
// parses the input as an rpcpb::Frame and changes one field chosen at
// random through protobuf reflection -- numbers (boundaries, huge values),
// strings (path tricks such as "../", long and multi-byte ones), enums
// (unknown values too), repeated fields (add, remove, change), oneofs
// (switched by setting another member), and, inside a Call, the request it
// carries, decoded as an apipb::Request (even call id) or a
// coordpb::Request (odd), mutated the same way and re-encoded. Bytes that
// do not parse are mutated as bytes (LLVMFuzzerMutate). The cross-over
// merges one field of the other input's message.
//
// Seeds (test/fuzz/corpus/rpc_fuzzer/) were written once with the
// project's own message classes and serializer, by running this fuzzer
// with MAILREPL_FUZZ_WRITE_SEEDS=DIR (WriteSeeds below): a login, one call
// per API operation and per coordinator operation (valid ones and the
// refusals api_service_test and coordinator_test check), other frames.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "coordinator/coordinator.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/stubs/common.h"
#include "google/protobuf/stubs/logging.h"
#include "proto/api.pb.h"
#include "proto/coord.pb.h"
#include "proto/rpc.pb.h"
#include "replicad/api_service.h"
#include "rpc/rpc_server.h"
#include "transport/auth.h"
#include "transport/frame_codec.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace mailrepl::fuzz {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

constexpr char kSecret[] = "fuzzing secret, sixteen bytes or more";
constexpr char kService[] = "api";
const std::string kServerChallenge(transport::kChallengeSize, 'S');

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

// --- the server side ---

// RpcServer's Reply frame for a call's outcome (rpc_server.cc ReplyFrame).
rpcpb::Frame ReplyFrame(uint64_t id, const absl::Status& status) {
  rpcpb::Frame f;
  rpcpb::Reply* r = f.mutable_reply();
  r->set_id(id);
  r->set_code(static_cast<int>(status.code()));
  r->set_message(std::string(status.message()));
  return f;
}

// One frame through the codec and DecodeBuffered's parse; false if refused.
bool ReadFrame(const std::string& payload, size_t cut, rpcpb::Frame* out, std::string* why) {
  std::string wire;
  if (!transport::EncodeFrame(payload, /*compress=*/false, &wire).ok()) {
    *why = "too big";
    return false;
  }
  transport::FrameReader reader(/*allow_compressed=*/false);  // RPC: never compressed
  cut = std::min(cut, wire.size());
  reader.Feed(absl::string_view(wire).substr(0, cut));
  transport::DecodedFrame frame;
  std::string error;
  transport::FrameResult r = reader.Next(&frame, &error);
  if (r == transport::FrameResult::kNeedMore) {
    reader.Feed(absl::string_view(wire).substr(cut));
    r = reader.Next(&frame, &error);
  }
  Check(r == transport::FrameResult::kGood, "a frame we encoded reads back");
  Check(frame.payload == payload, "the payload reads back");
  if (!out->ParseFromString(frame.payload)) {
    *why = "unparsable frame";
    return false;
  }
  if (out->body_case() == rpcpb::Frame::BODY_NOT_SET) {
    *why = "frame of an unknown message type";
    return false;
  }
  return true;
}

// The server sends an error Reply: the client must read it as sent.
void SendReply(uint64_t id, const absl::Status& status) {
  Check(!status.ok(), "only errors are sent here");
  const rpcpb::Frame sent = ReplyFrame(id, status);
  rpcpb::Frame got;
  std::string why;
  if (!ReadFrame(sent.SerializeAsString(), 7, &got, &why)) {
    std::fprintf(stderr, "reply: %s\n", absl::CEscape(status.ToString()).c_str());
    Check(false, "the client parses the server's Reply (its message must be UTF-8)");
  }
  Check(got.has_reply() && got.reply().id() == id &&
            got.reply().code() == static_cast<int>(status.code()) &&
            got.reply().message() == status.message(),
        "the Reply arrives as sent");
}

// RpcServer::Login's checks, on a fixed secret and challenge.
absl::Status CheckLogin(const rpcpb::Login& login) {
  if (login.version_major() != rpc::kRpcVersionMajor) {
    return absl::FailedPreconditionError(
        absl::StrCat("protocol version ", login.version_major(), ".", login.version_minor(),
                     " is not supported; this server speaks ", rpc::kRpcVersionMajor, ".",
                     rpc::kRpcVersionMinor));
  }
  if (login.service() != kService) {
    return absl::InvalidArgumentError(
        absl::StrCat("this port serves '", kService, "', not '", login.service(), "'"));
  }
  if (login.challenge().size() != transport::kChallengeSize ||
      !transport::ResponsesEqual(login.response(),
                                 transport::AuthResponse(kSecret, transport::kClientRole, kService,
                                                         kServerChallenge, login.challenge()))) {
    return absl::UnauthenticatedError(
        "authentication failed: check that both sides use the same secret file");
  }
  return absl::OkStatus();
}

// --- the client API ---

bool Printable(const std::string& s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) return false;
  }
  return true;
}

// What a mailbox name that passed validation must be, restated.
void CheckSafeMailbox(const std::string& name) {
  Check(!name.empty() && name.size() <= 490, "mailbox name 1..490 bytes");
  Check(absl::StartsWith(name, "user/"), "mailbox name under user/");
  Check(!absl::EndsWith(name, "/"), "mailbox name without trailing /");
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    Check(u >= 0x20 && u != 0x7f, "mailbox name without control characters");
  }
  size_t start = 0;
  for (;;) {
    const size_t slash = name.find('/', start);
    const std::string part = name.substr(start, slash == std::string::npos ? slash : slash - start);
    Check(!part.empty() && part != "." && part != "..", "no empty, . or .. component");
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  const std::string user = name.substr(5, name.find('/', 5) - 5);
  Check(!user.empty() && user.size() <= 64, "mailbox owner 1..64 bytes");
}

void CheckSafeFlag(const std::string& flag) {
  Check(!flag.empty() && flag.size() <= 100 && Printable(flag) &&
            flag.find_first_of(" ()[]{}\"%*") == std::string::npos,
        "a flag is a printable atom");
}

void CheckSafeUser(const std::string& user) {
  Check(!user.empty() && user.size() <= 64 && user != "." && user != "..", "user name 1..64");
  for (char c : user) {
    Check((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '-' || c == '_' || c == '@',
          "user name of letters, digits and .-_@");
  }
}

// The field an API error must name, per operation ("" when none).
std::string FieldPrefix(const apipb::Request& r) {
  switch (r.op_case()) {
    case apipb::Request::kCreateMailbox:
      return "create_mailbox.";
    case apipb::Request::kRenameMailbox:
      return "rename_mailbox.";
    case apipb::Request::kDeleteMailbox:
      return "delete_mailbox.";
    case apipb::Request::kListMessages:
      return "list_messages.";
    case apipb::Request::kFetchBody:
      return "fetch_body.";
    case apipb::Request::kSetFlags:
      return "set_flags.";
    case apipb::Request::kExpunge:
      return "expunge.";
    case apipb::Request::kGetQuota:
      return "get_quota.";
    case apipb::Request::kSetQuota:
      return "set_quota.";
    case apipb::Request::kAppend:
      return "append.";
    case apipb::Request::kCheckStore:
      return "check_store.";
    default:
      return "";
  }
}

// ApiService::Handle and Call, up to where the slot would be asked.
void HandleApi(uint64_t id, const std::string& bytes) {
  apipb::Request r;
  if (!r.ParseFromString(bytes)) {
    SendReply(id, absl::InvalidArgumentError("unparsable api request"));
    return;
  }
  const absl::Status valid = api::ValidateRequest(r);
  if (!valid.ok()) {
    Check(valid.code() == absl::StatusCode::kInvalidArgument, "API refusals are kInvalidArgument");
    Check(!valid.message().empty(), "a refusal says why");
    const std::string prefix = FieldPrefix(r);
    Check(absl::StartsWith(valid.message(), prefix), "an API refusal names its field");
    SendReply(id, valid);
    return;
  }
  switch (r.op_case()) {
    case apipb::Request::kCreateMailbox:
      CheckSafeMailbox(r.create_mailbox().name());
      break;
    case apipb::Request::kRenameMailbox:
      CheckSafeMailbox(r.rename_mailbox().from());
      CheckSafeMailbox(r.rename_mailbox().to());
      break;
    case apipb::Request::kDeleteMailbox:
      CheckSafeMailbox(r.delete_mailbox().name());
      break;
    case apipb::Request::kListMessages:
      CheckSafeMailbox(r.list_messages().mailbox());
      break;
    case apipb::Request::kFetchBody:
      CheckSafeMailbox(r.fetch_body().mailbox());
      break;
    case apipb::Request::kSetFlags:
      CheckSafeMailbox(r.set_flags().mailbox());
      Check(apipb::SetFlags::Op_IsValid(r.set_flags().op()), "a known flag operation");
      for (const std::string& f : r.set_flags().flags()) CheckSafeFlag(f);
      break;
    case apipb::Request::kExpunge:
      CheckSafeMailbox(r.expunge().mailbox());
      break;
    case apipb::Request::kGetQuota:
      CheckSafeUser(r.get_quota().user());
      break;
    case apipb::Request::kSetQuota:
      CheckSafeUser(r.set_quota().user());
      break;
    case apipb::Request::kAppend:
      CheckSafeMailbox(r.append().mailbox());
      for (const std::string& f : r.append().flags()) CheckSafeFlag(f);
      Check(!r.append().has_unless_present() || r.append().unless_present().count() >= 1,
            "unless_present counts at least 1");
      break;
    case apipb::Request::kCheckStore:
      // NaN passes too, and VerifySlot reads it as 0, unthrottled.
      Check(!(r.check_store().max_bytes_per_second() < 0), "a rate that is not negative");
      break;
    case apipb::Request::kListMailboxes:
    case apipb::Request::kGetSlot:
      break;
    case apipb::Request::OP_NOT_SET:
      Check(false, "a request without operation passes validation");
  }
  if (api::ApiService::IsWrite(r) && r.epoch() == 0) {
    SendReply(id,
              absl::FailedPreconditionError(
                  "the write carries no epoch (0): every write carries the epoch; ask GetSlot"));
  }
  // Otherwise the slot is asked (not here).
}

// --- the coordinator ---

void CheckCoordinatorUser(const std::string& user) {
  Check(!user.empty() && user.size() <= coord::kMaxUserNameBytes, "coordinator user 1..64");
  for (size_t i = 0; i < user.size(); ++i) {
    const char c = user[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    Check(alnum || (i > 0 && (c == '.' || c == '_' || c == '-')),
          "coordinator user of lower-case letters, digits and ._-");
  }
}

// CoordinatorService::Handle and Dispatch, up to the Coordinator's
// database work.
void HandleCoordinator(uint64_t id, const std::string& bytes) {
  coordpb::Request r;
  if (!r.ParseFromString(bytes)) {
    SendReply(id, absl::InvalidArgumentError(
                      "unparsable coordinator request: client and coordinatord disagree on "
                      "coord.proto"));
    return;
  }
  if (r.op_case() == coordpb::Request::OP_NOT_SET) {
    SendReply(id, absl::InvalidArgumentError(
                      "the coordinator request names no operation (unknown to this "
                      "coordinatord?)"));
    return;
  }
  const absl::Status valid = coord::CheckRequestArguments(r);
  if (!valid.ok()) {
    Check(valid.code() == absl::StatusCode::kInvalidArgument,
          "coordinator refusals before the database are kInvalidArgument");
    Check(!valid.message().empty(), "a refusal says why");
    SendReply(id, valid);
    return;
  }
  switch (r.op_case()) {
    case coordpb::Request::kRegisterHost: {
      const std::string& host = r.register_host().host();
      Check(!host.empty() && host.size() <= 255 && Printable(host) &&
                host.find(' ') == std::string::npos,
            "a host name is printable, without spaces");
      std::set<uint64_t> ids;
      for (const coordpb::SlotInfo& s : r.register_host().slots()) {
        Check(s.slot_id() != 0 && ids.insert(s.slot_id()).second, "slot ids unique, not 0");
        Check(s.host().empty() || s.host() == host, "a host registers its own slots");
      }
      break;
    }
    case coordpb::Request::kLookupUser:
      CheckCoordinatorUser(coord::NormalizeUser(r.lookup_user().user()));
      break;
    case coordpb::Request::kCreateStore: {
      const coordpb::CreateStore& c = r.create_store();
      const std::set<uint64_t> ids(c.slot_ids().begin(), c.slot_ids().end());
      Check(c.slot_ids_size() >= 2 && ids.size() == static_cast<size_t>(c.slot_ids_size()) &&
                !ids.contains(0),
            "a store has 2+ unique non-zero slots");
      Check(c.master_slot_id() == 0 || ids.contains(c.master_slot_id()), "its master is one");
      Check(coordpb::Durability_IsValid(c.durability()), "a known durability");
      break;
    }
    case coordpb::Request::kAssignUsers:
      Check(r.assign_users().users_size() > 0, "users given");
      for (const std::string& u : r.assign_users().users()) CheckCoordinatorUser(u);
      break;
    case coordpb::Request::kSetDurability:
      Check(coordpb::Durability_IsValid(r.set_durability().durability()), "a known durability");
      break;
    case coordpb::Request::kRecordSalvage: {
      const coordpb::RecordSalvage& s = r.record_salvage();
      Check(s.slot_id() != 0 && s.from_lsn() != 0 && s.to_lsn() >= s.from_lsn(),
            "a salvage names a slot and a non-empty LSN range");
      break;
    }
    default:
      break;
  }
}

void Serve(const uint8_t* data, size_t size) {
  const std::string payload(reinterpret_cast<const char*>(data), size);
  rpcpb::Frame frame;
  std::string why;
  if (!ReadFrame(payload, size % 11, &frame, &why)) {
    SendReply(0, absl::InvalidArgumentError(absl::StrCat("bad frame from 127.0.0.1:1: ", why)));
    return;
  }
  switch (frame.body_case()) {
    case rpcpb::Frame::kLogin: {
      const absl::Status s = CheckLogin(frame.login());
      if (!s.ok()) SendReply(0, s);
      break;
    }
    case rpcpb::Frame::kCall: {
      const uint64_t id = frame.call().id();
      HandleApi(id, frame.call().request());
      HandleCoordinator(id, frame.call().request());
      break;
    }
    default:
      SendReply(0, absl::InvalidArgumentError("expected a call frame"));
      break;
  }
}

// --- the structure-aware mutator ---

using Rng = std::mt19937_64;

// Proto3 strings must be UTF-8, or the message does not parse: bytes
// mutated blindly are made ASCII again.
void FixUtf8(std::string* s) {
  if (google::protobuf::internal::IsStructurallyValidUTF8(s->data(), static_cast<int>(s->size()))) {
    return;
  }
  for (char& c : *s) {
    if (static_cast<unsigned char>(c) >= 0x80) c = '?';
  }
}

uint64_t Number(Rng& rng, uint64_t old) {
  switch (rng() % 10) {
    case 0:
      return 0;
    case 1:
      return 1;
    case 2:
      return old + 1;
    case 3:
      return old - 1;
    case 4:
      return ~uint64_t{0};
    case 5:
      return uint64_t{1} << (rng() % 64);
    case 6:
      return (uint64_t{1} << 31) + (rng() % 3) - 1;
    case 7:
      return (uint64_t{1} << 32) + (rng() % 3) - 1;
    case 8:
      return rng() % 100;
    default:
      return rng();
  }
}

std::string Interesting(Rng& rng) {
  static const char* const kStrings[] = {"",
                                         "..",
                                         "../",
                                         ".",
                                         "/",
                                         "user",
                                         "user/",
                                         "user/alice",
                                         "user/alice/Sent",
                                         "user/alice/../bob",
                                         "user/../etc",
                                         "user/./alice",
                                         "user//alice",
                                         "/user/alice",
                                         "user/alice/",
                                         "user/al ice",
                                         "user/alice\x7f",
                                         "user/\t",
                                         "alice",
                                         "Alice+lists@Example.com",
                                         "bob@",
                                         "@",
                                         "-alice",
                                         "a.b_c-d",
                                         "\\Seen",
                                         "\\Deleted",
                                         "$Junk",
                                         "(x)",
                                         "consistent",
                                         "differs",
                                         "repaired",
                                         "unchecked",
                                         "127.0.0.1:2400",
                                         "[::1]:24",
                                         "host1",
                                         "host 1",
                                         "h\xc3\xa9te",
                                         "user/alice/Entw\xc3\xbcrfe",
                                         "\xe6\x97\xa5\xe6\x9c\xac",
                                         "api",
                                         "coordinator",
                                         "%*",
                                         "a=b"};
  const size_t n = sizeof(kStrings) / sizeof(kStrings[0]);
  const size_t which = rng() % (n + 4);
  if (which < n) return kStrings[which];
  static const size_t kLengths[] = {19, 20,  21,  39,  40,  41,  64,  65,  79,  80,
                                    81, 100, 101, 255, 256, 489, 490, 491, 1000};
  const size_t len = kLengths[rng() % (sizeof(kLengths) / sizeof(kLengths[0]))];
  switch (which - n) {
    case 0:
      return std::string(len, 'a');
    case 1:
      return "user/alice/" + std::string(len, 'x');
    case 2: {  // multi-byte characters across every cut
      std::string s = rng() % 2 ? "user/alice/" : "";
      s.append(rng() % 4, 'a');
      while (s.size() < len) s += "\xc3\xa9";
      return s;
    }
    default: {
      std::string s = "user/alice";
      while (s.size() < len) s += "/..";
      return s;
    }
  }
}

std::string MutateString(Rng& rng, std::string s, bool utf8) {
  switch (rng() % 7) {
    case 0:
    case 1:
      s = Interesting(rng);
      break;
    case 2:
      s += Interesting(rng);
      break;
    case 3:
      s.insert(rng() % (s.size() + 1), Interesting(rng));
      break;
    case 4:
      if (!s.empty()) s.erase(rng() % s.size(), 1 + rng() % 8);
      break;
    case 5:
      s += s;
      break;
    default: {
      const size_t max = s.size() * 2 + 16;
      s.resize(max);
      const size_t n = LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(s.data()), max / 2 - 8, max);
      s.resize(n);
      break;
    }
  }
  if (s.size() > 4096) s.resize(4096);
  if (utf8) FixUtf8(&s);
  return s;
}

void MutateMessage(Rng& rng, Message* m, int depth);

// A Call's request, decoded as the service its id picks, mutated inside.
bool MutateRequestBytes(Rng& rng, uint64_t id, std::string* bytes) {
  apipb::Request api;
  coordpb::Request coord;
  Message* inner = id % 2 == 0 ? static_cast<Message*>(&api) : static_cast<Message*>(&coord);
  if (!inner->ParseFromString(*bytes)) return false;
  MutateMessage(rng, inner, 1);
  *bytes = inner->SerializeAsString();
  return true;
}

void MutateSingular(Rng& rng, Message* m, const FieldDescriptor* f, int depth) {
  const Reflection* r = m->GetReflection();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_MESSAGE:
      if (depth > 6 || (r->HasField(*m, f) && rng() % 8 == 0)) {
        r->ClearField(m, f);
      } else {
        MutateMessage(rng, r->MutableMessage(m, f), depth + 1);  // a oneof member: switches
      }
      break;
    case FieldDescriptor::CPPTYPE_INT32:
      r->SetInt32(m, f, static_cast<int32_t>(Number(rng, r->GetInt32(*m, f))));
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      r->SetInt64(m, f, static_cast<int64_t>(Number(rng, r->GetInt64(*m, f))));
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      r->SetUInt32(m, f, static_cast<uint32_t>(Number(rng, r->GetUInt32(*m, f))));
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      r->SetUInt64(m, f, Number(rng, r->GetUInt64(*m, f)));
      break;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      r->SetDouble(m, f, static_cast<double>(static_cast<int64_t>(Number(rng, 0))));
      break;
    case FieldDescriptor::CPPTYPE_FLOAT:
      r->SetFloat(m, f, static_cast<float>(static_cast<int64_t>(Number(rng, 0))));
      break;
    case FieldDescriptor::CPPTYPE_BOOL:
      r->SetBool(m, f, !r->GetBool(*m, f));
      break;
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* e = f->enum_type();
      if (rng() % 4 == 0) {
        r->SetEnumValue(m, f, static_cast<int>(Number(rng, 0)));  // proto3: open enums
      } else {
        r->SetEnumValue(m, f, e->value(static_cast<int>(rng() % e->value_count()))->number());
      }
      break;
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string s = r->GetString(*m, f);
      if (f->full_name() == "mailrepl.rpcpb.Call.request" && rng() % 4 != 0 &&
          MutateRequestBytes(rng, r->GetUInt64(*m, f->containing_type()->FindFieldByName("id")),
                             &s)) {
        r->SetString(m, f, std::move(s));
        break;
      }
      r->SetString(m, f,
                   MutateString(rng, std::move(s), f->type() == FieldDescriptor::TYPE_STRING));
      break;
    }
  }
}

void MutateRepeated(Rng& rng, Message* m, const FieldDescriptor* f, int depth) {
  const Reflection* r = m->GetReflection();
  const int n = r->FieldSize(*m, f);
  const int action = n == 0 ? 0 : static_cast<int>(rng() % 4);
  if (action == 1) {
    r->RemoveLast(m, f);
    return;
  }
  if (action == 2 && n >= 2) {
    r->SwapElements(m, f, static_cast<int>(rng() % n), static_cast<int>(rng() % n));
    return;
  }
  const bool add = action == 0;
  const int i = add ? n : static_cast<int>(rng() % n);
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_MESSAGE:
      if (depth <= 6)
        MutateMessage(rng, add ? r->AddMessage(m, f) : r->MutableRepeatedMessage(m, f, i),
                      depth + 1);
      break;
    case FieldDescriptor::CPPTYPE_UINT32: {
      const uint32_t v =
          static_cast<uint32_t>(Number(rng, add ? 0 : r->GetRepeatedUInt32(*m, f, i)));
      add ? r->AddUInt32(m, f, v) : r->SetRepeatedUInt32(m, f, i, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      const uint64_t v = Number(rng, add ? 0 : r->GetRepeatedUInt64(*m, f, i));
      add ? r->AddUInt64(m, f, v) : r->SetRepeatedUInt64(m, f, i, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_INT32: {
      const auto v = static_cast<int32_t>(Number(rng, add ? 0 : r->GetRepeatedInt32(*m, f, i)));
      add ? r->AddInt32(m, f, v) : r->SetRepeatedInt32(m, f, i, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      const auto v = static_cast<int64_t>(Number(rng, add ? 0 : r->GetRepeatedInt64(*m, f, i)));
      add ? r->AddInt64(m, f, v) : r->SetRepeatedInt64(m, f, i, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string v = MutateString(rng, add ? std::string() : r->GetRepeatedString(*m, f, i),
                                   f->type() == FieldDescriptor::TYPE_STRING);
      add ? r->AddString(m, f, std::move(v)) : r->SetRepeatedString(m, f, i, std::move(v));
      break;
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* e = f->enum_type();
      const int v = e->value(static_cast<int>(rng() % e->value_count()))->number();
      add ? r->AddEnumValue(m, f, v) : r->SetRepeatedEnumValue(m, f, i, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_BOOL:
      add ? r->AddBool(m, f, rng() % 2) : r->SetRepeatedBool(m, f, i, rng() % 2);
      break;
    default:
      break;  // no repeated floats in these protos
  }
}

// Changes one field of m (or of a message inside it) chosen at random.
void MutateMessage(Rng& rng, Message* m, int depth) {
  const Descriptor* d = m->GetDescriptor();
  if (d->field_count() == 0) return;
  // Rather a field that is set (the one a oneof holds), so that the
  // mutation goes deep; sometimes any, which may switch the oneof.
  std::vector<const FieldDescriptor*> set;
  m->GetReflection()->ListFields(*m, &set);
  const FieldDescriptor* f = !set.empty() && rng() % 4 != 0
                                 ? set[rng() % set.size()]
                                 : d->field(static_cast<int>(rng() % d->field_count()));
  if (f->is_repeated()) {
    MutateRepeated(rng, m, f, depth);
  } else {
    MutateSingular(rng, m, f, depth);
  }
}

size_t Output(const Message& m, uint8_t* data, size_t max_size) {
  std::string out;
  if (!m.SerializeToString(&out) || out.size() > max_size) return 0;
  std::copy(out.begin(), out.end(), data);
  return out.size();
}

// --- seeds ---

std::string CallFrame(uint64_t id, const Message& request) {
  rpcpb::Frame f;
  f.mutable_call()->set_id(id);
  f.mutable_call()->set_request(request.SerializeAsString());
  return f.SerializeAsString();
}

void WriteSeeds(const std::string& dir) {
  std::vector<std::pair<std::string, std::string>> seeds;
  {
    rpcpb::Frame f;
    rpcpb::Login* l = f.mutable_login();
    l->set_version_major(rpc::kRpcVersionMajor);
    l->set_service(kService);
    l->set_client("replctl");
    const std::string mine(transport::kChallengeSize, 'C');
    l->set_challenge(mine);
    l->set_response(
        transport::AuthResponse(kSecret, transport::kClientRole, kService, kServerChallenge, mine));
    seeds.emplace_back("login", f.SerializeAsString());
    l->set_response("wrong");
    seeds.emplace_back("login_bad_response", f.SerializeAsString());
  }
  {
    rpcpb::Frame f;
    f.mutable_reply()->set_id(3);
    f.mutable_reply()->set_message("not from a client");
    seeds.emplace_back("reply_from_client", f.SerializeAsString());
  }
  // The client API (even ids).
  auto api = [&](const std::string& name, uint64_t epoch, auto fill) {
    apipb::Request r;
    r.set_epoch(epoch);
    fill(r);
    seeds.emplace_back("api_" + name, CallFrame(2 * seeds.size(), r));
  };
  api("create", 7,
      [](apipb::Request& r) { r.mutable_create_mailbox()->set_name("user/alice/Sent"); });
  api("create_dotdot", 7,
      [](apipb::Request& r) { r.mutable_create_mailbox()->set_name("user/alice/../bob"); });
  api("create_no_epoch", 0,
      [](apipb::Request& r) { r.mutable_create_mailbox()->set_name("user/alice/Drafts"); });
  api("rename", 7, [](apipb::Request& r) {
    r.mutable_rename_mailbox()->set_from("user/alice/Old");
    r.mutable_rename_mailbox()->set_to("user/alice/Entw\xc3\xbcrfe");
  });
  api("delete", 7,
      [](apipb::Request& r) { r.mutable_delete_mailbox()->set_name("user/alice/Trash"); });
  api("list_mailboxes", 0,
      [](apipb::Request& r) { r.mutable_list_mailboxes()->set_prefix("user/alice"); });
  api("list_messages", 0,
      [](apipb::Request& r) { r.mutable_list_messages()->set_mailbox("user/alice"); });
  api("fetch", 0, [](apipb::Request& r) {
    r.mutable_fetch_body()->set_mailbox("user/alice");
    r.mutable_fetch_body()->set_uid(4);
  });
  api("set_flags", 7, [](apipb::Request& r) {
    apipb::SetFlags* f = r.mutable_set_flags();
    f->set_mailbox("user/alice");
    f->add_uids(1);
    f->add_uids(2);
    f->set_op(apipb::SetFlags::REPLACE);
    f->add_flags("\\Seen");
    f->add_flags("$Junk");
  });
  api("set_flags_bad", 7, [](apipb::Request& r) {
    apipb::SetFlags* f = r.mutable_set_flags();
    f->set_mailbox("user/alice");
    f->set_op(static_cast<apipb::SetFlags::Op>(7));
    f->add_flags("bad flag");
  });
  api("expunge", 7, [](apipb::Request& r) {
    r.mutable_expunge()->set_mailbox("user/alice");
    r.mutable_expunge()->add_uids(3);
  });
  api("get_quota", 0, [](apipb::Request& r) { r.mutable_get_quota()->set_user("alice"); });
  api("set_quota", 7, [](apipb::Request& r) {
    r.mutable_set_quota()->set_user("../alice");
    r.mutable_set_quota()->set_storage_limit(1 << 30);
  });
  api("append", 7, [](apipb::Request& r) {
    apipb::Append* a = r.mutable_append();
    a->set_mailbox("user/alice");
    a->set_message("Subject: hi\r\n\r\nhello\r\n");
    a->add_flags("\\Seen");
    a->set_internal_date(1700000000);
    a->mutable_unless_present()->set_count(1);
  });
  api("get_slot", 0, [](apipb::Request& r) { r.mutable_get_slot(); });
  api("check_store", 0, [](apipb::Request& r) {
    r.mutable_check_store()->set_deep(true);
    r.mutable_check_store()->set_max_bytes_per_second(-1);
  });
  api("none", 0, [](apipb::Request&) {});
  // The coordinator (odd ids).
  auto coord = [&](const std::string& name, auto fill) {
    coordpb::Request r;
    fill(r);
    seeds.emplace_back("coord_" + name, CallFrame(2 * seeds.size() + 1, r));
  };
  coord("register_host", [](coordpb::Request& r) {
    coordpb::RegisterHost* h = r.mutable_register_host();
    h->set_host("h1");
    h->set_metrics_address("10.0.0.1:9100");
    for (uint64_t id : {1, 2}) {
      coordpb::SlotInfo* s = h->add_slots();
      s->set_slot_id(id);
      s->set_lmtp_address(absl::StrCat("10.0.0.", id, ":24"));
      s->set_api_address(absl::StrCat("10.0.0.", id, ":7100"));
      s->set_sync_address(absl::StrCat("10.0.0.", id, ":7200"));
      s->set_data_path(absl::StrCat("/srv/slot", id));
    }
  });
  coord("heartbeat", [](coordpb::Request& r) {
    r.mutable_heartbeat()->set_host("h1");
    r.mutable_heartbeat()->set_wait_ms(10000);
    r.mutable_heartbeat()->add_slots()->set_slot_id(1);
  });
  coord("lookup_user",
        [](coordpb::Request& r) { r.mutable_lookup_user()->set_user("Bob+lists@example.com"); });
  coord("create_store", [](coordpb::Request& r) {
    coordpb::CreateStore* c = r.mutable_create_store();
    c->add_slot_ids(1);
    c->add_slot_ids(3);
    c->set_master_slot_id(3);
    c->set_durability(coordpb::SYNC);
    c->set_service_lmtp("127.1.9.2:2424");
  });
  coord("assign_users", [](coordpb::Request& r) {
    r.mutable_assign_users()->add_users("alice");
    r.mutable_assign_users()->add_users("bob");
    r.mutable_assign_users()->set_store_id(1);
  });
  coord("set_durability", [](coordpb::Request& r) { r.mutable_set_durability()->set_store_id(1); });
  coord("get_status", [](coordpb::Request& r) { r.mutable_get_status(); });
  coord("get_history", [](coordpb::Request& r) { r.mutable_get_history()->set_limit(10); });
  coord("failover", [](coordpb::Request& r) {
    r.mutable_failover()->set_store_id(1);
    r.mutable_failover()->set_reason("drain h1");
  });
  coord("promote", [](coordpb::Request& r) { r.mutable_promote()->set_store_id(1); });
  coord("record_check", [](coordpb::Request& r) {
    r.mutable_record_check()->set_store_id(1);
    r.mutable_record_check()->set_result("consistent");
  });
  coord("set_service_address", [](coordpb::Request& r) {
    r.mutable_set_service_address()->set_store_id(1);
    r.mutable_set_service_address()->set_api("127.1.9.2:7100");
  });
  coord("record_salvage", [](coordpb::Request& r) {
    coordpb::RecordSalvage* s = r.mutable_record_salvage();
    s->set_store_id(1);
    s->set_slot_id(1);
    s->set_from_lsn(10);
    s->set_to_lsn(20);
  });
  coord("remove_store", [](coordpb::Request& r) { r.mutable_remove_store()->set_store_id(2); });
  coord("remove_slot", [](coordpb::Request& r) { r.mutable_remove_slot()->set_slot_id(6); });
  coord("remove_host", [](coordpb::Request& r) { r.mutable_remove_host()->set_host("h3"); });
  for (const auto& [name, data] : seeds) {
    FILE* f = std::fopen((dir + "/" + name).c_str(), "wb");
    Check(f != nullptr, "open seed file");
    std::fwrite(data.data(), 1, data.size(), f);
    std::fclose(f);
  }
  std::printf("%zu seeds in %s\n", seeds.size(), dir.c_str());
}

void Quiet(google::protobuf::LogLevel, const char*, int, const std::string&) {}

}  // namespace
}  // namespace mailrepl::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs every string that is not UTF-8; the fuzzer makes many.
  google::protobuf::SetLogHandler(mailrepl::fuzz::Quiet);
  if (const char* dir = std::getenv("MAILREPL_FUZZ_WRITE_SEEDS")) {
    mailrepl::fuzz::WriteSeeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mailrepl::fuzz::Serve(data, size);
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  using namespace mailrepl::fuzz;
  Rng rng(seed);
  mailrepl::rpcpb::Frame frame;
  if (rng() % 16 != 0 && frame.ParseFromArray(data, static_cast<int>(size))) {
    MutateMessage(rng, &frame, 0);
    if (const size_t n = Output(frame, data, max_size); n > 0) return n;
  }
  return LLVMFuzzerMutate(data, size, max_size);
}

extern "C" size_t LLVMFuzzerCustomCrossOver(const uint8_t* data1, size_t size1,
                                            const uint8_t* data2, size_t size2, uint8_t* out,
                                            size_t max_out_size, unsigned int seed) {
  using namespace mailrepl::fuzz;
  Rng rng(seed);
  mailrepl::rpcpb::Frame a, b;
  if (!a.ParseFromArray(data1, static_cast<int>(size1)) ||
      !b.ParseFromArray(data2, static_cast<int>(size2))) {
    return 0;
  }
  if (a.has_call() && b.has_call() && rng() % 2 == 0) {
    // One field of b's request into a's, both read as a's service.
    mailrepl::apipb::Request api_a, api_b;
    mailrepl::coordpb::Request coord_a, coord_b;
    const bool api = a.call().id() % 2 == 0;
    Message* ra = api ? static_cast<Message*>(&api_a) : &coord_a;
    Message* rb = api ? static_cast<Message*>(&api_b) : &coord_b;
    if (ra->ParseFromString(a.call().request()) && rb->ParseFromString(b.call().request())) {
      std::vector<const FieldDescriptor*> fields;
      rb->GetReflection()->ListFields(*rb, &fields);
      if (!fields.empty()) {
        const FieldDescriptor* keep = fields[rng() % fields.size()];
        for (const FieldDescriptor* f : fields) {
          if (f != keep) rb->GetReflection()->ClearField(rb, f);
        }
        ra->MergeFrom(*rb);
        a.mutable_call()->set_request(ra->SerializeAsString());
        return Output(a, out, max_out_size);
      }
    }
  }
  a.MergeFrom(b);
  return Output(a, out, max_out_size);
}
