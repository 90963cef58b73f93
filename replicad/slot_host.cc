#include "replicad/slot_host.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/log_exceptions.h"
#include "common/status_macros.h"
#include "replicad/salvager.h"
#include "store/salvage_file.h"
#include "syncclient/sync_client.h"
#include "syncclient/sync_server.h"

namespace mailrepl::replicad {

using asio::awaitable;
using lmtp::LmtpReply;

namespace {

int MaxWorkers(const SlotHostOptions& o) {
  if (o.max_workers > 0) return o.max_workers;
  return std::max(2, o.pool->threads() / 2);
}

bool Unassigned(const coordpb::SlotAssignment& a) {
  return a.role() == coordpb::ROLE_NONE || a.store().store_id() == 0;
}

}  // namespace

SlotHost::SlotHost(asio::io_context& io, configpb::SlotConfig config, SlotHostOptions options)
    : io_(io),
      config_(std::move(config)),
      options_(std::move(options)),
      gate_(config_.slot_id()),
      work_(options_.pool->executor(), MaxWorkers(options_)),
      metrics_(work_),
      links_(io_, gate_,
             ReplicaLinksOptions{.slot_id = config_.slot_id(),
                                 .secret = options_.secret,
                                 .sync_timeout = options_.sync_timeout,
                                 .on_progress =
                                     [this] {
                                       // A failover waits for the target replica to
                                       // catch up: tell at once.
                                       if (gate_.fenced() && fence_.fenced_lsn() > 0) Report();
                                     },
                                 .blocking = options_.pool->executor()}),
      fence_(io_, gate_, work_, metrics_,
             FenceAndDrainOptions{.slot_id = config_.slot_id(),
                                  .secret = options_.secret,
                                  .hooks = options_.hooks,
                                  .report = [this] { Report(); }}) {}

SlotHost::~SlotHost() {
  // The io_context has stopped: no job of this slot runs on the pool after
  // this, then the servers (their sessions use the slot), the slot last
  // (the members' order, see the header).
  work_.Close();
  metrics_.Attach(nullptr);
  salvager_.reset();
  links_.StopAll();
}

void SlotHost::Apply(const coordpb::SlotAssignment& assignment, const std::string& cluster_id,
                     absl::Duration lease, absl::Duration vouch_grace) {
  if (gate_.stopping()) return;
  gate_.SetLease(lease, vouch_grace);
  ++generation_;
  Restrict(assignment);
  pending_ = Pending{assignment, cluster_id};
  if (applying_) return;
  applying_ = true;
  asio::co_spawn(io_, ApplyLoop(), [this](std::exception_ptr e) {
    if (!e) return;
    LogExceptions(absl::StrCat("slot ", config_.slot_id(), " apply"))(e);
    applying_ = false;
  });
}

void SlotHost::Restrict(const coordpb::SlotAssignment& assignment) {
  if (Unassigned(assignment)) {
    links_.StopAll();
    gate_.SetRole(coordpb::ROLE_NONE);
    return;
  }
  const coordpb::StoreInfo& store = assignment.store();
  // A fence takes effect before the coordinator contact that brought it is
  // counted: a reply that fences a slot must not first renew its right to
  // write.
  if (store.fenced()) gate_.SetFenced(true);
  if (assignment.role() == coordpb::MASTER) {
    // Becoming master needs BeginEpoch (an fsync) first; meanwhile the slot
    // neither writes, nor admits sessions, nor vouches.
    if (gate_.role() != coordpb::MASTER) gate_.SetRole(coordpb::ROLE_NONE);
    return;
  }
  // A replica: a master demoted stops writing now, and a replica that
  // learns a newer epoch stops vouching for older masters now (Vouch); the
  // epoch is persisted (NoteEpochSeen) on a worker right after.
  if (gate_.role() == coordpb::MASTER) {
    links_.StopAll();
    gate_.SetRole(coordpb::ROLE_NONE);
  }
  if (store.epoch() > gate_.epoch()) gate_.SetEpoch(store.epoch());
}

awaitable<void> SlotHost::ApplyLoop() {
  while (pending_ && !gate_.stopping()) {
    Pending p = std::move(*pending_);
    pending_.reset();
    co_await ApplyOne(std::move(p));
  }
  pending_.reset();
  applying_ = false;  // here, not in the completion: an Apply() after this starts a new loop
}

awaitable<void> SlotHost::ApplyOne(Pending p) {
  const uint64_t generation = generation_;
  const coordpb::SlotAssignment& assignment = p.assignment;
  if (Unassigned(assignment)) co_return;  // Restrict() did it all
  const coordpb::StoreInfo& store = assignment.store();
  if (!slot_) {
    absl::Status opened = co_await OpenSlot(store, p.cluster_id);
    if (!opened.ok()) {
      error_ = std::string(opened.message());
      LogLine(Severity::kError, "slot cannot serve",
              Kv("slot", config_.slot_id()) + Kv("error", error_));
      // None of them runs yet (Run() starts once all three are bound).
      listeners_.reset();
      std::unique_ptr<Slot> doomed = std::move(slot_);
      SlotMetrics* metrics = &metrics_;
      co_await work_.Run([&doomed, metrics] {
        metrics->Attach(nullptr);
        doomed.reset();  // joins the slot's threads
      });
      co_return;
    }
    error_.clear();
  } else if (slot_->identity().store_id != store.store_id()) {
    error_ = absl::StrCat("slot ", config_.slot_id(), " holds store ",
                          slot_->identity().store_id, ", but the coordinator assigned store ",
                          store.store_id(), ": move the slot's data away or fix the assignment");
    co_return;
  }
  if (generation_ != generation || gate_.stopping()) co_return;  // a newer assignment follows
  gate_.SetStore(store);
  links_.SetSyncDurability(store.durability() == coordpb::SYNC);
  gate_.SetFenced(store.fenced());
  if (!store.fenced()) {
    fence_applied_ = false;
    fence_.ClearFence();
  }
  if (assignment.role() == coordpb::MASTER) {
    co_await BecomeMaster(store, generation);
    if (generation_ != generation || gate_.stopping()) co_return;
    if (store.fenced() && !fence_applied_) {
      fence_applied_ = true;
      // Release the addresses and start the demote hook first: Drain waits
      // for that hook before it reports the fenced LSN.
      fence_.UpdateServiceAddress();
      fence_.StartDrain();
    }
  } else {
    fence_applied_ = store.fenced();
    co_await BecomeReplica(store, generation);
    if (generation_ != generation || gate_.stopping()) co_return;
  }
  fence_.UpdateServiceAddress();
}

awaitable<absl::Status> SlotHost::OpenSlot(const coordpb::StoreInfo& store,
                                           const std::string& cluster_id) {
  const SlotPaths paths{config_.data(), config_.meta(), config_.spool()};
  SlotIdentity want{cluster_id, store.store_id(), config_.slot_id(), 0};
  SlotOptions options;
  options.expect = want;
  // Wake the sync clients as soon as a commit is durable (on the io thread).
  options.on_durable = [this](uint64_t lsn) {
    asio::post(io_, [this, lsn] { links_.Poke(lsn); });
  };
  // Keep the reported LSN current; the epoch and the counters are
  // refreshed on a worker at every status report.
  options.on_commit = [this](uint64_t lsn) { metrics_.NoteCommitted(lsn); };
  const uint64_t slot_id = config_.slot_id();
  auto open = [&]() -> absl::StatusOr<std::unique_ptr<Slot>> {
    struct stat st;
    if (::stat(paths.identity_file().c_str(), &st) != 0) {
      RETURN_IF_ERROR(MakeDirs(paths.root));
      want.created_unix = absl::ToUnixSeconds(absl::Now());
      RETURN_IF_ERROR(Slot::Init(paths, want));
      LogLine(Severity::kInfo, "slot created",
              Kv("slot", slot_id) + Kv("store", store.store_id()) + Kv("dir", paths.root));
    }
    return Slot::Open(paths, options);
  };
  absl::StatusOr<std::unique_ptr<Slot>> opened = co_await work_.Run(std::move(open));
  if (!opened.ok()) co_return opened.status();
  slot_ = std::move(*opened);
  if (gate_.stopping()) {
    // Stopped while the slot opened: no listener starts (ApplyOne closes it).
    co_return absl::UnavailableError("replicad is shutting down");
  }
  metrics_.Attach(slot_.get());
  metrics_.Refresh();

  listeners_ = std::make_unique<SlotListeners>(
      io_, config_, options_.secret, *slot_, work_,
      SlotListenerHooks{
          .lmtp_gate = [this] { return gate_.LmtpGate(); },
          .directory = [this](const std::string& user) -> std::optional<LmtpReply> {
            if (!options_.directory) return std::nullopt;
            return options_.directory(user, gate_.store_id());
          },
          .lmtp_after_append = [this](uint64_t lsn) -> std::optional<LmtpReply> {
            const int64_t durable = BootNanos();
            if (std::optional<LmtpReply> late = links_.AwaitReplica(lsn)) return late;
            return gate_.LmtpWhenDurable(durable);
          },
          .check_write = [this](uint64_t e) { return gate_.CheckWrite(e); },
          .slot_state = [this] { return gate_.State(); },
          .api_await_durable = [this](uint64_t lsn) -> absl::Status {
            const int64_t durable = BootNanos();
            std::optional<LmtpReply> late = links_.AwaitReplica(lsn);
            if (late) return absl::UnavailableError(late->text);
            return gate_.HeldWhenDurable(durable);
          },
          .check_store = [this](apipb::CheckStore r) { return CheckStore(std::move(r)); },
          .admit = [this] { return gate_.Admit(); },
          .on_diverged = [this](uint64_t fork, uint64_t master_epoch) {
            return SetAside(fork, master_epoch);
          },
          .vouch = [this](uint64_t master_epoch) { return gate_.Vouch(master_epoch); },
          .on_lmtp_idle = [this] { asio::post(io_, [this] { fence_.Wake(); }); }});
  if (absl::Status bound = listeners_->Listen(); !bound.ok()) co_return bound;
  fence_.Attach(*slot_, *listeners_);
  // Each Run() ends after Stop(); count them so the host knows when the
  // slot has wound down.
  running_servers_ = SlotListeners::kServers;
  listeners_->Run([this] { --running_servers_; });
  co_return absl::OkStatus();
}

awaitable<void> SlotHost::BecomeMaster(const coordpb::StoreInfo& store, uint64_t generation) {
  bool report = false;
  const uint64_t epoch = store.epoch();
  Slot* slot = slot_.get();
  SlotMetrics* metrics = &metrics_;
  // BeginEpoch is an fsync: on a worker. The facts are refreshed before the
  // new role is reported, so the report carries the new epoch.
  absl::Status begun = co_await work_.Run([slot, metrics, epoch]() -> absl::Status {
    absl::Status s;
    if (slot->epoch() < epoch) s = slot->BeginEpoch(epoch);
    metrics->RefreshNow();
    return s;
  });
  if (!begun.ok()) {
    error_ = absl::StrCat("cannot begin epoch ", epoch, ": ", begun.message());
    LogLine(Severity::kError, "slot cannot become master",
            Kv("slot", config_.slot_id()) + Kv("error", error_));
    co_return;
  }
  if (generation_ != generation || gate_.stopping()) co_return;
  gate_.SetEpoch(epoch);
  if (gate_.role() != coordpb::MASTER) {
    LogLine(Severity::kInfo, "slot is master",
            Kv("slot", config_.slot_id()) + Kv("store", store.store_id()) + Kv("epoch", epoch));
    // The old master may still have a session open here: end it.
    listeners_->sync().CloseSessions(
        absl::StrCat("slot ", config_.slot_id(), " is master of epoch ", epoch, " now"), epoch);
    gate_.ClearNewerEpoch();
    report = true;
  }
  gate_.SetRole(coordpb::MASTER);
  // One link per replica of the store; links to slots no longer in it stop.
  links_.Follow(*slot_, store);
  StartSalvager();
  if (salvager_) salvager_->Wake();  // files set aside as a replica go to this slot now
  if (report) Report();
}

awaitable<void> SlotHost::BecomeReplica(const coordpb::StoreInfo& store, uint64_t generation) {
  links_.StopAll();
  const uint64_t epoch = store.epoch();
  Slot* slot = slot_.get();
  SlotMetrics* metrics = &metrics_;
  // From now on the sync server refuses an older master (STALE_EPOCH),
  // which then fences itself at once. (Restrict() already stopped the
  // vouches for it.)
  absl::Status noted = co_await work_.Run([slot, metrics, epoch]() -> absl::Status {
    absl::Status s;
    if (slot->seen_epoch() < epoch) s = slot->NoteEpochSeen(epoch);
    metrics->RefreshNow();
    return s;
  });
  if (!noted.ok()) error_ = std::string(noted.message());
  if (generation_ != generation || gate_.stopping()) co_return;
  gate_.SetEpoch(epoch);
  bool report = false;
  StartSalvager();
  if (salvager_) salvager_->Wake();  // the master may have changed
  if (gate_.SetRole(coordpb::REPLICA) != coordpb::REPLICA) {
    LogLine(Severity::kInfo, "slot is replica",
            Kv("slot", config_.slot_id()) + Kv("store", store.store_id()) +
                Kv("master", store.master_slot_id()));
    report = true;
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
  // The reported LSN goes back to 0 before anyone reads it again.
  metrics_.RefreshNow();
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
  if (salvager_ || gate_.stopping() || !slot_) return;
  salvager_ = std::make_unique<Salvager>(
      io_, SalvagerOptions{
               .dir = SalvageDir(slot_->paths().root),
               .slot_id = config_.slot_id(),
               .secret = options_.secret,
               .master = [this]() -> std::optional<SalvageMaster> {
                 // Only once the slot follows the master (it holds the
                 // master's epoch: a snapshot or records of it arrived), or
                 // is the master itself (a replica that set messages aside
                 // and was then made master salvages into itself). The
                 // slot's LSN and epoch as last refreshed: a stale answer
                 // only delays the salvage by a retry.
                 const coordpb::Role role = gate_.role();
                 const coordpb::StoreInfo store = gate_.store();
                 if ((role != coordpb::REPLICA && role != coordpb::MASTER) ||
                     metrics_.last_lsn() == 0 || metrics_.epoch() != store.epoch()) {
                   return std::nullopt;
                 }
                 for (const coordpb::SlotInfo& m : store.members()) {
                   if (m.slot_id() == store.master_slot_id()) {
                     return SalvageMaster{.store_id = store.store_id(),
                                          .slot_id = m.slot_id(),
                                          .api_address = m.api_address(),
                                          .epoch = store.epoch()};
                   }
                 }
                 return std::nullopt;
               },
               .record = options_.record_salvage,
               .blocking = options_.pool->executor()});
  salvager_running_ = true;
  asio::co_spawn(io_, salvager_->Run(), [this](std::exception_ptr e) {
    LogExceptions(absl::StrCat("slot ", config_.slot_id(), " salvager"))(e);
    salvager_running_ = false;
  });
}

namespace {
// An io_context on a thread of its own, for the duration of one check. Not
// an io thread in the sense of common/io_thread.h (no IoThreadScope): it
// serves nothing but this check, which may block on it (the kCheck sync
// client reads index views there), so the host's io thread never does.
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
  const coordpb::StoreInfo store = gate_.store();
  if (gate_.role() != coordpb::MASTER || !slot_) {
    const std::string master_api = gate_.State().master_api_address();
    co_return absl::FailedPreconditionError(absl::StrCat(
        "slot ", config_.slot_id(), " is not the master of its store",
        master_api.empty() ? "" : absl::StrCat(" (the master's API is ", master_api, ")"),
        "; a check runs on the master"));
  }
  out.set_store_id(store.store_id());
  out.set_master_slot_id(config_.slot_id());
  for (const coordpb::SlotInfo& m : store.members()) {
    if (m.slot_id() != config_.slot_id()) replicas.push_back(m);
  }
  out.set_deep(request.deep());
  // A check reads index views and compares mailboxes: seconds of blocking
  // work at 100,000 mailboxes, which on io_ would stall LMTP, sync and the
  // coordinator link of every slot of this host. It runs on an io_context
  // and thread of its own; this coroutine waits for it without blocking.
  CheckRunner runner;
  Slot* slot = slot_.get();
  auto work = [this, slot, &out, &replicas, &request, &runner]() -> awaitable<void> {
    std::vector<MailboxInfo> mailboxes =
        co_await work_.Run([slot] { return slot->ListMailboxes(); });
    for (const MailboxInfo& mb : mailboxes) {
      out.set_mailboxes(out.mailboxes() + 1);
      out.set_messages(out.messages() + mb.messages);
    }
    for (const coordpb::SlotInfo& replica : replicas) {
      sync::SyncClientOptions o;
      o.slot = slot->paths();
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

void SlotHost::Stop() {
  if (gate_.stopping()) return;
  gate_.SetStopping();
  links_.StopAll();
  if (salvager_) salvager_->Stop();
  if (listeners_) listeners_->Stop();
  fence_.Stop();  // releases the addresses; runs the demote hook if they were held
}

coordpb::SlotStatus SlotHost::Status() {
  coordpb::SlotStatus s;
  s.set_slot_id(config_.slot_id());
  s.set_role(gate_.role());
  s.set_error(error_);
  if (!slot_) return s;
  metrics_.Refresh();  // for the next report
  s.set_epoch(metrics_.epoch());
  s.set_last_lsn(metrics_.last_lsn());
  s.set_fenced(s.role() == coordpb::MASTER && !gate_.CheckWrite(0).ok());
  if (s.role() == coordpb::MASTER) {
    s.set_fenced_lsn(fence_.fenced_lsn());
    s.set_fence_error(fence_.fence_error());
  }
  links_.AddStatus(s);
  return s;
}

void SlotHost::AddMetrics(metrics::MetricsBuilder& b) {
  const std::string store = absl::StrCat(gate_.store_id());
  const std::string role = RoleName(gate_.role());
  const std::string slot = absl::StrCat(config_.slot_id());
  const metrics::Labels labels{{"store", store}, {"slot", slot}, {"role", role}};
  if (!slot_) {
    b.Gauge("mailrepl_slot_serving", "1 if the slot is open and serving its role", labels, 0);
    return;
  }
  const coordpb::SlotStatus st = Status();
  metrics_.Add(b, labels, error_.empty(), st, gate_.late_writes());
  links_.AddMetrics(b, labels, st.last_lsn());
  if (listeners_) {
    metrics_.AddServers(b, labels, listeners_->lmtp_server(), listeners_->api_service(),
                        listeners_->sync_server());
  }
}

}  // namespace mailrepl::replicad
