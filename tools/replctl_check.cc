#include "tools/replctl_check.h"

#include <cstdio>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "proto/api.pb.h"
#include "rpc/rpc_client.h"
#include "tools/replctl_commands.h"

namespace mailrepl::tools {
namespace {

std::string SlotName(const coordpb::StoreStatus& store, uint64_t slot_id) {
  for (const coordpb::SlotInfo& m : store.store().members()) {
    if (m.slot_id() == slot_id) return absl::StrCat("slot ", slot_id, "@", m.host());
  }
  return absl::StrCat("slot ", slot_id);
}

// "5,6,9-12": UIDs in runs, at most `limit` runs (then "...").
std::string Uids(const google::protobuf::RepeatedField<uint32_t>& uids, size_t limit = 8) {
  std::vector<uint32_t> v(uids.begin(), uids.end());
  std::sort(v.begin(), v.end());
  std::vector<std::string> runs;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (runs.size() == limit) {
      runs.push_back("...");
      break;
    }
    runs.push_back(j == i ? absl::StrCat(v[i]) : absl::StrCat(v[i], "-", v[j]));
    i = j + 1;
  }
  return absl::StrJoin(runs, ",");
}

std::string Describe(const checkpb::MailboxDifference& d) {
  std::vector<std::string> parts;
  if (d.kind() == "missing on replica" || d.kind() == "not on master") return d.kind();
  if (!d.detail().empty()) parts.push_back(d.detail());
  if (d.missing_uids_size() > 0) {
    parts.push_back(absl::StrCat("missing UIDs ", Uids(d.missing_uids())));
  }
  if (d.extra_uids_size() > 0) parts.push_back(absl::StrCat("extra UIDs ", Uids(d.extra_uids())));
  if (d.flag_uids_size() > 0) {
    parts.push_back(absl::StrCat("flags differ on UIDs ", Uids(d.flag_uids())));
  }
  if (d.body_uids_size() > 0) {
    parts.push_back(absl::StrCat("body missing or damaged for UIDs ", Uids(d.body_uids())));
  }
  return absl::StrJoin(parts, "; ");
}

struct Outcome {
  uint64_t store_id = 0;
  checkpb::StoreCheck check;
  std::string error;   // could not check
  std::string result;
  std::string text;    // what is printed
};

}  // namespace

std::string CheckResult(const checkpb::StoreCheck& check, bool repair) {
  bool found = check.master_problems_size() > 0;
  bool clean_after = true;
  for (const checkpb::ReplicaCheck& r : check.replicas()) {
    if (!r.error().empty()) return "unchecked";
    const bool differs = r.differences_size() > 0 || r.problems_size() > 0;
    found |= differs;
    if (differs && !(repair && r.clean_after_repair() && r.repair_failed_size() == 0 &&
                     r.repaired() == static_cast<uint32_t>(r.differences_size()))) {
      clean_after = false;
    }
  }
  if (!found) return "consistent";
  if (repair && clean_after && check.master_problems_size() == 0) return "repaired";
  return "differs";
}

