#include "replicad/slot_host.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/log.h"
#include "replicad/api_service.h"
#include "replicad/lmtp_server.h"
#include "replicad/salvager.h"
#include "replicad/slot_backend.h"
#include "rpc/rpc_server.h"
#include "store/salvage_file.h"
#include "syncclient/sync_client.h"
#include "syncclient/sync_server.h"

namespace mailrepl::replicad {

using asio::awaitable;
using lmtp::LmtpReply;

namespace {

std::string RoleName(coordpb::Role role) {
  switch (role) {
    case coordpb::MASTER:
      return "master";
    case coordpb::REPLICA:
      return "replica";
    default:
      return "none";
  }
}

}  // namespace

// A rolling sync client towards one replica, and what it last reported.
struct SlotHost::ReplicaLink {
  coordpb::SlotInfo replica;
  std::unique_ptr<sync::SyncClient> client;
  bool running = false;
  bool stop = false;
  absl::Status last_error;
};

SlotHost::SlotHost(asio::io_context& io, configpb::SlotConfig config, SlotHostOptions options)
    : io_(io), config_(std::move(config)), options_(std::move(options)) {}

SlotHost::~SlotHost() {
  // Servers first (their sessions use the slot), the slot last.
  salvager_.reset();
  lmtp_.reset();
  backend_.reset();
  api_server_.reset();
  api_.reset();
  sync_server_.reset();
  replicas_.clear();
  slot_.reset();
}

absl::Status SlotHost::OpenSlot(const coordpb::StoreInfo& store, const std::string& cluster_id) {
  SlotPaths paths{config_.data(), config_.meta(), config_.spool()};
  SlotIdentity want{cluster_id, store.store_id(), config_.slot_id(), 0};
  struct stat st;
  if (::stat(paths.identity_file().c_str(), &st) != 0) {
    RETURN_IF_ERROR(MakeDirs(paths.root));
    want.created_unix = absl::ToUnixSeconds(absl::Now());
    RETURN_IF_ERROR(Slot::Init(paths, want));
    LogLine(Severity::kInfo, "slot created",
            Kv("slot", config_.slot_id()) + Kv("store", store.store_id()) + Kv("dir", paths.root));
  }
  SlotOptions options;
  options.expect = want;
  // Wake the sync clients as soon as a commit is durable (on the io thread).
  options.on_durable = [this](uint64_t lsn) {
    asio::post(io_, [this, lsn] {
      for (auto& [id, link] : replicas_) {
        if (link->client) link->client->Poke(lsn);
      }
    });
  };
  ASSIGN_OR_RETURN(slot_, Slot::Open(paths, options));
  return StartListeners();
}

absl::Status SlotHost::StartListeners() {
  backend_ = std::make_unique<lmtp::SlotBackend>(
      *slot_, lmtp::SlotBackendOptions{
                  .threads = options_.lmtp_threads,
                  .gate = [this] { return LmtpGate(); },
                  .directory = [this](const std::string& user) -> std::optional<LmtpReply> {
                    if (!options_.directory) return std::nullopt;
                    uint64_t store_id;
                    {
                      std::lock_guard<std::mutex> lock(mu_);
                      store_id = store_.store_id();
                    }
                    return options_.directory(user, store_id);
                  },
                  .after_append = [this](uint64_t lsn) -> std::optional<LmtpReply> {
                    const int64_t durable = BootNanos();
                    if (std::optional<LmtpReply> late = AwaitReplica(lsn)) return late;
                    absl::Status held = HeldWhenDurable(durable);
                    if (held.ok()) return std::nullopt;
                    return LmtpReply{451, "4.3.0", std::string(held.message())};
                  }});
  lmtp_ = std::make_unique<lmtp::LmtpServer>(
      io_, *backend_,
      lmtp::LmtpServerOptions{.listen = config_.lmtp_listen(),
                              .hostname = absl::StrCat("slot", config_.slot_id())});
  RETURN_IF_ERROR(lmtp_->Listen());

  api_ = std::make_unique<api::ApiService>(
      *slot_, api::ApiServiceOptions{
                  .check_write = [this](uint64_t e) { return CheckWrite(e); },
                  .slot_state = [this] { return State(); },
                  .await_durable = [this](uint64_t lsn) -> absl::Status {
                    const int64_t durable = BootNanos();
                    std::optional<LmtpReply> late = AwaitReplica(lsn);
                    if (late) return absl::UnavailableError(late->text);
                    return HeldWhenDurable(durable);
                  },
                  .check_store = [this](apipb::CheckStore r) { return CheckStore(std::move(r)); }});
  api_server_ = std::make_unique<rpc::RpcServer>(
      io_, rpc::RpcServerOptions{.listen = config_.api_listen(), .service = "api",
                                 .secret = options_.secret},
      api_->Handler());
  RETURN_IF_ERROR(api_server_->Listen());

  sync_server_ = std::make_unique<sync::SyncServer>(
      io_, *slot_,
      sync::SyncServerOptions{.listen = config_.sync_listen(),
                              .secret = options_.secret,
                              .admit = [this]() -> absl::Status {
                                std::lock_guard<std::mutex> lock(mu_);
                                if (role_ == coordpb::REPLICA) return absl::OkStatus();
                                return absl::FailedPreconditionError(absl::StrCat(
                                    "slot ", config_.slot_id(), " is not a replica (",
                                    RoleName(role_), ")"));
                              },
                              .on_diverged = [this](uint64_t fork, uint64_t master_epoch) {
                                return SetAside(fork, master_epoch);
                              },
                              .vouch = [this](uint64_t master_epoch) {
                                return Vouch(master_epoch);
                              }});
  RETURN_IF_ERROR(sync_server_->Listen());

  service_ = std::make_unique<ServiceAddresses>(io_, *backend_, api_->Handler(), options_.secret,
                                                absl::StrCat("slot", config_.slot_id()),
                                                config_.slot_id());

  // Each Run() ends after Stop(); count them so the host knows when the
  // slot has wound down.
  running_servers_ = 4;
  auto done = [this](std::exception_ptr) { --running_servers_; };
  asio::co_spawn(io_, lmtp_->Run(), done);
  asio::co_spawn(io_, api_server_->Run(), done);
  asio::co_spawn(io_, sync_server_->Run(), done);
  asio::co_spawn(io_, WatchServiceAddress(), done);
  LogLine(Severity::kInfo, "slot serving",
          Kv("slot", config_.slot_id()) + Kv("lmtp", config_.lmtp_listen()) +
              Kv("api", config_.api_listen()) + Kv("sync", config_.sync_listen()));
  return absl::OkStatus();
}

void SlotHost::Apply(const coordpb::SlotAssignment& assignment, const std::string& cluster_id,
                     absl::Duration lease, absl::Duration vouch_grace) {
  if (stopping_) return;
  lease_ns_ = absl::ToInt64Nanoseconds(lease);
  vouch_grace_ns_ = absl::ToInt64Nanoseconds(vouch_grace);
  if (assignment.role() == coordpb::ROLE_NONE || assignment.store().store_id() == 0) {
    StopReplicaLinks();
    std::lock_guard<std::mutex> lock(mu_);
    role_ = coordpb::ROLE_NONE;
    return;
  }
  const coordpb::StoreInfo& store = assignment.store();
  if (!slot_) {
    absl::Status opened = OpenSlot(store, cluster_id);
    if (!opened.ok()) {
      error_ = std::string(opened.message());
      LogLine(Severity::kError, "slot cannot serve",
              Kv("slot", config_.slot_id()) + Kv("error", error_));
      // None of them runs yet (Run() starts once all three are bound).
      lmtp_.reset();
      backend_.reset();
      api_server_.reset();
      api_.reset();
      sync_server_.reset();
      slot_.reset();
      return;
    }
    error_.clear();
  } else if (slot_->identity().store_id != store.store_id()) {
    error_ = absl::StrCat("slot ", config_.slot_id(), " holds store ",
                          slot_->identity().store_id, ", but the coordinator assigned store ",
                          store.store_id(), ": move the slot's data away or fix the assignment");
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    store_ = store;
    for (const coordpb::SlotInfo& m : store.members()) {
      if (m.slot_id() == store.master_slot_id()) {
        master_lmtp_ = m.lmtp_address();
        master_api_ = m.api_address();
      }
    }
  }
  sync_durability_ = store.durability() == coordpb::SYNC;
  const bool was_fenced = fenced_by_coordinator_.exchange(store.fenced());
  if (!store.fenced()) {
    fenced_lsn_ = 0;
    fence_error_.clear();
    demote_status_ = absl::OkStatus();
  }
  if (assignment.role() == coordpb::MASTER) {
    BecomeMaster(store);
    if (store.fenced() && !was_fenced) {
      // Release the addresses and start the demote hook first: Drain waits
      // for that hook before it reports the fenced LSN.
      UpdateServiceAddress();
      asio::co_spawn(io_, Drain(), asio::detached);
    }
  } else {
    BecomeReplica(store);
  }
  UpdateServiceAddress();
}

void SlotHost::UpdateServiceAddress() {
  if (!service_) return;
  std::string lmtp, api;
  bool master;
  {
    std::lock_guard<std::mutex> lock(mu_);
    master = role_ == coordpb::MASTER;
    lmtp = store_.service_lmtp();
    api = store_.service_api();
  }
  const bool hold = !stopping_ && master && CheckWrite(0).ok();
  if (stopping_) {
    service_->Stop();
  } else {
    service_->Want(hold, lmtp, api);
  }
  if (hold == holding_) return;
  holding_ = hold;
  // Promote once the addresses are ours; demote after they are released.
  if (!options_.hooks) return;
  HookEvent event{.event = hold ? "promote" : "demote",
                  .store_id = slot_->identity().store_id,
                  .slot_id = config_.slot_id(),
                  .service_lmtp = lmtp,
                  .service_api = api};
  if (!hold) demote_running_ = true;
  ++hooks_running_;
  asio::co_spawn(
      io_,
      [this, event]() -> asio::awaitable<void> {
        absl::Status s = co_await options_.hooks->Run(event);
        if (!s.ok()) {
          LogLine(Severity::kError, "hook failed",
                  Kv("slot", config_.slot_id()) + Kv("error", s.message()));
        }
        if (event.event == "demote") {
          demote_status_ = s;
          demote_running_ = false;
        }
        --hooks_running_;
      },
      asio::detached);
}

asio::awaitable<void> SlotHost::WatchServiceAddress() {
  asio::steady_timer tick(io_);
  while (!stopping_) {
    UpdateServiceAddress();
    tick.expires_after(std::chrono::milliseconds(100));
    asio::error_code ec;
    co_await tick.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (service_) service_->Stop();
}

asio::awaitable<void> SlotHost::Drain() {
  // The gate refuses from now on; wait for the writes it let through.
  asio::steady_timer tick(io_);
  while (backend_->Busy() > 0 && fenced_by_coordinator_) {
    tick.expires_after(std::chrono::milliseconds(1));
    asio::error_code ec;
    co_await tick.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_await api_->DrainWrites();
  // The demote hook (started when the fence released the addresses) must
  // succeed, or the failover that fenced this slot is aborted.
  while (demote_running_ && fenced_by_coordinator_ && !stopping_) {
    tick.expires_after(std::chrono::milliseconds(5));
    asio::error_code ec;
    co_await tick.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (!fenced_by_coordinator_ || stopping_) co_return;
  if (!demote_status_.ok()) {
    fence_error_ = std::string(demote_status_.message());
    LogLine(Severity::kError, "master fenced but its demote hook failed: the failover aborts",
            Kv("slot", config_.slot_id()) + Kv("error", fence_error_));
    Report();
    co_return;
  }
  fenced_lsn_ = slot_->last_lsn();
  LogLine(Severity::kInfo, "master fenced and drained",
          Kv("slot", config_.slot_id()) + Kv("lsn", fenced_lsn_.load()));
  Report();
}

void SlotHost::BecomeMaster(const coordpb::StoreInfo& store) {
  bool report = false;
  if (slot_->epoch() < store.epoch()) {
    absl::Status begun = slot_->BeginEpoch(store.epoch());
    if (!begun.ok()) {
      error_ = absl::StrCat("cannot begin epoch ", store.epoch(), ": ", begun.message());
      LogLine(Severity::kError, "slot cannot become master",
              Kv("slot", config_.slot_id()) + Kv("error", error_));
      return;
    }
  }
  epoch_ = store.epoch();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (role_ != coordpb::MASTER) {
      LogLine(Severity::kInfo, "slot is master",
              Kv("slot", config_.slot_id()) + Kv("store", store.store_id()) +
                  Kv("epoch", store.epoch()));
      // The old master may still have a session open here: end it.
      sync_server_->CloseSessions(
          absl::StrCat("slot ", config_.slot_id(), " is master of epoch ", store.epoch(), " now"),
          store.epoch());
      newer_epoch_ = 0;
      report = true;
    }
    role_ = coordpb::MASTER;
  }
  // One link per replica of the store; links to slots no longer in it stop.
  std::map<uint64_t, const coordpb::SlotInfo*> wanted;
  for (const coordpb::SlotInfo& m : store.members()) {
    if (m.slot_id() != config_.slot_id()) wanted[m.slot_id()] = &m;
  }
  for (auto it = replicas_.begin(); it != replicas_.end();) {
    auto w = wanted.find(it->first);
    if (w == wanted.end() || w->second->sync_address() != it->second->replica.sync_address()) {
      it->second->stop = true;
      if (it->second->client) it->second->client->Stop();
      it = replicas_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [id, info] : wanted) {
    if (!replicas_.contains(id)) StartReplicaLink(*info);
  }
  StartSalvager();
  if (salvager_) salvager_->Wake();  // files set aside as a replica go to this slot now
  if (report) Report();
}

void SlotHost::BecomeReplica(const coordpb::StoreInfo& store) {
  StopReplicaLinks();
  if (slot_->seen_epoch() < store.epoch()) {
    // From now on the sync server refuses an older master (STALE_EPOCH),
    // which then fences itself at once.
    absl::Status noted = slot_->NoteEpochSeen(store.epoch());
    if (!noted.ok()) error_ = std::string(noted.message());
  }
  epoch_ = store.epoch();
  bool report = false;
  StartSalvager();
  if (salvager_) salvager_->Wake();  // the master may have changed
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (role_ != coordpb::REPLICA) {
      LogLine(Severity::kInfo, "slot is replica",
              Kv("slot", config_.slot_id()) + Kv("store", store.store_id()) +
                  Kv("master", store.master_slot_id()));
      report = true;
    }
    role_ = coordpb::REPLICA;
  }
  if (report) Report();
}

absl::Status SlotHost::SetAside(uint64_t fork_lsn, uint64_t master_epoch) {
  ASSIGN_OR_RETURN(SalvageSet set, CollectSalvage(*slot_, fork_lsn, master_epoch));
  const std::string path = SalvageFilePath(SalvageDir(slot_->paths().root), set.header);
  // A file of the same range is there if an earlier attempt stopped before
  // the rewind: keep it (its progress file counts its entries).
  if (::access(path.c_str(), F_OK) != 0) RETURN_IF_ERROR(WriteSalvageFile(path, set));
  RETURN_IF_ERROR(slot_->DiscardState());
  LogLine(Severity::kWarning, "diverged slot set aside its records past the fork point and rewound",
          Kv("slot", config_.slot_id()) + Kv("store", set.header.store_id()) +
              Kv("fork_lsn", fork_lsn) +
              Kv("lsns", absl::StrCat(set.header.from_lsn(), "-", set.header.to_lsn())) +
              Kv("messages", set.messages.size()) + Kv("file", path));
  asio::post(io_, [this] {
    StartSalvager();
    if (salvager_) salvager_->Wake();
    Report();
  });
  return absl::OkStatus();
}

void SlotHost::StartSalvager() {
  if (salvager_ || stopping_ || !slot_) return;
  salvager_ = std::make_unique<Salvager>(
      io_, SalvagerOptions{
               .dir = SalvageDir(slot_->paths().root),
               .slot_id = config_.slot_id(),
               .secret = options_.secret,
               .master = [this]() -> std::optional<SalvageMaster> {
                 // Only once the slot follows the master (it holds the
                 // master's epoch: a snapshot or records of it arrived), or
                 // is the master itself (a replica that set messages aside
                 // and was then made master salvages into itself).
                 std::lock_guard<std::mutex> lock(mu_);
                 if ((role_ != coordpb::REPLICA && role_ != coordpb::MASTER) ||
                     slot_->last_lsn() == 0 || slot_->epoch() != store_.epoch()) {
                   return std::nullopt;
                 }
                 for (const coordpb::SlotInfo& m : store_.members()) {
                   if (m.slot_id() == store_.master_slot_id()) {
                     return SalvageMaster{.store_id = store_.store_id(),
                                          .slot_id = m.slot_id(),
                                          .api_address = m.api_address(),
                                          .epoch = store_.epoch()};
                   }
                 }
                 return std::nullopt;
               },
               .record = options_.record_salvage});
  salvager_running_ = true;
  asio::co_spawn(io_, salvager_->Run(), [this](std::exception_ptr) { salvager_running_ = false; });
}

void SlotHost::StartReplicaLink(const coordpb::SlotInfo& replica) {
  auto link = std::make_shared<ReplicaLink>();
  link->replica = replica;
  replicas_[replica.slot_id()] = link;
  // Rolling, woken by the slot's on_durable hook (see Open) rather than inotify.
  auto rolling = [this, link] {
    sync::SyncClientOptions o;
    o.slot = slot_->paths();
    o.server = link->replica.sync_address();
    o.secret = options_.secret;
    o.mode = sync::SyncClientOptions::Mode::kRolling;
    o.poked_on_commit = true;
    o.on_progress = [this] { ReplicaProgress(); };
    return o;
  };
  link->client = std::make_unique<sync::SyncClient>(io_, rolling());
  link->running = true;
  ++links_running_;
  // The link is kept alive by this coroutine until Run() returns; a client
  // ended by a permanent error (a newer epoch, a diverged replica) is
  // restarted after a pause unless the link was stopped.
  asio::co_spawn(
      io_,
      [this, link, rolling]() -> awaitable<void> {
        while (!link->stop) {
          absl::Status s = co_await link->client->Run();
          link->last_error = s;
          if (link->stop) break;
          const uint64_t newer = link->client->stats().newer_epoch;
          if (newer > epoch_) {
            newer_epoch_ = std::max<uint64_t>(newer_epoch_, newer);
            LogLine(Severity::kWarning, "master fenced: a replica knows a newer epoch",
                    Kv("slot", config_.slot_id()) + Kv("replica", link->replica.slot_id()) +
                        Kv("epoch", epoch_.load()) + Kv("newer_epoch", newer));
          } else {
            LogLine(Severity::kWarning, "sync client ended; restarting",
                    Kv("slot", config_.slot_id()) + Kv("replica", link->replica.slot_id()) +
                        Kv("error", s.message()));
          }
          asio::steady_timer pause(io_, std::chrono::seconds(1));
          asio::error_code ec;
          co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
          if (link->stop) break;
          link->client = std::make_unique<sync::SyncClient>(io_, rolling());
        }
        link->running = false;
        --links_running_;
      },
      asio::detached);
}

void SlotHost::StopReplicaLinks() {
  for (auto& [id, link] : replicas_) {
    link->stop = true;
    if (link->client) link->client->Stop();
  }
  replicas_.clear();
}

void SlotHost::ReplicaProgress() {
  uint64_t best = 0;
  for (const auto& [id, link] : replicas_) {
    if (link->client) best = std::max(best, link->client->stats().acked_lsn);
  }
  int64_t vouched = 0;
  for (const auto& [id, link] : replicas_) {
    if (link->client) vouched = std::max(vouched, link->client->stats().vouched_until_ns);
  }
  replica_vouched_until_ns_ = std::max<int64_t>(replica_vouched_until_ns_, vouched);
  {
    std::lock_guard<std::mutex> lock(acked_mu_);
    acked_lsn_ = std::max(acked_lsn_, best);
  }
  acked_cv_.notify_all();
  // A failover waits for the target replica to catch up: tell at once.
  if (fenced_by_coordinator_ && fenced_lsn_ > 0) Report();
}

void SlotHost::CoordinatorHeard(absl::Duration sent) {
  coordinator_heard_ns_ =
      std::max<int64_t>(coordinator_heard_ns_, absl::ToInt64Nanoseconds(sent));
}

int64_t SlotHost::HeldUntilNs() const {
  const int64_t heard = coordinator_heard_ns_;
  return std::max<int64_t>(heard == 0 ? 0 : heard + lease_ns_, replica_vouched_until_ns_);
}

absl::Duration SlotHost::Vouch(uint64_t master_epoch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (role_ != coordpb::REPLICA) return absl::ZeroDuration();
  }
  // A master older than the store's epoch as this host knows it is not
  // vouched for (its sessions are refused anyway).
  if (master_epoch < epoch_) return absl::ZeroDuration();
  const int64_t heard = coordinator_heard_ns_;
  if (heard == 0) return absl::ZeroDuration();
  // Each vouch lasts at most a lease period, so one given before this host
  // learned of a newer epoch ends a lease period after it learned.
  return absl::Nanoseconds(
      std::min<int64_t>(lease_ns_, heard + lease_ns_ + vouch_grace_ns_ - BootNanos()));
}

absl::Status SlotHost::HeldWhenDurable(int64_t durable_ns) {
  coordpb::Role role;
  {
    std::lock_guard<std::mutex> lock(mu_);
    role = role_;
  }
  // Not the coordinator's fence: a planned failover drains the writes its
  // fence found in flight, and they count (the switch waits for them).
  // Role and epoch change only through the coordinator after that drain,
  // or after a promotion, whose wait the lease check below covers.
  if (role == coordpb::MASTER && newer_epoch_ <= epoch_ && durable_ns <= HeldUntilNs()) {
    return absl::OkStatus();
  }
  ++late_writes_;
  return absl::UnavailableError(absl::StrCat(
      "slot ", config_.slot_id(),
      " lost its right to write before the write was durable (lease ran out, or a newer master "
      "exists); it is kept past the fork point and may be salvaged: retry, a duplicate is "
      "possible"));
}

absl::Status SlotHost::CheckWrite(uint64_t epoch) { return CheckWriteFor(epoch, false); }

namespace {
// An io_context on a thread of its own, for the duration of one check.
struct CheckRunner {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> guard = asio::make_work_guard(io);
  std::thread thread{[this] { io.run(); }};
  ~CheckRunner() {
    guard.reset();
    io.stop();
    thread.join();
  }
};
}  // namespace

awaitable<absl::StatusOr<checkpb::StoreCheck>> SlotHost::CheckStore(apipb::CheckStore request) {
  checkpb::StoreCheck out;
  std::vector<coordpb::SlotInfo> replicas;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (role_ != coordpb::MASTER || !slot_) {
      co_return absl::FailedPreconditionError(absl::StrCat(
          "slot ", config_.slot_id(), " is not the master of its store",
          master_api_.empty() ? "" : absl::StrCat(" (the master's API is ", master_api_, ")"),
          "; a check runs on the master"));
    }
    out.set_store_id(store_.store_id());
    out.set_master_slot_id(config_.slot_id());
    for (const coordpb::SlotInfo& m : store_.members()) {
      if (m.slot_id() != config_.slot_id()) replicas.push_back(m);
    }
  }
  out.set_deep(request.deep());
  // A check reads index views and compares mailboxes: seconds of blocking
  // work at 100,000 mailboxes, which on io_ would stall LMTP, sync and the
  // coordinator link of every slot of this host. It runs on an io_context
  // and thread of its own; this coroutine waits for it without blocking.
  CheckRunner runner;
  auto work = [this, &out, &replicas, &request, &runner]() -> awaitable<void> {
    for (const MailboxInfo& mb : slot_->ListMailboxes()) {
      out.set_mailboxes(out.mailboxes() + 1);
      out.set_messages(out.messages() + mb.messages);
    }
    for (const coordpb::SlotInfo& replica : replicas) {
      sync::SyncClientOptions o;
      o.slot = slot_->paths();
      o.server = replica.sync_address();
      o.secret = options_.secret;
      o.mode = sync::SyncClientOptions::Mode::kCheck;
      o.check = {.deep = request.deep(),
                 .repair = request.repair(),
                 .max_bytes_per_second = request.max_bytes_per_second()};
      sync::SyncClient client(runner.io, std::move(o));
      absl::Status s = co_await client.Run();
      checkpb::ReplicaCheck* rc = out.add_replicas();
      *rc = client.check_result();
      rc->set_slot_id(replica.slot_id());
      rc->set_address(replica.sync_address());
      if (!s.ok()) rc->set_error(std::string(s.message()));
    }
  };
  awaitable<void> done = asio::co_spawn(runner.io, std::move(work), asio::use_awaitable);
  co_await std::move(done);
  co_return out;
}

absl::Status SlotHost::CheckWriteFor(uint64_t epoch, bool lmtp) {
  std::string master;
  coordpb::Role role;
  uint64_t store_id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    role = role_;
    master = lmtp ? master_lmtp_ : master_api_;
    store_id = store_.store_id();
  }
  if (stopping_) return absl::UnavailableError("replicad is shutting down");
  if (role != coordpb::MASTER) {
    return absl::FailedPreconditionError(
        absl::StrCat("slot ", config_.slot_id(), " is not the master of store ", store_id,
                     " (", RoleName(role), "); the master's ", lmtp ? "LMTP" : "API", " is at ", master));
  }
  if (epoch != 0 && epoch != epoch_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "stale epoch ", epoch, ": store ", store_id, " is at epoch ", epoch_.load()));
  }
  if (fenced_by_coordinator_) {
    return absl::UnavailableError(
        absl::StrCat("store ", store_id, " is switching masters (fenced); retry shortly"));
  }
  if (newer_epoch_ > epoch_) {
    return absl::UnavailableError(absl::StrCat("slot ", config_.slot_id(),
                                               " is no longer master: a replica knows epoch ",
                                               newer_epoch_.load()));
  }
  if (coordinator_heard_ns_ == 0 && replica_vouched_until_ns_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "slot ", config_.slot_id(),
        " is fenced until it hears from the coordinator or a replica vouches (it just started)"));
  }
  const int64_t now = BootNanos();
  if (now > HeldUntilNs()) {
    const int64_t heard = coordinator_heard_ns_;
    return absl::UnavailableError(absl::StrCat(
        "slot ", config_.slot_id(), " fenced itself: its lease ran out (no word from the ",
        heard == 0 ? std::string("coordinator since it started")
                   : absl::StrCat("coordinator for ",
                                  absl::FormatDuration(absl::Trunc(absl::Nanoseconds(now - heard),
                                                                   absl::Milliseconds(1)))),
        ", lease ", absl::FormatDuration(absl::Nanoseconds(lease_ns_.load())),
        ", and no replica vouches)"));
  }
  return absl::OkStatus();
}

