// Constants and small helpers shared by both ends of the replication
// protocol (docs/protocol.md). Thread-safe: constants and pure functions.
#ifndef MAILREPL_SYNCCLIENT_PROTOCOL_H_
#define MAILREPL_SYNCCLIENT_PROTOCOL_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "proto/sync.pb.h"
#include "store/log_format.h"

namespace mailrepl::sync {

inline constexpr uint32_t kProtocolMajor = 1;
// This build's minor version. MAILREPL_PROTOCOL_MINOR in the environment
// overrides it, so tests can play a peer one minor version newer or older.
uint32_t ProtocolMinor();
inline constexpr char kCapabilityZstd[] = "zstd";
// The server answers ContentsRequest and VerifyRequest and honours
// DigestRequest.source (consistency checks, replctl check).
inline constexpr char kCapabilityCheck[] = "check";

// How long a side waits for the hello exchange, and for any frame once
// streaming (heartbeats arrive every kHeartbeatInterval when idle).
inline constexpr absl::Duration kHelloTimeout = absl::Seconds(10);
inline constexpr absl::Duration kHeartbeatInterval = absl::Seconds(1);
inline constexpr absl::Duration kDeadPeerTimeout = absl::Seconds(6);
// How long a server waits for the next frame of a session that owns a
// resync or check (the client compares between requests, silently).
inline constexpr absl::Duration kResyncPeerTimeout = absl::Seconds(120);

// The string both HMACs cover besides the challenges: binds the response to
// the store it is for.
std::string AuthContext(const std::string& cluster_id, uint64_t store_id);

syncpb::Version OurVersion();

syncpb::Record ToWire(const LogRecord& r);
LogRecord FromWire(const syncpb::Record& r);

syncpb::Frame ErrorFrame(syncpb::ErrorCode code, const std::string& message);

}  // namespace mailrepl::sync

#endif  // MAILREPL_SYNCCLIENT_PROTOCOL_H_
