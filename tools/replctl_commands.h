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
// `replctl history`: one line per event, oldest first.
std::string FormatHistory(const coordpb::GetHistoryReply& history);
// Any message as JSON (snake_case field names), for --json.
std::string ToJson(const google::protobuf::Message& message);

}  // namespace mailrepl::tools

#endif  // MAILREPL_TOOLS_REPLCTL_COMMANDS_H_
