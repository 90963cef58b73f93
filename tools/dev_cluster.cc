#include "tools/dev_cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "proto/coord.pb.h"
#include "replicad/config.h"
#include "rpc/rpc_client.h"
#include "transport/auth.h"
#include "tools/placement.h"

namespace mailrepl::tools {

namespace {

constexpr int kLmtpPort = 2424;
constexpr int kApiPort = 2425;
constexpr int kSyncPort = 2426;
constexpr int kCoordinatorPort = 7400;
constexpr int kSocketmapPort = 7401;
constexpr int kMetricsPort = 9100;

// Starts `argv` detached (own session), stdout and stderr appended to log.
absl::StatusOr<int> Spawn(const std::vector<std::string>& argv, const std::string& log) {
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "open", log);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    return ErrnoStatus(errno, "fork", argv[0]);
  }
  if (pid == 0) {
    ::setsid();
    const int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(fd);
  return pid;
}

bool Alive(int pid) { return pid > 0 && ::kill(pid, 0) == 0; }

absl::Status WriteClusterFile(const configpb::DevCluster& c) {
  std::string json;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  if (!google::protobuf::util::MessageToJsonString(c, &json, o).ok()) {
    return absl::InternalError("cannot encode cluster.json");
  }
  return WriteFileAtomically(c.dir() + "/cluster.json", json);
}

rpc::RpcClientOptions CoordinatorOptions(const configpb::DevCluster& c, const std::string& secret) {
  return {.address = c.coordinator(),
          .service = "coordinator",
          .secret = secret,
          .client = "replctl dev-cluster"};
}

absl::StatusOr<coordpb::Response> Call(const configpb::DevCluster& c, const std::string& secret,
                                       const coordpb::Request& request) {
  return rpc::CallOnce<coordpb::Response>(CoordinatorOptions(c, secret), request,
                                          absl::Seconds(10));
}

// Polls GetStatus until done(status) or the deadline; the last error or
// `waiting_for` in the timeout message.
absl::StatusOr<coordpb::GetStatusReply> WaitForStatus(
    const configpb::DevCluster& c, const std::string& secret, absl::Time deadline,
    const std::string& waiting_for,
    const std::function<bool(const coordpb::GetStatusReply&)>& done) {
  coordpb::Request request;
  request.mutable_get_status();
  std::string last = "no answer yet";
  for (;;) {
    absl::StatusOr<coordpb::Response> r = Call(c, secret, request);
    if (r.ok() && done(r->get_status())) return r->get_status();
    if (!r.ok()) last = std::string(r.status().message());
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("timed out waiting for ", waiting_for, " (", last,
                        "); see the logs in ", c.dir(), "/logs"));
    }
    absl::SleepFor(absl::Milliseconds(100));  // polling interval, not a wait for a condition
  }
}

}  // namespace

absl::StatusOr<configpb::DevCluster> ReadClusterFile(const std::string& path) {
  std::string file = path;
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) file = path + "/cluster.json";
  ASSIGN_OR_RETURN(std::string json, ReadFile(file));
  configpb::DevCluster c;
  google::protobuf::util::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  if (!google::protobuf::util::JsonStringToMessage(json, &c, o).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file, " is not a cluster.json"));
  }
  return c;
}

