// File: replicad/service_address.h
//
// A store's service addresses (StoreInfo.service_lmtp / service_api) on
// the slot that is its master: an extra LMTP listener and an extra
// client-API listener, bound with IP_FREEBIND, serving the same backend
// and API as the slot's own addresses. The SlotHost says what it wants on
// every change (Want): the addresses while the slot is the master taking
// writes, none when it is fenced, demoted or stopping. Releasing is
// immediate (the listeners close; open connections wind down and meet the
// write gate); binding retries every 100 ms while the address is still
// taken (on a planned failover the old master releases it when fenced,
// before the switch, but the new master may ask first). Mail then follows
// the master without an MTA change (docs/operations.md "Service addresses").
//
// Thread-compatible: every call on the io_context's thread.
#ifndef MAILREPL_REPLICAD_SERVICE_ADDRESS_H_
#define MAILREPL_REPLICAD_SERVICE_ADDRESS_H_

#include <memory>
#include <string>

#include "asio.hpp"
#include "replicad/lmtp_backend.h"
#include "replicad/lmtp_server.h"
#include "rpc/rpc_server.h"

namespace mailrepl::replicad {

class ServiceAddresses {
 public:
  // io, backend and the handler's target must outlive this object.
  ServiceAddresses(asio::io_context& io, lmtp::LmtpBackend& backend, rpc::RpcHandler api,
                   std::string secret, std::string hostname, uint64_t slot_id);
  ~ServiceAddresses();
  ServiceAddresses(const ServiceAddresses&) = delete;
  ServiceAddresses& operator=(const ServiceAddresses&) = delete;

  // Hold exactly these addresses (empty: none of that kind) when `hold`,
  // none otherwise.
  void Want(bool hold, const std::string& lmtp, const std::string& api);
  // Releases everything for good.
  void Stop();
  // Both wanted addresses are bound (or none is wanted).
  bool settled() const;
  // Listeners whose Run() has not ended yet (released ones included).
  int running() const { return *running_; }
  std::string lmtp_held() const { return lmtp_ ? lmtp_address_ : ""; }
  std::string api_held() const { return api_ ? api_address_ : ""; }

 private:
  void Release();
  void BindMissing();  // binds what is wanted and not bound yet
  void TryBind();      // BindMissing, and retry until settled
  asio::awaitable<void> RetryLoop();

  asio::io_context& io_;
  lmtp::LmtpBackend& backend_;
  rpc::RpcHandler api_handler_;
  const std::string secret_;
  const std::string hostname_;
  const uint64_t slot_id_;
  bool hold_ = false;
  bool stopped_ = false;
  bool retrying_ = false;
  std::string want_lmtp_, want_api_;
  std::string lmtp_address_, api_address_;
  std::shared_ptr<lmtp::LmtpServer> lmtp_;
  std::shared_ptr<rpc::RpcServer> api_;
  std::shared_ptr<int> running_ = std::make_shared<int>(0);
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace mailrepl::replicad

#endif  // MAILREPL_REPLICAD_SERVICE_ADDRESS_H_
