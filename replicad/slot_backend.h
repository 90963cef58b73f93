// File: replicad/slot_backend.h
//
// LmtpBackend on one Slot: recipients are users of the slot, messages are
// appended on a thread pool (Slot::Append blocks until its record is
// fsync'd, and concurrent appends share one fsync, so deliveries from many
// connections must run concurrently to be fast).
//
// Addressing (the domain is ignored: one slot serves one mail domain):
//   user@domain         -> "user/USER" (the INBOX)
//   user+folder@domain  -> "user/USER/folder" if that mailbox exists (exact
//                          name, else the folder name in lower case), else
//                          the INBOX (as Cyrus does for plus addresses)
// USER is the local part before any '+', in lower case. Without a directory
// (see the options), a user without an INBOX in the slot is unknown
// (550 5.1.1) and nothing is ever created; with one, the directory decides.
//
// Slot errors become replies: kOutOfRange -> 552 5.3.4; kResourceExhausted
// "over quota" -> 452 4.2.2, other kResourceExhausted (disk full) ->
// 452 4.3.1; anything else -> 451 4.3.0 with the store's message. A message
// to several recipients is appended once per recipient; the store keeps one
// body per GUID.
//
// The optional gate is asked at RCPT time and again before each delivery;
// when it returns a reply, that reply answers every recipient (replicad uses
// it to answer 4xx on a fenced or replica slot, naming the master).
//
// Blocking: the appends run on a worker (options.work, the host's pool
// through the slot's WorkGate, or a pool of `threads` of the backend's
// own). CheckRecipient() runs on the io thread and, with a directory, never
// touches the slot (the INBOX is looked up at delivery, on the worker);
// without one (lmtpd) it reads the slot's index to tell a known user.
//
// Thread-safe: CheckRecipient() and Deliver() may be called from any thread,
// concurrently. The gate is called from the io thread and from pool threads.
//
// Example:
//   SlotBackend backend(*slot, {.threads = 16});
//   LmtpServer server(io, backend, {.listen = "127.0.0.1:24"});
#ifndef MAILREPL_REPLICAD_SLOT_BACKEND_H_
#define MAILREPL_REPLICAD_SLOT_BACKEND_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "replicad/lmtp_backend.h"
#include "store/slot.h"

namespace mailrepl::replicad {
class HostPool;
class WorkGate;
}  // namespace mailrepl::replicad

namespace mailrepl::lmtp {

struct SlotBackendOptions {
  // Without `work`: appends in flight at once, on a pool of this many
  // threads of the backend's own; each blocks a thread for about one fsync.
  int threads = 16;
  // Where the appends run (replicad: the host pool, bounded per slot).
  // Must outlive the backend. Unset: a pool of `threads` of its own.
  replicad::WorkGate* work = nullptr;
  // If set and it returns a reply, that reply answers every recipient.
  std::function<std::optional<LmtpReply>()> gate;
  // If set, asked where USER lives: nullopt means in this slot's store (the
  // INBOX is created at the first delivery if missing, as Cyrus's
  // autocreate does); a reply refuses the recipient (4xx for a user of
  // another store, 550 for an unknown one). Unset: a user is known iff the
  // INBOX exists.
  std::function<std::optional<LmtpReply>(const std::string& user)> directory;
  // If set, called on a pool thread after each successful append with its
  // LSN; a reply replaces the 250 (sync durability: wait until a replica
  // has it, 451 on timeout).
  std::function<std::optional<LmtpReply>(uint64_t lsn)> after_append;
  // If set, called (on a worker) whenever Busy() drops to 0.
  std::function<void()> on_idle;
};

struct SlotBackendStats {
  uint64_t appended = 0;  // successful appends (one per recipient)
  uint64_t failed = 0;    // appends that returned an error
};

class SlotBackend : public LmtpBackend {
 public:
  // slot must outlive the backend.
  SlotBackend(Slot& slot, SlotBackendOptions options);
  // With a pool of its own: waits for appends still running on it.
  ~SlotBackend() override;
  SlotBackend(const SlotBackend&) = delete;
  SlotBackend& operator=(const SlotBackend&) = delete;

  LmtpReply CheckRecipient(const std::string& address) override;
  asio::awaitable<std::vector<LmtpReply>> Deliver(const std::string& from,
                                                  const std::vector<std::string>& recipients,
                                                  std::string message) override;
  SlotBackendStats stats() const { return {appended_.load(), failed_.load()}; }
  // Deliveries between their gate check and their last append. Once the
  // gate refuses (a fence), Busy() turning 0 means every delivery it let
  // through is durable.
  int Busy() const { return busy_.load(); }

  // The reply for a failed Slot::Append (exposed for tests).
  static LmtpReply ReplyForAppendError(const absl::Status& status);

 private:
  // Where a recipient's mail goes: the mailbox name, or the refusal.
  struct Target {
    std::string mailbox;
    std::string inbox;  // the fallback if `mailbox` (a folder) disappears
    bool create_inbox = false;  // the directory says the user is ours; no INBOX yet
    std::optional<LmtpReply> refusal;
  };
  // read_slot false (RCPT, on the io thread): without a directory the
  // INBOX is looked up anyway (lmtpd); with one the slot is not read.
  Target Resolve(const std::string& address, bool read_slot);
  // Blocking: appends message for every recipient.
  std::vector<LmtpReply> DeliverNow(const std::vector<std::string>& recipients,
                                    const std::string& message);

  Slot& slot_;
  SlotBackendOptions options_;
  std::unique_ptr<replicad::HostPool> own_pool_;  // without options.work
  std::unique_ptr<replicad::WorkGate> own_work_;
  replicad::WorkGate* work_;
  std::atomic<uint64_t> appended_{0};
  std::atomic<uint64_t> failed_{0};
  std::atomic<int> busy_{0};
};

}  // namespace mailrepl::lmtp

#endif  // MAILREPL_REPLICAD_SLOT_BACKEND_H_
