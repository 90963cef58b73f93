#include "tools/replctl_plan.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace mailrepl::tools {

namespace {

// Host index of the slot at position k of store s (0: the master).
int HostAt(const PlacedStore& s, size_t k) { return k == 0 ? s.master : s.replicas[k - 1]; }

std::string SlotAt(const PlacedStore& s, size_t k, const std::vector<std::string>& names) {
  return absl::StrCat(s.slot_ids[k], "@", names[HostAt(s, k)]);
}

std::string Replicas(const PlacedStore& s, const std::vector<std::string>& names) {
  std::vector<std::string> r;
  for (size_t k = 1; k < s.slot_ids.size(); ++k) r.push_back(SlotAt(s, k, names));
  return absl::StrJoin(r, ", ");
}

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// The slots of host h in a placement, ascending.
std::vector<uint64_t> SlotsOf(const Placement& p, int h) {
  std::vector<uint64_t> ids;
  for (const PlacedStore& s : p.stores) {
    for (size_t k = 0; k < s.slot_ids.size(); ++k) {
      if (HostAt(s, k) == h) ids.push_back(s.slot_ids[k]);
    }
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ParseHostNames(const std::string& flag) {
  std::vector<std::string> names;
  int count = 0;
  if (absl::SimpleAtoi(flag, &count)) {
    if (count < 1 || count > 1000) return absl::InvalidArgumentError("--hosts: 1..1000 hosts");
    for (int i = 1; i <= count; ++i) names.push_back(absl::StrCat("host", i));
    return names;
  }
  std::set<std::string> seen;
  for (absl::string_view n : absl::StrSplit(flag, ',', absl::SkipWhitespace())) {
    std::string name(absl::StripAsciiWhitespace(n));
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("--hosts names `", name, "` twice"));
    }
    names.push_back(name);
  }
  if (names.empty()) return absl::InvalidArgumentError("--hosts takes host names: a,b,c");
  return names;
}

absl::StatusOr<Placement> MapToRegisteredSlots(const Placement& p,
                                               const std::vector<std::string>& names,
                                               const coordpb::GetStatusReply& status,
                                               std::vector<std::string>* notes) {
  std::vector<std::vector<uint64_t>> registered(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    const coordpb::HostStatus* host = nullptr;
    for (const coordpb::HostStatus& h : status.hosts()) {
      if (h.host() == names[i]) host = &h;
    }
    if (host == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("no host `", names[i], "` registered with the coordinator"));
    }
    registered[i].assign(host->slot_ids().begin(), host->slot_ids().end());
    std::sort(registered[i].begin(), registered[i].end());
    const int n = static_cast<int>(registered[i].size());
    if (n < p.slots_per_host) {
      return absl::FailedPreconditionError(absl::StrCat("host ", names[i], " has ", n,
                                                        " slots registered, the plan needs ",
                                                        p.slots_per_host));
    }
    if (n > p.slots_per_host) {
      notes->push_back(absl::StrCat("host ", names[i], " has ", n, " slots; the plan uses its ",
                                    p.slots_per_host, " lowest ids"));
    }
  }
  Placement mapped = p;
  for (PlacedStore& s : mapped.stores) {
    for (size_t k = 0; k < s.slot_ids.size(); ++k) {
      const int h = HostAt(s, k);
      const uint64_t index = s.slot_ids[k] - 1 - static_cast<uint64_t>(h) * p.slots_per_host;
      s.slot_ids[k] = registered[h][index];
    }
  }
  return mapped;
}

std::vector<StoreOutcome> TakenSlots(const Placement& p, const coordpb::GetStatusReply& status) {
  std::map<uint64_t, uint64_t> store_of;
  for (const coordpb::StoreStatus& st : status.stores()) {
    for (const coordpb::SlotInfo& m : st.store().members()) {
      store_of[m.slot_id()] = st.store().store_id();
    }
  }
  std::vector<StoreOutcome> taken;
  for (size_t i = 0; i < p.stores.size(); ++i) {
    std::vector<std::string> why;
    for (uint64_t id : p.stores[i].slot_ids) {
      auto it = store_of.find(id);
      if (it != store_of.end()) {
        why.push_back(absl::StrCat("slot ", id, " is already in store ", it->second));
      }
    }
    if (!why.empty()) {
      taken.push_back({.plan_store = static_cast<int>(i) + 1, .error = absl::StrJoin(why, "; ")});
    }
  }
  return taken;
}

