// File: replicad/lmtp_backend.h
//
// What the LMTP front end (lmtp_server.h) asks of the store behind it: may a
// recipient be delivered here, and deliver one message to its accepted
// recipients. SlotBackend (slot_backend.h) implements it on one Slot; tests
// may implement it in memory.
//
// Thread-safety: the server calls CheckRecipient() and Deliver() from its
// io_context thread; several Deliver() calls (one per connection) may be in
// flight at once, so an implementation must allow that. Deliver() should run
// blocking work elsewhere (a thread pool) and resume on the caller's
// executor, so one slow fsync never stalls the other connections.
#ifndef MAILREPL_REPLICAD_LMTP_BACKEND_H_
#define MAILREPL_REPLICAD_LMTP_BACKEND_H_

#include <string>
#include <vector>

#include "asio/awaitable.hpp"
#include "replicad/lmtp_reply.h"

namespace mailrepl::lmtp {

class LmtpBackend {
 public:
  virtual ~LmtpBackend() = default;

  // At RCPT TO time: 250 if the recipient may be delivered here, else the
  // reply to send (550 5.1.1 unknown user, 4xx when temporarily refused).
  // Called on the io thread: must be quick and must not block on disk.
  virtual LmtpReply CheckRecipient(const std::string& address) = 0;

  // After DATA: one reply per recipient, in the order given (RFC 2033).
  // A 250 only once the message is durable for that recipient. `from` is
  // the reverse path ("" for the null sender), `message` the exact bytes to
  // store. The references stay valid until the returned awaitable ends.
  virtual asio::awaitable<std::vector<LmtpReply>> Deliver(
      const std::string& from, const std::vector<std::string>& recipients,
      std::string message) = 0;
};

}  // namespace mailrepl::lmtp

#endif  // MAILREPL_REPLICAD_LMTP_BACKEND_H_