std::optional<LmtpReply> SlotHost::LmtpGate() {
  absl::Status s = CheckWriteFor(0, /*lmtp=*/true);
  if (s.ok()) return std::nullopt;
  return LmtpReply{451, "4.3.0", std::string(s.message())};
}

std::optional<LmtpReply> SlotHost::AwaitReplica(uint64_t lsn) {
  if (!sync_durability_) return std::nullopt;
  std::unique_lock<std::mutex> lock(acked_mu_);
  const bool on_replica = acked_cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.sync_timeout),
                                             [&] { return acked_lsn_ >= lsn; });
  if (on_replica) return std::nullopt;
  return LmtpReply{451, "4.3.0",
                   absl::StrCat("sync durability: no replica confirmed LSN ", lsn, " within ",
                                absl::FormatDuration(options_.sync_timeout), "; retry later")};
}

apipb::SlotState SlotHost::State() {
  apipb::SlotState s;
  s.set_master(CheckWrite(0).ok());
  s.set_epoch(epoch_);
  std::lock_guard<std::mutex> lock(mu_);
  s.set_master_api_address(master_api_);
  return s;
}

void SlotHost::Stop() {
  if (stopping_) return;
  stopping_ = true;
  StopReplicaLinks();
  if (salvager_) salvager_->Stop();
  if (lmtp_) lmtp_->Stop();
  if (api_server_) api_server_->Stop();
  if (sync_server_) sync_server_->Stop();
  UpdateServiceAddress();  // releases the addresses; runs the demote hook if they were held
}

