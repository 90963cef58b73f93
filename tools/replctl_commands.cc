#include "tools/replctl_commands.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"

namespace mailrepl::tools {

namespace {

std::string SlotAt(uint64_t slot_id, const coordpb::StoreInfo& store) {
  for (const coordpb::SlotInfo& m : store.members()) {
    if (m.slot_id() == slot_id) return absl::StrCat(slot_id, "@", m.host());
  }
  return absl::StrCat(slot_id, "@?");
}

// "3h" for a duration: whole seconds, minutes, hours or days, rounded down.
std::string Ago(absl::Duration d) {
  const int64_t s = std::max<int64_t>(0, absl::ToInt64Seconds(d));  // clocks may differ
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m");
  if (s < 86400) return absl::StrCat(s / 3600, "h");
  return absl::StrCat(s / 86400, "d");
}

// A last check's result as status shows it: "ok", "DIFFERS" (to stand
// out), "repaired", "unchecked"; "never" without one.
std::string CheckWord(const coordpb::StoreStatus& s) {
  if (!s.has_last_check()) return "never";
  const std::string& result = s.last_check().result();
  if (result == "consistent") return "ok";
  if (result == "differs") return "DIFFERS";
  return result;
}

// The CHECKED column: "ok 3h ago", "DIFFERS 5m ago", "never".
std::string LastCheck(const coordpb::StoreStatus& s, absl::Time now) {
  if (!s.has_last_check()) return "never";
  return absl::StrCat(CheckWord(s), " ",
                      Ago(now - absl::FromUnixMillis(s.last_check().time_ms())), " ago");
}

}  // namespace

std::string ToJson(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &json, o);
  return json;
}

std::string FormatStatus(const coordpb::GetStatusReply& status) {
  std::string out = absl::StrFormat("cluster %s  topology v%d  lease %d ms  %d stores  %d hosts\n\n",
                                    status.cluster_id(), status.version(), status.lease_ms(),
                                    status.stores_size(), status.hosts_size());
  // "Ago" on the coordinator's clock, which every time in the reply is on
  // (ours may differ); an older coordinatord does not send it.
  const absl::Time now =
      status.answered_ms() > 0 ? absl::FromUnixMillis(status.answered_ms()) : absl::Now();
  absl::StrAppendFormat(&out, "%-6s %-14s %-22s %6s %-6s %-8s %10s %8s %6s %s\n", "STORE",
                        "MASTER", "REPLICAS", "EPOCH", "DURAB", "STATE", "LAG(rec)", "LAG(s)",
                        "USERS", "CHECKED");
  std::map<std::string, std::pair<int, int>> per_host;  // masters, replicas
  std::map<std::string, int> states;
  std::map<std::string, int> checks;  // last check result ("never": none)
  for (const coordpb::StoreStatus& s : status.stores()) {
    const coordpb::StoreInfo& st = s.store();
    std::vector<std::string> replicas;
    for (const coordpb::SlotInfo& m : st.members()) {
      if (m.slot_id() == st.master_slot_id()) {
        ++per_host[m.host()].first;
      } else {
        ++per_host[m.host()].second;
        replicas.push_back(absl::StrCat(m.slot_id(), "@", m.host()));
      }
    }
    ++states[s.state()];
    ++checks[CheckWord(s)];
    absl::StrAppendFormat(&out, "%-6d %-14s %-22s %6d %-6s %-8s %10d %8.2f %6d %s\n",
                          st.store_id(), SlotAt(st.master_slot_id(), st),
                          absl::StrJoin(replicas, ","), st.epoch(),
                          st.durability() == coordpb::SYNC ? "sync" : "async", s.state(),
                          s.lag_records(), s.lag_seconds(), s.users(), LastCheck(s, now));
  }
  absl::StrAppend(&out, "\n");
  absl::StrAppendFormat(&out, "%-12s %-6s %8s %9s %s\n", "HOST", "ALIVE", "MASTERS", "REPLICAS",
                        "LAST HEARTBEAT");
  for (const coordpb::HostStatus& h : status.hosts()) {
    const auto counts = per_host[h.host()];
    std::string seen = "never";
    if (h.last_heartbeat_ms() > 0) {
      seen = absl::StrFormat(
          "%.1fs ago",
          absl::ToDoubleSeconds(now - absl::FromUnixMillis(h.last_heartbeat_ms())));
    }
    absl::StrAppendFormat(&out, "%-12s %-6s %8d %9d %s\n", h.host(), h.alive() ? "yes" : "NO",
                          counts.first, counts.second, seen);
  }
  std::vector<std::string> summary;
  for (const auto& [state, n] : states) summary.push_back(absl::StrCat(n, " ", state));
  absl::StrAppend(&out, "\nstores: ", summary.empty() ? "none" : absl::StrJoin(summary, ", "),
                  "\n");
  // Last checks, so a DIFFERS among hundreds of stores is not missed.
  if (!status.stores().empty()) {
    std::vector<std::string> checked;
    for (const char* word : {"DIFFERS", "repaired", "ok", "unchecked", "never"}) {
      auto it = checks.find(word);
      if (it == checks.end()) continue;
      checked.push_back(absl::StrCat(it->second, " ", word));
      checks.erase(it);
    }
    for (const auto& [word, n] : checks) checked.push_back(absl::StrCat(n, " ", word));
    absl::StrAppend(&out, "last checks: ", absl::StrJoin(checked, ", "), "\n");
  }
  return out;
}