std::vector<StoreOutcome> CreateStores(const Placement& p, coordpb::Durability durability,
                                       const CoordinatorCall& call) {
  std::vector<StoreOutcome> outcomes;
  for (size_t i = 0; i < p.stores.size(); ++i) {
    coordpb::Request request;
    coordpb::CreateStore* cs = request.mutable_create_store();
    cs->set_store_id(0);  // the next free id
    for (uint64_t id : p.stores[i].slot_ids) cs->add_slot_ids(id);
    cs->set_master_slot_id(p.stores[i].slot_ids[0]);
    cs->set_durability(durability);
    StoreOutcome o{.plan_store = static_cast<int>(i) + 1};
    absl::StatusOr<coordpb::Response> r = call(request);
    if (r.ok()) {
      o.store_id = r->create_store().store().store_id();
    } else {
      o.error = std::string(r.status().message());
    }
    outcomes.push_back(std::move(o));
  }
  return outcomes;
}

std::string FormatPlan(const Placement& p, const FailureLoad& load,
                       const std::vector<std::string>& names) {
  const int used = static_cast<int>(p.stores.size()) * (p.replicas + 1);
  std::string out = absl::StrFormat(
      "plan: %d hosts x %d slots, %d replica%s per store: %d stores (%d of %d slots)\n",
      p.hosts, p.slots_per_host, p.replicas, p.replicas == 1 ? "" : "s", p.stores.size(), used,
      p.hosts * p.slots_per_host);
  size_t width = 6;
  for (const PlacedStore& s : p.stores) width = std::max(width, SlotAt(s, 0, names).size());
  absl::StrAppendFormat(&out, "%5s  %-*s  %s\n", "store", width, "master",
                        "replicas (the first takes over if the master's host fails)");
  for (size_t i = 0; i < p.stores.size(); ++i) {
    absl::StrAppendFormat(&out, "%5d  %-*s  %s\n", i + 1, width, SlotAt(p.stores[i], 0, names),
                          Replicas(p.stores[i], names));
  }
  const std::vector<int> masters = MastersPerHost(p), replicas = ReplicasPerHost(p);
  size_t host_width = 4;
  for (const std::string& n : names) host_width = std::max(host_width, n.size());
  absl::StrAppendFormat(&out, "\n%-*s  %7s  %8s  %4s  %s\n", host_width, "host", "masters",
                        "replicas", "free", "slots");
  for (int h = 0; h < p.hosts; ++h) {
    absl::StrAppendFormat(&out, "%-*s  %7d  %8d  %4d  %s\n", host_width, names[h], masters[h],
                          replicas[h], p.slots_per_host - masters[h] - replicas[h],
                          absl::StrJoin(SlotsOf(p, h), ","));
  }
  out += "\n";
  for (const HostFailure& f : load.failures) {
    std::vector<std::string> moves;
    for (int g = 0; g < p.hosts; ++g) {
      if (g != f.lost && f.gain[g] > 0) moves.push_back(absl::StrCat(names[g], " +", f.gain[g]));
    }
    absl::StrAppendFormat(
        &out, "if %s fails: its %d masters move to: %s (bound ⌈%d/%d⌉ = %d) %s\n", names[f.lost],
        f.masters, moves.empty() ? "nowhere" : absl::StrJoin(moves, ", "), f.masters,
        p.hosts - 1, f.bound,
        f.ok() ? "OK" : absl::StrCat("OVER THE BOUND: a host gains ", f.max_gain));
  }
  if (load.worst_host >= 0) {
    absl::StrAppendFormat(
        &out, "worst case after any single-host failure: host %s carries %d masters (was %d)\n",
        names[load.worst_host], load.worst_after, load.worst_before);
  }
  if (!load.all_ok) {
    absl::StrAppendFormat(&out,
                          "NOT WITHIN THE BOUND: some host gains %d master%s more than "
                          "ceil(m/(H-1))\n",
                          load.worst_excess, load.worst_excess == 1 ? "" : "s");
  }
  return out;
}

