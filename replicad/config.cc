#include "replicad/config.h"

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "transport/net.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace mailrepl::replicad {

namespace {

// Collects the text-format parser's first error with its position.
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (first_.empty()) first_ = absl::StrCat("line ", line + 1, " column ", column + 1, ": ", message);
  }
  const std::string& first() const { return first_; }

 private:
  std::string first_;
};

}  // namespace

absl::Status ValidateReplicadConfig(configpb::ReplicadConfig& c, const std::string& origin) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": ", what));
  };
  if (c.host().empty()) return bad("`host` is required (this host's name in the coordinator)");
  if (!transport::ParseEndpoint(c.coordinator()).ok()) return bad("`coordinator` must be ADDR:PORT");
  if (c.secret_file().empty()) return bad("`secret_file` is required");
  if (c.state_dir().empty() || c.state_dir()[0] != '/') {
    return bad("`state_dir` must be an absolute path (the role cache lives there)");
  }
  if (!c.metrics_listen().empty() && !transport::ParseEndpoint(c.metrics_listen()).ok()) {
    return bad("`metrics_listen` must be ADDR:PORT");
  }
  if (c.lmtp_threads() == 0) c.set_lmtp_threads(16);
  if (c.sync_timeout_ms() == 0) c.set_sync_timeout_ms(5000);
  if (c.slot_size() == 0) return bad("no `slot { ... }` entries");
  std::set<uint64_t> ids;
  std::set<std::string> addresses;
  for (configpb::SlotConfig& s : *c.mutable_slot()) {
    const std::string which = absl::StrCat("slot ", s.slot_id());
    if (s.slot_id() == 0) return bad("a slot needs `slot_id` (> 0)");
    if (!ids.insert(s.slot_id()).second) return bad(absl::StrCat(which, " is listed twice"));
    if (s.data().empty() || s.data()[0] != '/') {
      return bad(absl::StrCat(which, ": `data` must be an absolute path"));
    }
    if (s.meta().empty()) s.set_meta(s.data() + "/meta");
    if (s.spool().empty()) s.set_spool(s.data() + "/spool");
    if (s.meta()[0] != '/' || s.spool()[0] != '/') {
      return bad(absl::StrCat(which, ": `meta` and `spool` must be absolute paths"));
    }
    for (const auto& [field, address] : {std::pair{"lmtp_listen", s.lmtp_listen()},
                                         std::pair{"api_listen", s.api_listen()},
                                         std::pair{"sync_listen", s.sync_listen()}}) {
      if (!transport::ParseEndpoint(address).ok()) {
        return bad(absl::StrCat(which, ": `", field, "` must be ADDR:PORT"));
      }
      if (!absl::EndsWith(address, ":0") && !addresses.insert(address).second) {
        return bad(absl::StrCat(which, ": address ", address, " is used twice"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<configpb::ReplicadConfig> ParseReplicadConfig(const std::string& text,
                                                             const std::string& origin) {
  configpb::ReplicadConfig config;
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &config)) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": ", errors.first()));
  }
  absl::Status valid = ValidateReplicadConfig(config, origin);
  if (!valid.ok()) return valid;
  return config;
}

absl::StatusOr<configpb::ReplicadConfig> LoadReplicadConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseReplicadConfig(*text, path);
}

}  // namespace mailrepl::replicad
