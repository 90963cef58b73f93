// File: replicad/hooks.h
//
// The operator's promote and demote hooks (replicad.conf promote_hook,
// demote_hook): commands run when a slot starts or stops being the master
// that holds its store's service addresses, for example to add or remove
// the address on an interface and announce it with a gratuitous ARP, as
// linux-ha's IPaddr2 does (etc/hooks/service-ip is one). A hook runs as
//
//   HOOK promote|demote STORE SLOT SERVICE_LMTP SERVICE_API
//
// with the same values in MAILREPL_EVENT, MAILREPL_STORE, MAILREPL_SLOT,
// MAILREPL_SERVICE_LMTP and MAILREPL_SERVICE_API (an address is "" when
// the store has none), stdout and stderr inherited (replicad's log). It
// must finish within the timeout (then it is killed and counts as failed).
// A demote hook that fails aborts the planned failover that fenced the
// slot (SlotStatus.fence_error); a failing promote hook is logged.
//
// Thread-safe: Run() may be awaited from any executor; the child runs on a
// worker of the host's pool (or a thread of the hooks' own), one hook at a
// time in the order asked, as on the single thread hooks had before.
#ifndef MAILREPL_REPLICAD_HOOKS_H_
#define MAILREPL_REPLICAD_HOOKS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio.hpp"

namespace mailrepl::replicad {

class HostPool;
class WorkGate;

struct HookEvent {
  std::string event;  // "promote" or "demote"
  uint64_t store_id = 0;
  uint64_t slot_id = 0;
  std::string service_lmtp;
  std::string service_api;
};

class Hooks {
 public:
  // pool: where the hooks run (replicad: the host pool); unset: a thread
  // of their own.
  Hooks(std::string promote, std::string demote, absl::Duration timeout = absl::Seconds(30),
        std::optional<asio::any_io_executor> pool = std::nullopt);
  ~Hooks();
  Hooks(const Hooks&) = delete;
  Hooks& operator=(const Hooks&) = delete;

  // OK when no hook is configured for the event, or it exited 0.
  asio::awaitable<absl::Status> Run(HookEvent event);
  // The same, blocking the calling thread.
  absl::Status RunBlocking(const HookEvent& event);

 private:
  const std::string promote_;
  const std::string demote_;
  const absl::Duration timeout_;
  std::unique_ptr<HostPool> own_pool_;  // without a pool given
  std::unique_ptr<WorkGate> serial_;    // one hook at a time, in order
};

}  // namespace mailrepl::replicad

#endif  // MAILREPL_REPLICAD_HOOKS_H_