std::string FormatOutcomes(const Placement& p, const std::vector<StoreOutcome>& outcomes,
                           const std::vector<std::string>& names) {
  std::string out;
  int created = 0;
  for (const StoreOutcome& o : outcomes) {
    const PlacedStore& s = p.stores[o.plan_store - 1];
    const std::string what = absl::StrCat("store ", o.plan_store, " (master ", SlotAt(s, 0, names),
                                          ", replicas ", Replicas(s, names), ")");
    if (o.store_id != 0) {
      ++created;
      absl::StrAppend(&out, "apply: ", what, ": created as store ", o.store_id, "\n");
    } else {
      absl::StrAppend(&out, "apply: ", what, ": NOT CREATED: ", o.error, "\n");
    }
  }
  absl::StrAppend(&out, "apply: ", created, " of ", p.stores.size(), " stores created\n");
  return out;
}

std::string PlanToJson(const Placement& p, const FailureLoad& load,
                       const std::vector<std::string>& names,
                       const std::vector<StoreOutcome>* applied) {
  auto slot = [&](const PlacedStore& s, size_t k) {
    return absl::StrCat("{\"slot\": ", s.slot_ids[k], ", \"host\": ", Quote(names[HostAt(s, k)]),
                        "}");
  };
  std::vector<std::string> quoted;
  for (const std::string& n : names) quoted.push_back(Quote(n));
  std::string out = absl::StrCat("{\n  \"hosts\": [", absl::StrJoin(quoted, ", "),
                                 "],\n  \"slots_per_host\": ", p.slots_per_host,
                                 ",\n  \"replicas\": ", p.replicas, ",\n  \"stores\": [");
  for (size_t i = 0; i < p.stores.size(); ++i) {
    const PlacedStore& s = p.stores[i];
    std::vector<std::string> r;
    for (size_t k = 1; k < s.slot_ids.size(); ++k) r.push_back(slot(s, k));
    absl::StrAppend(&out, i ? "," : "", "\n    {\"store\": ", i + 1, ", \"master\": ", slot(s, 0),
                    ", \"replicas\": [", absl::StrJoin(r, ", "), "]}");
  }
  out += "\n  ],\n  \"per_host\": [";
  const std::vector<int> masters = MastersPerHost(p), replicas = ReplicasPerHost(p);
  for (int h = 0; h < p.hosts; ++h) {
    absl::StrAppend(&out, h ? "," : "", "\n    {\"host\": ", Quote(names[h]),
                    ", \"masters\": ", masters[h], ", \"replicas\": ", replicas[h],
                    ", \"free\": ", p.slots_per_host - masters[h] - replicas[h], ", \"slots\": [",
                    absl::StrJoin(SlotsOf(p, h), ", "), "]}");
  }
  out += "\n  ],\n  \"failures\": [";
  for (size_t i = 0; i < load.failures.size(); ++i) {
    const HostFailure& f = load.failures[i];
    std::vector<std::string> gains;
    for (int g = 0; g < p.hosts; ++g) {
      if (g != f.lost) gains.push_back(absl::StrCat(Quote(names[g]), ": ", f.gain[g]));
    }
    absl::StrAppend(&out, i ? "," : "", "\n    {\"lost\": ", Quote(names[f.lost]),
                    ", \"masters\": ", f.masters, ", \"bound\": ", f.bound, ", \"gains\": {",
                    absl::StrJoin(gains, ", "), "}, \"max_gain\": ", f.max_gain,
                    ", \"ok\": ", f.ok() ? "true" : "false", "}");
  }
  out += "\n  ],\n";
  if (load.worst_host >= 0) {
    absl::StrAppend(&out, "  \"worst\": {\"lost\": ", Quote(names[load.worst_lost]),
                    ", \"host\": ", Quote(names[load.worst_host]),
                    ", \"masters_after\": ", load.worst_after,
                    ", \"masters_before\": ", load.worst_before, "},\n");
  }
  absl::StrAppend(&out, "  \"all_within_bound\": ", load.all_ok ? "true" : "false",
                  ",\n  \"worst_excess_over_bound\": ", load.worst_excess);
  if (applied != nullptr) {
    out += ",\n  \"applied\": [";
    for (size_t i = 0; i < applied->size(); ++i) {
      const StoreOutcome& o = (*applied)[i];
      absl::StrAppend(&out, i ? "," : "", "\n    {\"store\": ", o.plan_store,
                      ", \"created_store_id\": ", o.store_id, ", \"error\": ", Quote(o.error),
                      "}");
    }
    out += "\n  ]";
  }
  return out + "\n}\n";
}

}  // namespace mailrepl::tools