std::string FormatPromote(const coordpb::PromoteReply& reply) {
  const coordpb::StoreInfo& store = reply.store();
  const std::string old_master = absl::StrCat("slot ", SlotAt(reply.from_slot_id(), store));
  const uint64_t new_last = reply.lost_from_lsn() > 0 ? reply.lost_from_lsn() - 1 : 0;
  // The old master's last reported LSN; an older coordinatord sends no
  // old_master_report, only that LSN in lost_to_lsn.
  std::optional<uint64_t> reported;
  std::string last_report = "it never reported";
  if (reply.has_old_master_report()) {
    reported = reply.old_master_report().last_lsn();
    last_report = absl::StrFormat("its last report (LSN %d, %.1f s before the promotion began)",
                                  *reported, reply.old_master_report().age_ms() / 1000.0);
  } else if (reply.lost_to_lsn() > 0) {
    reported = reply.lost_to_lsn();
    last_report = absl::StrCat("its last report (LSN ", *reported, ")");
  }
  std::string lost;
  if (reply.lost_to_lsn() >= reply.lost_from_lsn()) {
    lost = absl::StrCat("LSNs ", reply.lost_from_lsn(), "..", reply.lost_to_lsn(),
                        ", and any later ones, that the old master ", old_master, " wrote; ",
                        last_report,
                        " is newer than the new master's, but it may have written more after it");
  } else {
    lost = absl::StrCat("LSNs past ", new_last, " that the old master ", old_master, " wrote; ",
                        last_report,
                        !reported              ? ""
                        : *reported < new_last ? " is older than the new master's"
                                               : " is no newer than the new master's",
                        ", so how many is unknown");
  }
  return absl::StrCat("store ", store.store_id(), ": ", old_master, " -> ",
                      SlotAt(store.master_slot_id(), store), ", epoch ", store.epoch(),
                      ", after waiting ", reply.waited_ms(), " ms (took ", reply.took_ms(),
                      " ms); may be lost: ", lost,
                      "; they are salvaged when it returns (in the background)");
}

std::string FormatHistory(const coordpb::GetHistoryReply& history) {
  std::string out;
  for (const coordpb::Event& e : history.events()) {
    absl::StrAppend(&out,
                    absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(e.time_ms()),
                                     absl::UTCTimeZone()),
                    "  ", e.store_id() ? absl::StrCat("store ", e.store_id()) : "-", "  ",
                    e.kind(), "  ", e.detail(), "\n");
  }
  return out;
}

}  // namespace mailrepl::tools
