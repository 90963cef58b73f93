#include "replicad/slot_listeners.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/log_exceptions.h"
#include "common/status_macros.h"
#include "replicad/api_service.h"
#include "replicad/lmtp_server.h"
#include "replicad/slot_backend.h"
#include "syncclient/sync_server.h"

namespace mailrepl::replicad {

SlotListeners::SlotListeners(asio::io_context& io, const configpb::SlotConfig& config,
                             std::string secret, Slot& slot, WorkGate& work,
                             SlotListenerHooks hooks)
    : io_(io), config_(config), secret_(std::move(secret)) {
  backend_ = std::make_unique<lmtp::SlotBackend>(
      slot, lmtp::SlotBackendOptions{.work = &work,
                                     .gate = std::move(hooks.lmtp_gate),
                                     .directory = std::move(hooks.directory),
                                     .after_append = std::move(hooks.lmtp_after_append),
                                     .on_idle = std::move(hooks.on_lmtp_idle)});
  lmtp_ = std::make_unique<lmtp::LmtpServer>(
      io_, *backend_,
      lmtp::LmtpServerOptions{.listen = config_.lmtp_listen(),
                              .hostname = absl::StrCat("slot", config_.slot_id())});
  api_ = std::make_unique<api::ApiService>(
      slot, api::ApiServiceOptions{.work = &work,
                                   .check_write = std::move(hooks.check_write),
                                   .slot_state = std::move(hooks.slot_state),
                                   .await_durable = std::move(hooks.api_await_durable),
                                   .check_store = std::move(hooks.check_store)});
  api_server_ = std::make_unique<rpc::RpcServer>(
      io_, rpc::RpcServerOptions{.listen = config_.api_listen(), .service = "api",
                                 .secret = secret_},
      api_->Handler());
  sync::SyncServerOptions so{.listen = config_.sync_listen(),
                             .secret = secret_,
                             .admit = std::move(hooks.admit),
                             .on_diverged = std::move(hooks.on_diverged),
                             .vouch = std::move(hooks.vouch)};
  // SyncServerOptions.blocking is left unset for now: the sync server runs
  // its slot work on two threads of its own per slot. It is to take the
  // host pool (work.pool(), Replicad::blocking_executor()) once the sync
  // server waits for its jobs on that executor before it is destroyed (the
  // lead's part, syncclient/).
  sync_server_ = std::make_unique<sync::SyncServer>(io_, slot, std::move(so));
}

SlotListeners::~SlotListeners() {
  lmtp_.reset();
  backend_.reset();
  api_server_.reset();
  api_.reset();
  sync_server_.reset();
}

absl::Status SlotListeners::Listen() {
  RETURN_IF_ERROR(lmtp_->Listen());
  RETURN_IF_ERROR(api_server_->Listen());
  RETURN_IF_ERROR(sync_server_->Listen());
  return absl::OkStatus();
}

void SlotListeners::Run(std::function<void()> done) {
  auto ended = [done](std::exception_ptr e) {
    LogExceptions("slot listener")(e);
    done();
  };
  asio::co_spawn(io_, lmtp_->Run(), ended);
  asio::co_spawn(io_, api_server_->Run(), ended);
  asio::co_spawn(io_, sync_server_->Run(), ended);
  LogLine(Severity::kInfo, "slot serving",
          Kv("slot", config_.slot_id()) + Kv("lmtp", config_.lmtp_listen()) +
              Kv("api", config_.api_listen()) + Kv("sync", config_.sync_listen()));
}

void SlotListeners::Stop() {
  lmtp_->Stop();
  api_server_->Stop();
  sync_server_->Stop();
}

rpc::RpcHandler SlotListeners::api_handler() { return api_->Handler(); }

}  // namespace mailrepl::replicad