std::string FormatCheck(const checkpb::StoreCheck& check, const std::string& result,
                        const coordpb::StoreStatus& store) {
  std::string out;
  std::vector<std::string> replica_words;
  size_t differing = 0;
  for (const checkpb::ReplicaCheck& r : check.replicas()) {
    const std::string who = SlotName(store, r.slot_id());
    if (!r.error().empty()) {
      replica_words.push_back(absl::StrCat(who, ": not checked: ", r.error()));
      continue;
    }
    const size_t n = r.differences_size() + r.problems_size();
    differing += r.differences_size();
    std::string words = absl::StrCat(who, " at LSN ", r.lsn(), ": ");
    if (n == 0) {
      absl::StrAppend(&words, "same");
    } else {
      absl::StrAppend(&words, r.differences_size(), " mailbox(es) differ");
      if (r.problems_size() > 0) absl::StrAppend(&words, ", ", r.problems_size(), " problem(s)");
      if (r.repaired() > 0 || r.repair_failed_size() > 0) {
        absl::StrAppend(&words, ", ", r.repaired(), " repaired",
                        r.repair_failed_size() > 0
                            ? absl::StrCat(", ", r.repair_failed_size(), " NOT repaired")
                            : "",
                        r.clean_after_repair() ? ", clean on re-check" : ", NOT clean on re-check");
      }
    }
    replica_words.push_back(std::move(words));
  }
  std::string upper = result;
  if (result == "differs" || result == "unchecked") {
    for (char& c : upper) c = static_cast<char>(std::toupper(c));
  }
  absl::StrAppendFormat(&out, "store %d: %s%s (master %s; %s; %d mailboxes, %d messages%s, %.2fs)\n",
                        check.store_id(), upper, check.deep() ? " (deep)" : "",
                        SlotName(store, check.master_slot_id()),
                        absl::StrJoin(replica_words, "; "), check.mailboxes(), check.messages(),
                        check.deep() ? absl::StrFormat(", %.1f MB hashed",
                                                       check.bytes_hashed() / 1e6)
                                     : "",
                        check.seconds());
  for (const std::string& p : check.master_problems()) {
    absl::StrAppend(&out, "  master ", SlotName(store, check.master_slot_id()), ": problem: ", p,
                    "\n");
  }
  for (const checkpb::ReplicaCheck& r : check.replicas()) {
    const std::string who = SlotName(store, r.slot_id());
    for (const checkpb::MailboxDifference& d : r.differences()) {
      absl::StrAppend(&out, "  ", who, ": mailbox ", d.name(), " (", d.mailbox_id(), "): ",
                      Describe(d), "\n");
    }
    for (const std::string& p : r.problems()) {
      absl::StrAppend(&out, "  ", who, ": problem: ", p, "\n");
    }
    for (const std::string& f : r.repair_failed()) {
      absl::StrAppend(&out, "  ", who, ": repair failed: ", f, "\n");
    }
  }
  (void)differing;
  return out;
}

