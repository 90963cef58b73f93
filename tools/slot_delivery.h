// Delivering the standard workload (tools/workload.h) as fast as possible:
// a driver that hands message indices [start, start + count) to T threads
// (each takes the next index from an atomic counter) and times the run, and
// the sink that appends straight to a Slot. Used by `workload deliver` and by
// benchmarks. Other sinks (an LMTP client, later) plug into the same driver.
//
// Thread-safety: RunDelivery() creates one sink per thread with the factory
// (called from the calling thread, before any delivery starts); a sink is
// used by one thread only. The Slot given to the slot sink is thread-safe.
//
// Example:
//   ASSIGN_OR_RETURN(auto slot, Slot::Open(SlotPaths::Under(dir), {}));
//   DeliveryOptions o{.count = 1000, .threads = 4};
//   ASSIGN_OR_RETURN(DeliveryStats st, DeliverToSlot(*slot, o));
#ifndef MAILREPL_TOOLS_SLOT_DELIVERY_H_
#define MAILREPL_TOOLS_SLOT_DELIVERY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/slot.h"
#include "tools/workload.h"

namespace mailrepl {

struct DeliveryOptions {
  WorkloadOptions workload;  // seed, users, domain
  uint64_t start = 0;        // first message index
  uint64_t count = 10000;    // messages [start, start + count)
  int threads = 1;           // >= 1
};

struct DeliveryStats {
  uint64_t count = 0;  // messages delivered
  uint64_t bytes = 0;  // their total size
  double seconds = 0;  // wall time of the deliveries alone (no setup)
  int threads = 0;
  uint64_t last_lsn = 0;  // the slot's last LSN afterwards (slot deliveries)

  double msgs_per_s() const { return seconds > 0 ? count / seconds : 0; }
  double mb_per_s() const { return seconds > 0 ? bytes / 1e6 / seconds : 0; }
  // One JSON line: count, bytes, seconds, msgs_per_s, mb_per_s, threads,
  // last_lsn (MB = 10^6 bytes).
  std::string ToJson() const;
};

// Where one thread delivers messages. Deliver() returns once the message is
// durably accepted, or an error naming the message.
class DeliverySink {
 public:
  virtual ~DeliverySink() = default;
  virtual absl::Status Deliver(const WorkloadMessage& message) = 0;
};

using SinkFactory =
    std::function<absl::StatusOr<std::unique_ptr<DeliverySink>>()>;

// Returns "" if options are usable, else a description of the problem.
std::string DeliveryOptionsError(const DeliveryOptions& options);

// Delivers messages [start, start + count) through options.threads sinks.
// Stops at the first error (other threads finish their current message) and
// returns it. REQUIRES: DeliveryOptionsError(options) is empty.
absl::StatusOr<DeliveryStats> RunDelivery(const DeliveryOptions& options,
                                          const SinkFactory& make_sink);

// Creates the INBOX user/userN of every workload user that lacks one.
// Returns the number created.
absl::StatusOr<int> CreateWorkloadInboxes(Slot& slot, int users);

// A sink appending each message to its user's INBOX in slot, which must
// outlive the sink.
std::unique_ptr<DeliverySink> NewSlotSink(Slot& slot);

// CreateWorkloadInboxes + RunDelivery with slot sinks; sets last_lsn.
absl::StatusOr<DeliveryStats> DeliverToSlot(Slot& slot,
                                            const DeliveryOptions& options);

}  // namespace mailrepl

#endif  // MAILREPL_TOOLS_SLOT_DELIVERY_H_
