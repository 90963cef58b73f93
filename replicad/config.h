// File: replicad/config.h
//
// replicad's configuration file: a configpb::ReplicadConfig in protobuf
// text format (docs/operations.md "replicad.conf", example in
// etc/replicad.conf), read and checked once at start.
#ifndef MAILREPL_REPLICAD_CONFIG_H_
#define MAILREPL_REPLICAD_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "proto/config.pb.h"

namespace mailrepl::replicad {

// Parses and validates the file; fills defaults (meta = DATA/meta, spool =
// DATA/spool, lmtp_threads 16, sync_timeout_ms 5000, state_dir required).
// kInvalidArgument naming the file and the field for anything wrong: a
// parse error (with line and column), no host, no coordinator, a slot
// without id, data path or any of its three listen addresses, two slots
// with one id or one address, a relative path.
absl::StatusOr<configpb::ReplicadConfig> LoadReplicadConfig(const std::string& path);

// LoadReplicadConfig on the file's text, read already (origin names it in
// the errors).
absl::StatusOr<configpb::ReplicadConfig> ParseReplicadConfig(const std::string& text,
                                                             const std::string& origin);

// The same checks on a config already parsed (for tests and tools that
// write configs: replctl dev-cluster).
absl::Status ValidateReplicadConfig(configpb::ReplicadConfig& config, const std::string& origin);

}  // namespace mailrepl::replicad

#endif  // MAILREPL_REPLICAD_CONFIG_H_
