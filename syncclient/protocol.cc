#include "syncclient/protocol.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace mailrepl::sync {

uint32_t ProtocolMinor() {
  static const uint32_t minor = [] {
    uint32_t v = 0;
    const char* env = std::getenv("MAILREPL_PROTOCOL_MINOR");
    if (env != nullptr && absl::SimpleAtoi(env, &v)) return v;
    return 0u;
  }();
  return minor;
}

std::string AuthContext(const std::string& cluster_id, uint64_t store_id) {
  return absl::StrCat("mailrepl-sync cluster=", cluster_id,
                      " store=", store_id);
}

syncpb::Version OurVersion() {
  syncpb::Version v;
  v.set_major(kProtocolMajor);
  v.set_minor(ProtocolMinor());
  return v;
}

syncpb::Record ToWire(const LogRecord& r) {
  syncpb::Record w;
  w.set_lsn(r.lsn);
  w.set_epoch(r.epoch);
  w.set_type(static_cast<uint32_t>(r.type));
  w.set_payload(r.payload);
  return w;
}

LogRecord FromWire(const syncpb::Record& w) {
  // Types above 255 become 0, which no side accepts.
  auto type = static_cast<RecordType>(w.type() > 255 ? 0 : w.type());
  return LogRecord{w.lsn(), w.epoch(), type, w.payload()};
}

syncpb::Frame ErrorFrame(syncpb::ErrorCode code, const std::string& message) {
  syncpb::Frame f;
  f.mutable_error()->set_code(code);
  f.mutable_error()->set_message(message);
  return f;
}

}  // namespace mailrepl::sync
