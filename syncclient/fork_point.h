// Where two copies of a store's log stop agreeing, from their epoch
// histories (epoch -> first LSN) and last LSNs, in one exchange, as with
// PostgreSQL timelines or Raft terms. Thread-safe: pure functions.
#ifndef MAILREPL_SYNCCLIENT_FORK_POINT_H_
#define MAILREPL_SYNCCLIENT_FORK_POINT_H_

#include <cstdint>
#include <vector>

#include "store/types.h"

namespace mailrepl::sync {

struct LogPosition {
  uint64_t last_lsn = 0;
  std::vector<EpochStart>
      history;  // ascending epochs; records before the first are epoch 0
};

// The last LSN that both logs hold with the same epoch: every record up to
// it is the same record on both sides (records are only ever written by the
// one master of their epoch). A replica whose last_lsn is above the fork
// point holds records the master does not: it has diverged.
uint64_t ForkPoint(const LogPosition& master, const LogPosition& replica);

}  // namespace mailrepl::sync

#endif  // MAILREPL_SYNCCLIENT_FORK_POINT_H_