int RunCheck(const CheckOptions& options,
             const std::function<absl::StatusOr<coordpb::Response>(const coordpb::Request&)>& call,
             const std::string& secret) {
  coordpb::Request status_request;
  status_request.mutable_get_status();
  absl::StatusOr<coordpb::Response> status = call(status_request);
  if (!status.ok()) {
    std::fprintf(stderr, "replctl: %s\n", std::string(status.status().message()).c_str());
    return 2;
  }
  // The chosen stores, in id order.
  std::vector<const coordpb::StoreStatus*> chosen;
  std::set<uint64_t> wanted(options.stores.begin(), options.stores.end());
  for (const coordpb::StoreStatus& st : status->get_status().stores()) {
    bool on_host = false;
    for (const coordpb::SlotInfo& m : st.store().members()) on_host |= m.host() == options.host;
    if (options.all || wanted.erase(st.store().store_id()) > 0 ||
        (!options.host.empty() && on_host)) {
      chosen.push_back(&st);
    }
  }
  if (!wanted.empty()) {
    std::fprintf(stderr, "replctl: no store %s in the coordinator\n",
                 absl::StrJoin(wanted, ", ").c_str());
    return 2;
  }
  if (chosen.empty()) {
    std::fprintf(stderr, "replctl: no store to check%s\n",
                 options.host.empty() ? "" : (" has a slot on host " + options.host).c_str());
    return 2;
  }

  std::vector<Outcome> outcomes;
  int worst = 0;
  for (size_t i = 0; i < chosen.size(); ++i) {
    const coordpb::StoreStatus& st = *chosen[i];
    Outcome o;
    o.store_id = st.store().store_id();
    if (options.progress) {
      std::fprintf(stderr, "\rchecking store %llu (%zu of %zu)...",
                   static_cast<unsigned long long>(o.store_id), i + 1, chosen.size());
      std::fflush(stderr);
    }
    std::string master_api;
    for (const coordpb::SlotInfo& m : st.store().members()) {
      if (m.slot_id() == st.store().master_slot_id()) master_api = m.api_address();
    }
    if (st.state() == "down" || st.state() == "switching" || st.state() == "fenced") {
      o.error = absl::StrCat("the store is ", st.state());
    } else if (st.lag_records() > options.max_lag_records) {
      o.error = absl::StrCat("a replica lags ", st.lag_records(), " records (more than --max-lag ",
                             options.max_lag_records, ")");
    } else if (master_api.empty()) {
      o.error = "the coordinator knows no API address for the master";
    } else {
      apipb::Request request;
      request.mutable_check_store()->set_deep(options.deep);
      request.mutable_check_store()->set_repair(options.repair);
      request.mutable_check_store()->set_max_bytes_per_second(options.max_rate_mb * 1e6);
      absl::StatusOr<apipb::Response> r = rpc::CallOnce<apipb::Response>(
          {.address = master_api, .service = "api", .secret = secret, .client = "replctl check"},
          request, options.deep ? absl::Hours(24) : absl::Hours(1));
      if (!r.ok()) {
        o.error = absl::StrCat("master ", SlotName(st, st.store().master_slot_id()), " at ",
                               master_api, ": ", r.status().message());
      } else {
        o.check = r->check();
      }
    }
    if (!o.error.empty()) {
      o.result = "unchecked";
      o.text = absl::StrCat("store ", o.store_id, ": UNCHECKED: ", o.error, "\n");
    } else {
      o.result = CheckResult(o.check, options.repair);
      o.text = FormatCheck(o.check, o.result, st);
      if (o.result == "unchecked") {
        // A replica could not be checked: say which in the summary.
        o.error = "a replica could not be checked";
      }
    }
    worst = std::max(worst, o.result == "unchecked"  ? 2
                            : o.result == "differs" ? 1
                                                    : 0);
    // Recorded as it happens, so an interrupted run keeps what it found.
    coordpb::Request record;
    coordpb::RecordCheck* rc = record.mutable_record_check();
    rc->set_store_id(o.store_id);
    rc->set_result(o.result);
    rc->set_summary(o.text.substr(0, o.text.find('\n')));
    rc->set_deep(options.deep);
    absl::StatusOr<coordpb::Response> recorded = call(record);
    if (!recorded.ok()) {
      std::fprintf(stderr, "%sreplctl: could not record the check of store %llu: %s\n",
                   options.progress ? "\n" : "", static_cast<unsigned long long>(o.store_id),
                   std::string(recorded.status().message()).c_str());
    }
    if (!options.json) {
      if (options.progress) std::fputs("\r\033[K", stderr);
      std::fputs(o.text.c_str(), stdout);
      std::fflush(stdout);
    }
    outcomes.push_back(std::move(o));
  }
  if (options.progress) std::fputs("\r\033[K", stderr);
  if (options.json) {
    std::string out = "{\"stores\": [";
    for (size_t i = 0; i < outcomes.size(); ++i) {
      const Outcome& o = outcomes[i];
      absl::StrAppend(&out, i ? ",\n  " : "\n  ", "{\"store_id\": ", o.store_id,
                      ", \"result\": \"", o.result, "\"");
      if (!o.error.empty()) {
        // The error text is ours; quotes and backslashes are escaped.
        std::string e;
        for (char c : o.error) {
          if (c == '"' || c == '\\') e.push_back('\\');
          e.push_back(c == '\n' ? ' ' : c);
        }
        absl::StrAppend(&out, ", \"error\": \"", e, "\"");
      }
      std::string check = ToJson(o.check);
      while (!check.empty() && check.back() == '\n') check.pop_back();
      absl::StrAppend(&out, ", \"check\": ", check, "}");
    }
    absl::StrAppend(&out, "\n], \"exit\": ", worst, "}\n");
    std::fputs(out.c_str(), stdout);
  }
  return worst;
}

}  // namespace mailrepl::tools
