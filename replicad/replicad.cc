#include "replicad/replicad.h"

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/log_exceptions.h"
#include "common/status_macros.h"
#include "replicad/coordinator_link.h"
#include "replicad/metrics_server.h"
#include "replicad/metrics_text.h"
#include "replicad/slot_host.h"
#include "rpc/rpc_client.h"

namespace mailrepl::replicad {

namespace {
std::string RoleCachePath(const configpb::ReplicadConfig& c) { return c.state_dir() + "/roles.pb"; }
}  // namespace

Replicad::Replicad(asio::io_context& io, configpb::ReplicadConfig config, std::string secret)
    : io_(io),
      config_(std::move(config)),
      secret_(std::move(secret)),
      pool_(std::make_unique<HostPool>(HostPool::DefaultThreads())),
      role_cache_work_(std::make_unique<WorkGate>(pool_->executor(), 1)),
      hooks_(std::make_unique<Hooks>(
          config_.promote_hook(), config_.demote_hook(),
          absl::Milliseconds(config_.hook_timeout_ms() > 0 ? config_.hook_timeout_ms() : 30000),
          pool_->executor())) {
  // Each slot may hold up to lmtp_threads workers (its deliveries, API
  // calls and role changes together), but never more than half the pool,
  // so that one slot with a stalled disk leaves the others the rest.
  const int per_slot =
      std::max(2, std::min(static_cast<int>(config_.lmtp_threads()), pool_->threads() / 2));
  LogLine(Severity::kInfo, "worker pool",
          Kv("threads", pool_->threads()) + Kv("per_slot", per_slot));
  for (const configpb::SlotConfig& s : config_.slot()) {
    slots_[s.slot_id()] = std::make_unique<SlotHost>(
        io_, s,
        SlotHostOptions{.secret = secret_,
                        .sync_timeout = absl::Milliseconds(config_.sync_timeout_ms()),
                        .pool = pool_.get(),
                        .max_workers = per_slot,
                        .directory = [this](const std::string& user, uint64_t store) {
                          return Directory(user, store);
                        },
                        .report_now =
                            [this] {
                              if (link_) link_->ReportNow();
                            },
                        .hooks = hooks_.get(),
                        .record_salvage =
                            [this](coordpb::RecordSalvage r) { return RecordSalvage(std::move(r)); }});
  }
}

asio::awaitable<absl::Status> Replicad::RecordSalvage(coordpb::RecordSalvage salvage) {
  rpc::RpcClient client(io_, {.address = config_.coordinator(),
                              .service = "coordinator",
                              .secret = secret_,
                              .client = absl::StrCat("replicad ", config_.host())});
  coordpb::Request request;
  *request.mutable_record_salvage() = std::move(salvage);
  absl::StatusOr<coordpb::Response> r =
      co_await client.Call<coordpb::Response>(request, absl::Seconds(5));
  if (!r.ok()) {
    co_return absl::Status(r.status().code(),
                           absl::StrCat("recording the salvage at the coordinator ",
                                        config_.coordinator(), ": ", r.status().message()));
  }
  co_return absl::OkStatus();
}

Replicad::~Replicad() {
  metrics_.reset();
  link_.reset();
  slots_.clear();
  role_cache_work_->Close();
  hooks_.reset();
  pool_.reset();  // joins
}

absl::Status Replicad::Start() {
  RETURN_IF_ERROR(MakeDirs(config_.state_dir()));
  // The role cache: serve the last known roles at once, coordinator or not.
  absl::StatusOr<std::string> cached = ReadFile(RoleCachePath(config_));
  if (cached.ok()) {
    configpb::RoleCache cache;
    if (!cache.ParseFromString(*cached)) {
      LogLine(Severity::kWarning, "role cache unreadable; waiting for the coordinator",
              Kv("file", RoleCachePath(config_)));
    } else {
      LogLine(Severity::kInfo, "serving cached roles until the coordinator answers",
              Kv("file", RoleCachePath(config_)) +
                  Kv("version", cache.assignments().version()));
      ApplyAssignments(cache.assignments());
    }
  }
  if (!config_.metrics_listen().empty()) {
    metrics_ = std::make_unique<metrics::MetricsServer>(
        io_, metrics::MetricsServerOptions{.listen = config_.metrics_listen()},
        [this] { return MetricsText(); },
        [this] {
          metrics::HealthReport r;
          r.ok = Healthy(&r.text);
          return r;
        });
    RETURN_IF_ERROR(metrics_->Listen());
    asio::co_spawn(io_, metrics_->Run(), LogExceptions("metrics server"));
  }
  coordpb::RegisterHost reg;
  reg.set_host(config_.host());
  reg.set_metrics_address(config_.metrics_listen());
  for (const configpb::SlotConfig& s : config_.slot()) {
    coordpb::SlotInfo* i = reg.add_slots();
    i->set_slot_id(s.slot_id());
    i->set_host(config_.host());
    i->set_lmtp_address(s.lmtp_listen());
    i->set_api_address(s.api_listen());
    i->set_sync_address(s.sync_listen());
    i->set_data_path(s.data());
    i->set_meta_path(s.meta());
    i->set_spool_path(s.spool());
  }
  link_ = std::make_unique<CoordinatorLink>(
      io_, CoordinatorLinkOptions{
               .coordinator = config_.coordinator(),
               .secret = secret_,
               .registration = reg,
               .on_assignments = [this](const coordpb::Assignments& a) { ApplyAssignments(a); },
               .on_heard =
                   [this](absl::Duration sent) {
                     for (auto& [id, s] : slots_) s->CoordinatorHeard(sent);
                   },
               .status =
                   [this] {
                     std::vector<coordpb::SlotStatus> v;
                     for (auto& [id, s] : slots_) v.push_back(s->Status());
                     return v;
                   }});
  if (known_.lease_ms() > 0) link_->set_poll(absl::Milliseconds(known_.lease_ms() / 3));
  link_done_ = false;
  asio::co_spawn(io_, link_->Run(), [this](std::exception_ptr e) {
    LogExceptions("coordinator link")(e);
    link_done_ = true;
  });
  LogLine(Severity::kInfo, "replicad started",
          Kv("host", config_.host()) + Kv("slots", config_.slot_size()) +
              Kv("metrics", config_.metrics_listen()));
  return absl::OkStatus();
}

void Replicad::ApplyAssignments(const coordpb::Assignments& a) {
  if (stopping_) return;
  if (a.users_included()) {
    MutexLock lock(directory_mu_);
    directory_.clear();
    for (const coordpb::UserEntry& u : a.users()) directory_[u.user()] = u.store_id();
    directory_known_ = true;
    known_.set_directory_version(a.directory_version());
    known_.set_users_included(true);
    *known_.mutable_users() = a.users();
  }
  // A heartbeat reply without slot changes carries only the directory.
  const bool slots_changed = a.slots_size() > 0;
  if (slots_changed && a.version() != 0) {
    known_.set_version(a.version());
    known_.set_cluster_id(a.cluster_id());
    known_.set_lease_ms(a.lease_ms());
    known_.set_vouch_grace_ms(a.vouch_grace_ms());
    *known_.mutable_slots() = a.slots();
    if (link_ && a.lease_ms() > 0) link_->set_poll(absl::Milliseconds(a.lease_ms() / 3));
    for (const coordpb::SlotAssignment& sa : a.slots()) {
      auto it = slots_.find(sa.slot_id());
      if (it == slots_.end()) {
        LogLine(Severity::kWarning, "assignment for a slot this host does not have",
                Kv("slot", sa.slot_id()));
        continue;
      }
      it->second->Apply(sa, a.cluster_id(), absl::Milliseconds(a.lease_ms()),
                        absl::Milliseconds(a.vouch_grace_ms()));
    }
  }
  SaveRoleCache();
}

void Replicad::SaveRoleCache() {
  configpb::RoleCache cache;
  *cache.mutable_assignments() = known_;
  cache.set_saved_ms(absl::ToUnixMillis(absl::Now()));
  {
    MutexLock l(role_cache_mu_);
    role_cache_next_ = cache.SerializeAsString();
  }
  // One write at a time (a gate of one); each writes the latest cache, so
  // the file ends with the last one saved.
  role_cache_work_->Post([this] { WriteRoleCache(); });
}

void Replicad::WriteRoleCache() {
  std::optional<std::string> bytes;
  {
    MutexLock l(role_cache_mu_);
    bytes.swap(role_cache_next_);
  }
  if (!bytes) return;  // an earlier write took it
  absl::Status saved = WriteFileAtomically(RoleCachePath(config_), *bytes);
  if (!saved.ok()) {
    LogLine(Severity::kWarning, "cannot save the role cache", Kv("error", saved.message()));
  }
}

std::optional<lmtp::LmtpReply> Replicad::Directory(const std::string& user, uint64_t store_id) {
  MutexLock lock(directory_mu_);
  if (!directory_known_) {
    return lmtp::LmtpReply{451, "4.3.0", "user directory not loaded yet; retry later"};
  }
  auto it = directory_.find(user);
  if (it == directory_.end()) {
    // Bounce only on a directory known to be current: with the coordinator
    // unreachable, the user may have been added since the cached copy.
    if (!link_ || !link_->connected()) {
      return lmtp::LmtpReply{451, "4.3.0",
                             absl::StrCat("<", user, "> is not in this host's cached user "
                                          "directory and the coordinator is unreachable; retry later")};
    }
    return lmtp::LmtpReply{550, "5.1.1", absl::StrCat("<", user, ">: unknown user")};
  }
  if (it->second != store_id) {
    return lmtp::LmtpReply{451, "4.3.0",
                           absl::StrCat("user ", user, " lives in store ", it->second,
                                        ", not store ", store_id, "; ask the coordinator")};
  }
  return std::nullopt;
}

void Replicad::Stop() {
  if (stopping_) return;
  stopping_ = true;
  LogLine(Severity::kInfo, "replicad stopping", Kv("host", config_.host()));
  if (link_) link_->Stop();
  if (metrics_) metrics_->Stop();
  for (auto& [id, s] : slots_) s->Stop();
}

bool Replicad::done() const {
  if (!stopping_ || !link_done_) return false;
  for (const auto& [id, s] : slots_) {
    if (!s->stopped()) return false;
  }
  return true;
}

std::string Replicad::MetricsText() {
  metrics::MetricsBuilder b;
  const metrics::Labels host{{"host", config_.host()}};
  b.Gauge("mailrepl_coordinator_connected", "1 if the last heartbeat was answered", host,
          link_ && link_->connected() ? 1 : 0);
  b.Gauge("mailrepl_coordinator_silence_seconds", "Seconds since the coordinator last answered",
          host,
          link_ && link_->last_heard() != -absl::InfiniteDuration()
              ? absl::ToDoubleSeconds(SinceBoot() - link_->last_heard())
              : -1);
  b.Gauge("mailrepl_assignments_version", "Topology version of the roles served", host,
          known_.version());
  for (auto& [id, s] : slots_) s->AddMetrics(b);
  if (!b.status().ok()) {
    LogLine(Severity::kWarning, "metrics sample left out", Kv("error", b.status().message()));
  }
  return b.Text();
}

bool Replicad::Healthy(std::string* text) {
  bool ok = true;
  absl::StrAppend(text, "host ", config_.host(), " coordinator ",
                  link_ && link_->connected() ? "connected" : "unreachable", "\n");
  for (auto& [id, s] : slots_) {
    const coordpb::SlotStatus st = s->Status();
    const std::string role = st.role() == coordpb::MASTER    ? "master"
                             : st.role() == coordpb::REPLICA ? "replica"
                                                             : "none";
    absl::StrAppend(text, "slot ", id, " ", role, st.fenced() ? " fenced" : "", " epoch ",
                    st.epoch(), " lsn ", st.last_lsn());
    if (!st.error().empty()) {
      ok = false;
      absl::StrAppend(text, " error: ", st.error());
    }
    absl::StrAppend(text, "\n");
  }
  return ok;
}

}  // namespace mailrepl::replicad
