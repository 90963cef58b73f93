// File: tools/replctl_commands.h
//
// replctl's cluster commands that talk to coordinatord: status, history,
// lookup, and the topology calls (create-store, assign-users,
// set-durability). Each returns the text to print (or JSON with --json).
#ifndef MAILREPL_TOOLS_REPLCTL_COMMANDS_H_
#define MAILREPL_TOOLS_REPLCTL_COMMANDS_H_

#include <string>

#include "proto/coord.pb.h"

namespace mailrepl::tools {

// `replctl status`: every store (master slot@host, replicas, epoch,
// durability, state, lag, users, last check: "ok 3h ago", "DIFFERS 5m ago",
// "never"), then per host how many masters and replicas it holds and
// whether it is alive, then the stores per state and per last check result.
std::string FormatStatus(const coordpb::GetStatusReply& status);
// `replctl promote` (without --json): the switch, the wait, and what may
// be lost, never as an empty range: "store 1: slot 1@host1 -> 3@host2,
// epoch 2, after waiting 7000 ms (took 7020 ms); may be lost: LSNs past 183
// that the old master slot 1@host1 wrote; its last report (LSN 123, 12.3 s
// before the promotion began) is older than the new master's, so how many
// is unknown; they are salvaged when it returns (in the background)".
std::string FormatPromote(const coordpb::PromoteReply& reply);
// `replctl history`: one line per event, oldest first.
std::string FormatHistory(const coordpb::GetHistoryReply& history);
// Any message as JSON (snake_case field names), for --json.
std::string ToJson(const google::protobuf::Message& message);

}  // namespace mailrepl::tools

#endif  // MAILREPL_TOOLS_REPLCTL_COMMANDS_H_
