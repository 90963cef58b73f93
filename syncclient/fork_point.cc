#include "syncclient/fork_point.h"

#include <algorithm>

namespace mailrepl::sync {
namespace {

// The history with the implicit epoch 0 from LSN 1 made explicit.
std::vector<EpochStart> Normalized(const std::vector<EpochStart>& h) {
  std::vector<EpochStart> out;
  if (h.empty() || h.front().first_lsn > 1) out.push_back({0, 1});
  out.insert(out.end(), h.begin(), h.end());
  return out;
}

// Last LSN of epoch index i of a history on a log ending at last_lsn.
uint64_t EpochEnd(const std::vector<EpochStart>& h, size_t i,
                  uint64_t last_lsn) {
  return i + 1 < h.size() ? h[i + 1].first_lsn - 1 : last_lsn;
}

}  // namespace

uint64_t ForkPoint(const LogPosition& master, const LogPosition& replica) {
  const std::vector<EpochStart> m = Normalized(master.history);
  const std::vector<EpochStart> r = Normalized(replica.history);
  uint64_t fork = 0;
  for (size_t i = 0; i < m.size() && i < r.size(); ++i) {
    if (m[i].epoch != r[i].epoch || m[i].first_lsn != r[i].first_lsn) {
      // The epochs part here: they agree only on what came before both.
      uint64_t first = std::min(m[i].first_lsn, r[i].first_lsn);
      return std::min({fork, first - 1});
    }
    // Same epoch from the same LSN: agree up to where either one's ends.
    uint64_t end = std::min(EpochEnd(m, i, master.last_lsn),
                            EpochEnd(r, i, replica.last_lsn));
    if (end + 1 < m[i].first_lsn)
      return fork;  // neither holds a record of this epoch
    fork = std::max(fork, end);
    bool m_more = i + 1 < m.size();
    bool r_more = i + 1 < r.size();
    if (!m_more || !r_more) break;
  }
  return std::min({fork, master.last_lsn, replica.last_lsn});
}

}  // namespace mailrepl::sync