coordpb::SlotStatus SlotHost::Status() {
  coordpb::SlotStatus s;
  s.set_slot_id(config_.slot_id());
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.set_role(role_);
  }
  s.set_error(error_);
  if (!slot_) return s;
  s.set_epoch(slot_->epoch());
  s.set_last_lsn(slot_->last_lsn());
  s.set_fenced(s.role() == coordpb::MASTER && !CheckWrite(0).ok());
  if (s.role() == coordpb::MASTER) {
    s.set_fenced_lsn(fenced_lsn_);
    s.set_fence_error(fence_error_);
  }
  for (const auto& [id, link] : replicas_) {
    coordpb::ReplicaProgress* p = s.add_replicas();
    p->set_slot_id(id);
    const sync::SyncStats& st = link->client->stats();
    p->set_acked_lsn(st.acked_lsn);
    p->set_lag_seconds(st.lag_seconds);
    p->set_connected(st.connected);
  }
  return s;
}

void SlotHost::AddMetrics(metrics::MetricsBuilder& b) {
  std::string store;
  std::string role;
  {
    std::lock_guard<std::mutex> lock(mu_);
    store = absl::StrCat(store_.store_id());
    role = RoleName(role_);
  }
  const std::string slot = absl::StrCat(config_.slot_id());
  const metrics::Labels labels{{"store", store}, {"slot", slot}, {"role", role}};
  b.Gauge("mailrepl_slot_serving", "1 if the slot is open and serving its role", labels,
          slot_ && error_.empty() ? 1 : 0);
  if (!slot_) return;
  const coordpb::SlotStatus st = Status();
  b.Gauge("mailrepl_slot_master", "1 if the slot is master of its store", labels,
          st.role() == coordpb::MASTER ? 1 : 0);
  b.Gauge("mailrepl_slot_fenced", "1 if the slot is master but refuses writes", labels,
          st.fenced() ? 1 : 0);
  b.Gauge("mailrepl_slot_epoch", "Epoch of the slot's last record", labels, st.epoch());
  b.Counter("mailrepl_slot_late_writes_total",
            "Writes answered with a temporary failure: durable after the lease had run out",
            labels, late_writes_.load());
  b.Gauge("mailrepl_slot_lsn", "Last durable LSN of the slot", labels, st.last_lsn());
  const SlotStats cs = slot_->stats();
  b.Counter("mailrepl_slot_commits_total", "Group commits (one log write and fdatasync each)",
            labels, cs.commits);
  b.Counter("mailrepl_slot_committed_records_total", "Records made durable by group commits",
            labels, cs.records);
  b.Counter("mailrepl_slot_commit_write_seconds_total", "Time group commits spent writing the log",
            labels, absl::ToDoubleSeconds(cs.write_time));
  b.Counter("mailrepl_slot_commit_sync_seconds_total", "Time group commits spent in fdatasync",
            labels, absl::ToDoubleSeconds(cs.sync_time));
  b.Counter("mailrepl_slot_commit_apply_seconds_total",
            "Time group commits spent applying records to the index", labels,
            absl::ToDoubleSeconds(cs.apply_time));
  for (const auto& [id, link] : replicas_) {
    const sync::SyncStats& ss = link->client->stats();
    metrics::Labels rl = labels;
    rl.emplace_back("replica", absl::StrCat(id));
    b.Gauge("mailrepl_replica_acked_lsn", "LSN the replica acknowledged as durable", rl,
            ss.acked_lsn);
    b.Gauge("mailrepl_replica_lag_records", "Records the replica has not acknowledged", rl,
            st.last_lsn() > ss.acked_lsn ? st.last_lsn() - ss.acked_lsn : 0);
    b.Gauge("mailrepl_replica_lag_seconds", "Age of the oldest record the replica lacks", rl,
            ss.lag_seconds);
    b.Gauge("mailrepl_replica_connected", "1 if the sync session to the replica is up", rl,
            ss.connected ? 1 : 0);
    b.Counter("mailrepl_replica_sent_bytes_total", "Bytes sent to the replica on the wire", rl,
              link->client->wire_bytes_now());
    b.Counter("mailrepl_replica_records_total", "Records sent to the replica", rl, ss.records);
  }
  if (lmtp_) {
    const lmtp::LmtpServerStats ls = lmtp_->stats();
    b.Counter("mailrepl_lmtp_connections_total", "LMTP connections accepted", labels,
              ls.connections_accepted);
    b.Gauge("mailrepl_lmtp_connections_open", "LMTP connections open", labels,
            ls.connections_open);
    b.Counter("mailrepl_lmtp_delivered_total", "Recipients answered 2xx after DATA", labels,
              ls.recipients_delivered);
    b.Counter("mailrepl_lmtp_refused_total", "Recipients answered 4xx/5xx after DATA", labels,
              ls.recipients_refused);
  }
  if (api_) {
    const api::ApiServiceStats as = api_->stats();
    b.Counter("mailrepl_api_writes_total", "Client API writes acknowledged", labels, as.writes);
    b.Counter("mailrepl_api_refused_writes_total", "Client API writes refused (epoch, role)",
              labels, as.refused_writes);
    b.Counter("mailrepl_api_errors_total", "Client API calls answered with an error", labels,
              as.errors);
  }
  if (sync_server_) {
    const sync::SyncServerStats& ss = sync_server_->stats();
    b.Counter("mailrepl_sync_records_applied_total", "Records applied as a replica", labels,
              ss.records_applied);
    b.Counter("mailrepl_sync_auth_failures_total", "Sync logins refused", labels,
              ss.auth_failures);
  }
}

}  // namespace mailrepl::replicad