absl::StatusOr<configpb::DevCluster> DevClusterUp(const DevClusterOptions& options) {
  if (options.hosts < 2) return absl::InvalidArgumentError("--hosts must be at least 2");
  if (options.slots_per_host < 1) return absl::InvalidArgumentError("--slots-per-host must be >= 1");
  if (options.replicas < 1 || options.replicas >= options.hosts) {
    return absl::InvalidArgumentError("--replicas must be between 1 and hosts - 1");
  }
  if (options.hosts * options.slots_per_host > 180) {
    return absl::InvalidArgumentError("at most 180 slots (one loopback address each)");
  }
  if (options.durability != "async" && options.durability != "sync") {
    return absl::InvalidArgumentError("--durability is async or sync");
  }
  const std::string dir = std::filesystem::absolute(options.dir).lexically_normal().string();
  if (absl::StatusOr<configpb::DevCluster> old = ReadClusterFile(dir); old.ok()) {
    if (Alive(old->coordinator_pid())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a cluster already runs in ", dir, ": `replctl dev-cluster down --dir ", dir, "` first"));
    }
  }
  RETURN_IF_ERROR(MakeDirs(dir + "/logs"));

  configpb::DevCluster c;
  c.set_dir(dir);
  c.set_lease_ms(options.lease_ms);
  c.set_secret_file(dir + "/secret");
  c.set_coordinator(absl::StrCat(options.net, ".1:", kCoordinatorPort));
  c.set_socketmap(absl::StrCat(options.net, ".1:", kSocketmapPort));
  c.set_coordinator_log(dir + "/logs/coordinatord.log");
  if (!ReadFile(c.secret_file()).ok()) {
    RETURN_IF_ERROR(WriteFileAtomically(c.secret_file(),
                                        absl::BytesToHexString(transport::NewChallenge()) + "\n"));
  }
  if (::chmod(c.secret_file().c_str(), 0600) != 0) return ErrnoStatus(errno, "chmod 600", c.secret_file());
  ASSIGN_OR_RETURN(std::string secret, transport::LoadSecret(c.secret_file()));

  // Everything started so far is in cluster.json at every step, so that
  // `down` (or the cleanup below) can stop it.
  auto fail = [&](absl::Status s) {
    (void)WriteClusterFile(c);
    (void)DevClusterDown(dir, absl::Seconds(5));
    return s;
  };
  ASSIGN_OR_RETURN(int coordinator_pid,
                   Spawn({options.bin_dir + "/coordinatord", "--db", dir + "/coordinator.db",
                          "--listen", c.coordinator(), "--secret-file", c.secret_file(),
                          "--lease-ms", absl::StrCat(options.lease_ms), "--vouch-grace-ms",
                          absl::StrCat(options.vouch_grace_ms), "--cluster-id",
                          "dev", "--socketmap-listen", c.socketmap()},
                         c.coordinator_log()));
  c.set_coordinator_pid(coordinator_pid);

  for (int h = 1; h <= options.hosts; ++h) {
    const std::string name = absl::StrCat("host", h);
    const std::string host_dir = absl::StrCat(dir, "/", name);
    configpb::ReplicadConfig rc;
    rc.set_host(name);
    rc.set_coordinator(c.coordinator());
    rc.set_secret_file(c.secret_file());
    rc.set_metrics_listen(absl::StrCat(options.net, ".", 200 + h, ":", kMetricsPort));
    rc.set_state_dir(host_dir + "/state");
    rc.set_promote_hook(options.promote_hook);
    rc.set_demote_hook(options.demote_hook);
    for (int k = 1; k <= options.slots_per_host; ++k) {
      const int slot_id = (h - 1) * options.slots_per_host + k;
      const std::string ip = absl::StrCat(options.net, ".", 10 + slot_id);
      configpb::SlotConfig* s = rc.add_slot();
      s->set_slot_id(slot_id);
      s->set_data(absl::StrCat(host_dir, "/slot", slot_id));
      s->set_lmtp_listen(absl::StrCat(ip, ":", kLmtpPort));
      s->set_api_listen(absl::StrCat(ip, ":", kApiPort));
      s->set_sync_listen(absl::StrCat(ip, ":", kSyncPort));
    }
    RETURN_IF_ERROR(replicad::ValidateReplicadConfig(rc, name));
    std::string text;
    google::protobuf::TextFormat::PrintToString(rc, &text);
    RETURN_IF_ERROR(MakeDirs(host_dir));
    configpb::DevHost* host = c.add_hosts();
    host->set_name(name);
    host->set_config(host_dir + "/replicad.conf");
    host->set_log(absl::StrCat(dir, "/logs/", name, ".log"));
    host->set_metrics(rc.metrics_listen());
    RETURN_IF_ERROR(WriteFileAtomically(
        host->config(), absl::StrCat("# replicad.conf written by replctl dev-cluster up\n", text)));
    for (const configpb::SlotConfig& s : rc.slot()) {
      configpb::DevSlot* d = c.add_slots();
      d->set_slot_id(s.slot_id());
      d->set_host(name);
      d->set_data(s.data());
      d->set_meta(s.meta());
      d->set_spool(s.spool());
      d->set_lmtp(s.lmtp_listen());
      d->set_api(s.api_listen());
      d->set_sync(s.sync_listen());
      d->set_metrics(rc.metrics_listen());
    }
    absl::StatusOr<int> pid = Spawn({options.bin_dir + "/replicad", "--config", host->config()},
                                    host->log());
    if (!pid.ok()) return fail(pid.status());
    host->set_pid(*pid);
  }
  RETURN_IF_ERROR(WriteClusterFile(c));

  const absl::Time deadline = absl::Now() + options.timeout;
  const int total_slots = options.hosts * options.slots_per_host;
  absl::StatusOr<coordpb::GetStatusReply> registered = WaitForStatus(
      c, secret, deadline, "every host to register",
      [&](const coordpb::GetStatusReply& s) {
        int slots = 0;
        for (const auto& h : s.hosts()) slots += h.alive() ? h.slot_ids_size() : 0;
        return slots == total_slots;
      });
  if (!registered.ok()) return fail(registered.status());

  // Stores as `replctl plan` places them (tools/placement.h); its slot ids
  // are the ones numbered above.
  absl::StatusOr<Placement> placement =
      Plan(options.hosts, options.slots_per_host, options.replicas);
  if (!placement.ok()) return fail(placement.status());
  std::map<uint64_t, configpb::DevSlot*> by_id;
  for (configpb::DevSlot& d : *c.mutable_slots()) by_id[d.slot_id()] = &d;
  for (size_t i = 0; i < placement->stores.size(); ++i) {
    coordpb::Request request;
    coordpb::CreateStore* cs = request.mutable_create_store();
    cs->set_store_id(i + 1);
    for (uint64_t id : placement->stores[i].slot_ids) cs->add_slot_ids(id);
    cs->set_master_slot_id(cs->slot_ids(0));
    cs->set_durability(options.durability == "sync" ? coordpb::SYNC : coordpb::ASYNC);
    if (!options.service_net.empty()) {
      const std::string ip = absl::StrCat(options.service_net, ".", i + 1);
      cs->set_service_lmtp(absl::StrCat(ip, ":", kLmtpPort));
      cs->set_service_api(absl::StrCat(ip, ":", kApiPort));
    }
    absl::StatusOr<coordpb::Response> r = Call(c, secret, request);
    if (!r.ok()) return fail(r.status());
    const coordpb::StoreInfo& info = r->create_store().store();
    configpb::DevStore* ds = c.add_stores();
    ds->set_store_id(info.store_id());
    ds->set_master_slot_id(info.master_slot_id());
    ds->set_epoch(info.epoch());
    ds->set_durability(options.durability);
    ds->set_service_lmtp(info.service_lmtp());
    ds->set_service_api(info.service_api());
    for (uint64_t id : cs->slot_ids()) {
      configpb::DevSlot* d = by_id[id];
      d->set_store_id(info.store_id());
      d->set_role(id == info.master_slot_id() ? "master" : "replica");
      if (id == info.master_slot_id()) {
        ds->set_master_lmtp(d->lmtp());
        ds->set_master_api(d->api());
      } else {
        ds->add_replica_slot_ids(id);
      }
    }
  }
  // Users round-robin over the stores.
  std::map<uint64_t, std::vector<std::string>> users;
  for (int u = 0; u < options.users && c.stores_size() > 0; ++u) {
    const uint64_t store = c.stores(u % c.stores_size()).store_id();
    users[store].push_back(absl::StrCat("user", u));
    (*c.mutable_users())[absl::StrCat("user", u)] = store;
  }
  for (const auto& [store, names] : users) {
    coordpb::Request request;
    request.mutable_assign_users()->set_store_id(store);
    for (const std::string& n : names) request.mutable_assign_users()->add_users(n);
    absl::StatusOr<coordpb::Response> r = Call(c, secret, request);
    if (!r.ok()) return fail(r.status());
  }
  RETURN_IF_ERROR(WriteClusterFile(c));

  absl::StatusOr<coordpb::GetStatusReply> ready = WaitForStatus(
      c, secret, deadline,
      "every store to be ok (masters serving, replicas connected) and every host to hold the "
      "current roles and users",
      [&](const coordpb::GetStatusReply& s) {
        if (s.stores_size() != c.stores_size()) return false;
        for (const auto& h : s.hosts()) {
          if (h.known_version() != s.version() ||
              h.known_directory_version() != s.directory_version()) {
            return false;
          }
        }
        for (const auto& st : s.stores()) {
          if (st.state() != "ok") return false;
        }
        return true;
      });
  if (!ready.ok()) return fail(ready.status());
  return c;
}

absl::Status DevClusterDown(const std::string& dir, absl::Duration grace) {
  absl::StatusOr<configpb::DevCluster> c = ReadClusterFile(dir);
  if (!c.ok()) {
    if (absl::IsNotFound(c.status())) return absl::OkStatus();
    return c.status();
  }
  std::vector<int> pids;
  for (const configpb::DevHost& h : c->hosts()) pids.push_back(h.pid());
  pids.push_back(c->coordinator_pid());  // last: hosts say goodbye first
  for (int pid : pids) {
    if (Alive(pid)) ::kill(pid, SIGTERM);
  }
  const absl::Time deadline = absl::Now() + grace;
  for (int pid : pids) {
    while (Alive(pid) && absl::Now() < deadline) {
      // Not our child (it was started by an earlier replctl): poll.
      if (::waitpid(pid, nullptr, WNOHANG) == pid) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    if (Alive(pid)) ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, WNOHANG);
  }
  return absl::OkStatus();
}

}  // namespace mailrepl::tools
