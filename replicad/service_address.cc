#include "replicad/service_address.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/log_exceptions.h"

namespace mailrepl::replicad {

ServiceAddresses::ServiceAddresses(asio::io_context& io, lmtp::LmtpBackend& backend,
                                   rpc::RpcHandler api, std::string secret, std::string hostname,
                                   uint64_t slot_id)
    : io_(io),
      backend_(backend),
      api_handler_(std::move(api)),
      secret_(std::move(secret)),
      hostname_(std::move(hostname)),
      slot_id_(slot_id) {}

ServiceAddresses::~ServiceAddresses() {
  *alive_ = false;
  Release();
}

bool ServiceAddresses::settled() const {
  if (!hold_) return !lmtp_ && !api_;
  return (want_lmtp_.empty() || lmtp_) && (want_api_.empty() || api_);
}

void ServiceAddresses::Want(bool hold, const std::string& lmtp, const std::string& api) {
  if (stopped_) return;
  hold = hold && (!lmtp.empty() || !api.empty());
  const bool changed = hold != hold_ || lmtp != want_lmtp_ || api != want_api_;
  if (!changed) return;
  hold_ = hold;
  want_lmtp_ = lmtp;
  want_api_ = api;
  // A changed address is released before the new one is bound.
  if (!hold_ || (lmtp_ && lmtp_address_ != want_lmtp_) || (api_ && api_address_ != want_api_)) {
    Release();
  }
  if (hold_) TryBind();
}

void ServiceAddresses::Stop() {
  stopped_ = true;
  hold_ = false;
  Release();
}

void ServiceAddresses::Release() {
  if (lmtp_) {
    LogLine(Severity::kInfo, "service address released",
            Kv("slot", slot_id_) + Kv("lmtp", lmtp_address_));
    lmtp_->Stop();  // Run() ends once its connections have; the completion keeps it alive
    lmtp_.reset();
  }
  if (api_) {
    LogLine(Severity::kInfo, "service address released",
            Kv("slot", slot_id_) + Kv("api", api_address_));
    api_->Stop();
    api_.reset();
  }
}

void ServiceAddresses::BindMissing() {
  if (!lmtp_ && !want_lmtp_.empty()) {
    auto server = std::make_shared<lmtp::LmtpServer>(
        io_, backend_,
        lmtp::LmtpServerOptions{.listen = want_lmtp_, .free_bind = true, .hostname = hostname_});
    if (absl::Status s = server->Listen(); s.ok()) {
      lmtp_ = server;
      lmtp_address_ = want_lmtp_;
      ++*running_;
      asio::co_spawn(io_, server->Run(),
                     [server, running = running_](std::exception_ptr) { --*running; });
      LogLine(Severity::kInfo, "service address bound",
              Kv("slot", slot_id_) + Kv("lmtp", lmtp_address_));
    }
  }
  if (!api_ && !want_api_.empty()) {
    auto server = std::make_shared<rpc::RpcServer>(
        io_,
        rpc::RpcServerOptions{
            .listen = want_api_, .service = "api", .secret = secret_, .free_bind = true},
        api_handler_);
    if (absl::Status s = server->Listen(); s.ok()) {
      api_ = server;
      api_address_ = want_api_;
      ++*running_;
      asio::co_spawn(io_, server->Run(),
                     [server, running = running_](std::exception_ptr) { --*running; });
      LogLine(Severity::kInfo, "service address bound",
              Kv("slot", slot_id_) + Kv("api", api_address_));
    }
  }
}

void ServiceAddresses::TryBind() {
  BindMissing();
  if (!settled() && !retrying_) {
    retrying_ = true;
    asio::co_spawn(io_, RetryLoop(), LogExceptions("service address retry"));
  }
}

asio::awaitable<void> ServiceAddresses::RetryLoop() {
  // Holds alive_, not this: the object may be gone when the timer fires.
  std::shared_ptr<bool> alive = alive_;
  asio::steady_timer timer(io_);
  bool logged = false;
  for (;;) {
    timer.expires_after(std::chrono::milliseconds(100));
    asio::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!*alive) co_return;
    if (stopped_ || settled()) break;
    if (!logged) {
      LogLine(Severity::kInfo, "service address still taken; retrying every 100 ms",
              Kv("slot", slot_id_) + Kv("lmtp", want_lmtp_) + Kv("api", want_api_));
      logged = true;
    }
    BindMissing();
  }
  retrying_ = false;
}

}  // namespace mailrepl::replicad
