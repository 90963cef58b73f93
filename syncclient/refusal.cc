#include "syncclient/refusal.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace mailrepl::sync {
namespace {

constexpr absl::string_view kRefusalPayload = "type.mailrepl/sync.Error";

absl::StatusCode CodeFor(syncpb::ErrorCode code) {
  switch (code) {
    case syncpb::UNAUTHENTICATED:
      return absl::StatusCode::kPermissionDenied;
    case syncpb::BAD_FRAME:
      return absl::StatusCode::kInvalidArgument;
    case syncpb::DISK_FULL:
      return absl::StatusCode::kResourceExhausted;
    case syncpb::WRONG_STORE:
    case syncpb::STALE_EPOCH:
    case syncpb::DIVERGED:
    case syncpb::PROTOCOL_VERSION:
    case syncpb::SLOT_FAILED:
      return absl::StatusCode::kFailedPrecondition;
    default:  // GAP, RECORDS_DIFFER, APPLY_FAILED, SHUTTING_DOWN, NOT_REPLICA, unknown
      return absl::StatusCode::kUnavailable;
  }
}

}  // namespace

absl::Status Refuse(syncpb::ErrorCode code, absl::string_view message, uint64_t epoch,
                    uint64_t lsn) {
  absl::Status s(code == syncpb::BAD_FRAME         ? absl::StatusCode::kInvalidArgument
                 : code == syncpb::UNAUTHENTICATED ? absl::StatusCode::kPermissionDenied
                 : code == syncpb::DISK_FULL       ? absl::StatusCode::kResourceExhausted
                                                   : absl::StatusCode::kFailedPrecondition,
                 message);
  syncpb::Error e;
  e.set_code(code);
  e.set_message(std::string(message));
  e.set_epoch(epoch);
  e.set_lsn(lsn);
  s.SetPayload(kRefusalPayload, absl::Cord(e.SerializeAsString()));
  return s;
}

std::optional<syncpb::Error> RefusalFor(const absl::Status& s) {
  if (s.ok()) return std::nullopt;
  if (auto p = s.GetPayload(kRefusalPayload)) {
    syncpb::Error e;
    if (e.ParseFromString(std::string(*p))) return e;
  }
  syncpb::Error e;
  e.set_message(std::string(s.message()));
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
      return std::nullopt;
    case absl::StatusCode::kInvalidArgument:
      e.set_code(syncpb::BAD_FRAME);
      break;
    case absl::StatusCode::kResourceExhausted:
      e.set_code(syncpb::DISK_FULL);
      break;
    default:
      e.set_code(syncpb::APPLY_FAILED);
  }
  return e;
}

absl::Status FromErrorFrame(const syncpb::Error& e, const std::string& peer) {
  return absl::Status(CodeFor(e.code()),
                      absl::StrCat("sync server ", peer, ": ", syncpb::ErrorCode_Name(e.code()),
                                   ": ", e.message()));
}

}  // namespace mailrepl::sync
