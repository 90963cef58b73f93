// The parts of SyncClient shared by its source files (sync_client.cc, the
// streaming and resync modes; sync_check.cc, the consistency check): one
// connection's state and the error for an unexpected frame. Internal.
#ifndef MAILREPL_SYNCCLIENT_SYNC_SESSION_H_
#define MAILREPL_SYNCCLIENT_SYNC_SESSION_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "asio.hpp"
#include "proto/sync.pb.h"
#include "store/slot.h"
#include "transport/framed_connection.h"
#include "syncclient/sync_client.h"

namespace mailrepl::sync {

// One connection's state.
struct SyncClient::Session {
  std::shared_ptr<FramedConnection> conn;
  uint64_t replica_last = 0;
  std::vector<EpochStart> replica_history;
  uint64_t next = 0;   // next LSN to send
  uint64_t acked = 0;  // replica has everything up to here
  struct InFlight {
    uint64_t last_lsn;
    size_t bytes;
    absl::Time sent;
  };
  std::deque<InFlight> in_flight;
  size_t in_flight_bytes = 0;
  int64_t last_heartbeat_ns = 0;  // BootNanos of the last heartbeat sent
  std::unique_ptr<asio::steady_timer> wake;
  bool check_capable = false;  // the server agreed to kCapabilityCheck
  uint64_t replica_slot = 0;
};

// The status for frame `f` arriving where `what` was expected from `peer`
// (an Error frame's own code and text; a newer epoch is noted in stats).
absl::Status Unexpected(const syncpb::Frame& f, const std::string& what, const std::string& peer,
                        SyncStats* stats);

}  // namespace mailrepl::sync

#endif  // MAILREPL_SYNCCLIENT_SYNC_SESSION_H_
