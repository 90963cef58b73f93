#include "store/identity.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/crc32c.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace mailrepl {
namespace {
constexpr char kMagic[] = "mailrepl-slot 1";
}

absl::Status ValidateClusterId(const std::string& id) {
  if (id.empty() || id.size() > 64) {
    return absl::InvalidArgumentError("cluster id must be 1..64 characters");
  }
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("cluster id '", id, "' may hold only letters, digits, '-', '_', '.'"));
    }
  }
  return absl::OkStatus();
}

std::string EncodeIdentity(const SlotIdentity& id) {
  std::string body = absl::StrCat(kMagic, "\ncluster_id=", id.cluster_id,
                                  "\nstore_id=", id.store_id, "\nslot_id=", id.slot_id,
                                  "\ncreated_unix=", id.created_unix, "\n");
  return absl::StrCat(body, absl::StrFormat("crc32c=%08x\n", crc32c::Value(body)));
}

absl::StatusOr<SlotIdentity> DecodeIdentity(const std::string& text, const std::string& path) {
  auto damaged = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("identity file ", path, " is damaged: ", why,
                                            "; restore it or re-create the slot"));
  };
  size_t crc_pos = text.rfind("crc32c=");
  if (crc_pos == std::string::npos) return damaged("no checksum line");
  std::string body = text.substr(0, crc_pos);
  uint32_t want = 0;
  std::string hex(absl::StripSuffix(text.substr(crc_pos + 7), "\n"));
  if (!absl::SimpleHexAtoi(hex, &want) || want != crc32c::Value(body)) {
    return damaged("checksum mismatch");
  }
  SlotIdentity id;
  bool magic = false;
  for (absl::string_view line : absl::StrSplit(body, '\n', absl::SkipEmpty())) {
    if (line == kMagic) {
      magic = true;
      continue;
    }
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    bool ok = true;
    if (kv.first == "cluster_id") {
      id.cluster_id = kv.second;
    } else if (kv.first == "store_id") {
      ok = absl::SimpleAtoi(kv.second, &id.store_id);
    } else if (kv.first == "slot_id") {
      ok = absl::SimpleAtoi(kv.second, &id.slot_id);
    } else if (kv.first == "created_unix") {
      ok = absl::SimpleAtoi(kv.second, &id.created_unix);
    }
    if (!ok) return damaged(absl::StrCat("bad value in '", line, "'"));
  }
  if (!magic) return damaged("not a slot identity file");
  return id;
}

absl::Status WriteIdentity(const std::string& path, const SlotIdentity& id) {
  return WriteFileAtomically(path, EncodeIdentity(id));
}

absl::StatusOr<SlotIdentity> ReadIdentity(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return DecodeIdentity(text, path);
}

}  // namespace mailrepl
