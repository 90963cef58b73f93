// File: tools/replctl_check.h
//
// `replctl check`: for each chosen store, ask its master's replicad (client
// API, CheckStore) to compare itself with every replica at a common LSN,
// print one line per store (and one indented line per differing mailbox),
// record the outcome in the coordinator (replctl status shows it), and
// answer with a Nagios exit code: 0 consistent (or repaired and clean on
// the re-check), 1 differences found, 2 some store could not be checked.
// docs/operations.md "Consistency checks".
#ifndef MAILREPL_TOOLS_REPLCTL_CHECK_H_
#define MAILREPL_TOOLS_REPLCTL_CHECK_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/check.pb.h"
#include "proto/coord.pb.h"

namespace mailrepl::tools {

struct CheckOptions {
  std::vector<uint64_t> stores;  // these stores,
  std::string host;              // or every store with a slot on this host,
  bool all = false;              // or every store
  bool deep = false;
  bool repair = false;
  double max_rate_mb = 0;        // --deep body reads per side, MB/s; 0: unthrottled
  uint64_t max_lag_records = 100000;  // a replica further behind is not checked
  bool json = false;
  bool progress = false;         // "store n of N" on stderr (stdout is a terminal)
};

// "consistent", "differs", "repaired" or "unchecked" (error non-empty).
std::string CheckResult(const checkpb::StoreCheck& check, bool repair);

// The line printed for one store, then one indented line per difference.
std::string FormatCheck(const checkpb::StoreCheck& check, const std::string& result,
                        const coordpb::StoreStatus& store);

// Runs the whole command; returns the exit code. call() reaches the
// coordinator; secret authenticates to the masters' client API.
int RunCheck(const CheckOptions& options,
             const std::function<absl::StatusOr<coordpb::Response>(const coordpb::Request&)>& call,
             const std::string& secret);

}  // namespace mailrepl::tools

#endif  // MAILREPL_TOOLS_REPLCTL_CHECK_H_
