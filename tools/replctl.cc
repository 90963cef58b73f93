// replctl: the cluster's operator tool, talking to coordinatord.
// Usage and exit codes: `replctl --help` (docs/operations.md "replctl").
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/log.h"
#include "proto/coord.pb.h"
#include "rpc/rpc_client.h"
#include "transport/auth.h"
#include "tools/dev_cluster.h"
#include "tools/placement.h"
#include "tools/replctl_check.h"
#include "tools/replctl_plan.h"
#include "tools/replctl_commands.h"
#include "tools/replctl_mail.h"

ABSL_FLAG(std::string, coordinator, "", "coordinatord ADDR:PORT (or $MAILREPL_COORDINATOR)");
ABSL_FLAG(std::string, secret_file, "", "shared secret file, mode 0600 (or $MAILREPL_SECRET_FILE)");
ABSL_FLAG(std::string, cluster, "",
          "a dev cluster's directory or cluster.json: coordinator and secret from it "
          "(or $MAILREPL_CLUSTER)");
ABSL_FLAG(bool, json, false, "print JSON");
ABSL_FLAG(std::string, dir, "", "dev-cluster: the cluster's directory");
ABSL_FLAG(std::string, hosts, "",
          "dev-cluster up: how many hosts (replicad processes; default 3); "
          "plan: host names, comma-separated, or a count N for host1..hostN");
ABSL_FLAG(int, slots_per_host, 4, "dev-cluster up, plan: slots per host");
ABSL_FLAG(int, replicas, 1, "dev-cluster up, plan: replicas per store");
ABSL_FLAG(int, users, 100, "dev-cluster up: users user0..user{N-1}, round-robin over stores");
ABSL_FLAG(std::string, net, "127.0.2", "dev-cluster up: first three octets of the addresses");
ABSL_FLAG(int, lease_ms, 6000, "dev-cluster up: master lease period");
ABSL_FLAG(int, vouch_grace_ms, 30000,
          "dev-cluster up: how long replicas vouch for masters past their own coordinator "
          "contact (coordinatord --vouch-grace-ms)");
ABSL_FLAG(std::string, durability, "async",
          "dev-cluster up, set-durability, plan --apply: async or sync");
ABSL_FLAG(uint64_t, store, 0, "history, set-durability, assign-users, create-store: the store");
ABSL_FLAG(std::string, slots, "", "create-store: slot ids, comma-separated, master first");
ABSL_FLAG(uint64_t, to, 0, "failover: the target slot (default: the most caught-up replica)");
ABSL_FLAG(int, timeout_ms, 10000, "failover, drain, undrain: per store, before rolling back");
ABSL_FLAG(int, parallel, 1, "drain, undrain: stores switched at once");
ABSL_FLAG(bool, force, false,
          "promote: the master's host is gone, promote a replica anyway; remove-store: remove "
          "a store whose slots hold data");
ABSL_FLAG(bool, wait, false,
          "promote: while the master's host still counts as alive (its lease has not run out), "
          "wait for it (up to two lease periods) instead of refusing");
ABSL_FLAG(bool, apply, false, "plan: create the planned stores on the coordinator");
ABSL_FLAG(std::string, host, "", "check: every store with a slot on this host");
ABSL_FLAG(std::string, service_net, "127.0.1",
          "dev-cluster up: store k's service addresses are SERVICE_NET.k (empty: none)");
ABSL_FLAG(std::string, promote_hook, "",
          "dev-cluster up: every replicad's promote hook (replicad.conf promote_hook)");
ABSL_FLAG(std::string, demote_hook, "",
          "dev-cluster up: every replicad's demote hook (replicad.conf demote_hook)");
ABSL_FLAG(std::string, service_lmtp, "",
          "create-store, set-service-address: the store's LMTP service ADDR:PORT");
ABSL_FLAG(std::string, service_api, "",
          "create-store, set-service-address: the store's client API service ADDR:PORT");
ABSL_FLAG(bool, all, false, "check: every store");
ABSL_FLAG(bool, deep, false, "check: also hash every body and check index against log");
ABSL_FLAG(bool, repair, false, "check: resync differing mailboxes from the master, then re-check");
ABSL_FLAG(double, max_rate, 0, "check --deep: body reads per side, MB/s (0: unthrottled)");
ABSL_FLAG(uint64_t, max_lag, 100000, "check: skip (exit 2) a store whose replica lags more records");
ABSL_FLAG(uint64_t, slot, 0, "mail: read this slot of the user's store (a replica) instead "
          "of its master");

namespace {

constexpr char kUsage[] = R"(replctl: operate a replication cluster through coordinatord.

usage: replctl [--coordinator ADDR --secret-file F | --cluster DIR] COMMAND [args]

commands:
  status [--json]                 every store: master slot@host, replicas, epoch,
                                  durability, state (ok, lagging, fenced, down), lag;
                                  per host: masters, replicas, alive
  history [--store S] [--json]    the coordinator's event history
  lookup USER                     the store and master of USER
  create-store --slots A,B[,...]  [--store S] [--durability async|sync]
                                  [--service-lmtp ADDR:PORT] [--service-api ADDR:PORT]
  assign-users --store S USER...  (re)assign users to a store
  set-durability --store S --durability async|sync
  remove-store STORE [--force]    its slots go idle (their data stays on disk); refused
                                  while users are assigned to it, during a failover, and,
                                  without --force, while its slots hold records
  remove-slot SLOT                forget a slot that is in no store
  remove-host HOST                forget a stopped host and its slots (none in a store)
  set-service-address --store S [--service-lmtp ADDR:PORT] [--service-api ADDR:PORT]
                                  the store's own addresses, bound (IP_FREEBIND) by
                                  whichever slot is its master while it takes writes;
                                  omitted ones are cleared
  failover STORE [--to SLOT] [--timeout-ms T]
                                  planned failover: fence the master, wait until the
                                  target replica has every acknowledged record, switch
                                  master and epoch, open the new master; on a timeout
                                  the old master is unfenced and nothing changed
  drain HOST [--parallel P]       fail every master off HOST, store by store (resumable:
                                  run it again after an interruption); exit 1 and the
                                  list of stores that could not be moved if any
  undrain HOST [--parallel P]     move masters back to their preferred slots on HOST
  promote STORE --force [--wait]  unplanned failover when the master's host is gone:
                                  raise the epoch, wait the lease period (the old master
                                  has fenced itself by then), promote the most
                                  up-to-date live replica, report the LSNs that may be lost.
                                  Refused while the master's host still counts as alive
                                  (a heartbeat within the lease period; the refusal says
                                  when it will not); --wait waits for that instead
  plan --hosts H1,H2,... --slots-per-host K [--replicas R] [--json] [--apply]
                                  a placement of floor(H*K/(R+1)) stores whose masters
                                  are spread so that losing any one host moves its m
                                  masters to the others at most ceil(m/(H-1)) each
                                  (the first replica takes over); prints the stores,
                                  the load per host and every single-host failure.
                                  --apply creates the stores (slot i*K+k of the plan
                                  is the k-th lowest slot id host i registered);
                                  nothing is created if a planned slot is in a store
  check [--store S ...|--host H|--all] [--json] [--deep] [--repair] [--max-rate MB/s]
        [--max-lag N]             compare each store's master with its replicas at a
                                  common LSN (lag is never reported as divergence):
                                  slot digests, then the digests of the mailboxes,
                                  then exactly how the differing mailboxes differ
                                  (missing/extra UIDs, flags, attributes). --deep also
                                  recomputes digests from the message rows, hashes
                                  every body against its GUID and checks each index
                                  against its log (paced by --max-rate). --repair
                                  resyncs the differing mailboxes from the master
                                  (never writing to it) and checks again. One line
                                  per store; the result is recorded in the
                                  coordinator (replctl status shows it). Exit: 0
                                  consistent (or repaired and clean on re-check),
                                  1 differences found, 2 some store could not be
                                  checked (down, switching, lagging beyond --max-lag,
                                  unreachable)
  mail list USER [PREFIX]         read-only, on the live cluster (client API of the
  mail messages USER MAILBOX      master of USER's store, or --slot SLOT: another slot
  mail fetch USER MAILBOX UID     of it): the mailboxes; each message's UID, GUID,
  mail digest USER MAILBOX        size, date, flags; one message's exact bytes; the
       [--json] [--slot SLOT]     mailbox digest `check` compares and its LSN.
                                  MAILBOX: INBOX, Sent or INBOX/Sent, or user/USER/...
  dev-cluster up --dir DIR [--hosts N] [--slots-per-host K] [--replicas R]
                 [--users U] [--lease-ms L] [--vouch-grace-ms G] [--durability D] [--net A.B.C]
                 [--service-net A.B.C] [--promote-hook CMD] [--demote-hook CMD]
                 start a local cluster on loopback addresses and write
                 DIR/cluster.json
  dev-cluster down --dir DIR      stop every process it started, also by start and
                                  restart (the data stays in DIR)
  dev-cluster stop|start|restart NAME --dir DIR
                                  one process: NAME is a host (host1, ...) or
                                  coordinator. stop: SIGTERM, SIGKILL after 15 s;
                                  start: its command line from up, then waits until
                                  it registered (a host) or answers. Stopping a
                                  stopped or starting a running one only says so (0)

The coordinator and secret come from the flags, else from
$MAILREPL_COORDINATOR and $MAILREPL_SECRET_FILE, else from a cluster.json
(--cluster or $MAILREPL_CLUSTER).

exit: 0 done; 1 the command ran and failed (or status: some store not ok);
      2 could not run (usage, coordinator unreachable, authentication).
)";

int CannotRun(const std::string& message) {
  std::fprintf(stderr, "replctl: %s\n", message.c_str());
  return 2;
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

struct Target {
  std::string coordinator;
  std::string secret;
};

absl::StatusOr<Target> ResolveTarget() {
  std::string coordinator = absl::GetFlag(FLAGS_coordinator);
  std::string secret_file = absl::GetFlag(FLAGS_secret_file);
  if (coordinator.empty()) coordinator = Env("MAILREPL_COORDINATOR");
  if (secret_file.empty()) secret_file = Env("MAILREPL_SECRET_FILE");
  std::string cluster = absl::GetFlag(FLAGS_cluster);
  if (cluster.empty()) cluster = Env("MAILREPL_CLUSTER");
  if ((coordinator.empty() || secret_file.empty()) && !cluster.empty()) {
    absl::StatusOr<mailrepl::configpb::DevCluster> c = mailrepl::tools::ReadClusterFile(cluster);
    if (!c.ok()) return c.status();
    if (coordinator.empty()) coordinator = c->coordinator();
    if (secret_file.empty()) secret_file = c->secret_file();
  }
  if (coordinator.empty() || secret_file.empty()) {
    return absl::InvalidArgumentError(
        "no coordinator: give --coordinator and --secret-file, or --cluster DIR");
  }
  absl::StatusOr<std::string> secret = mailrepl::transport::LoadSecret(secret_file);
  if (!secret.ok()) return secret.status();
  return Target{coordinator, *secret};
}

absl::StatusOr<mailrepl::coordpb::Response> Call(const mailrepl::coordpb::Request& request,
                                                 absl::Duration timeout = absl::Seconds(15)) {
  absl::StatusOr<Target> t = ResolveTarget();
  if (!t.ok()) return t.status();
  return mailrepl::rpc::CallOnce<mailrepl::coordpb::Response>(
      {.address = t->coordinator, .service = "coordinator", .secret = t->secret,
       .client = "replctl"},
      request, timeout);
}

// Transport and authentication failures mean "could not run" (2); an
// answered call that failed means the command failed (1).
int Failed(const absl::Status& s) {
  const std::string m(s.message());
  std::fprintf(stderr, "replctl: %s\n", m.c_str());
  const bool unreachable =
      absl::IsUnauthenticated(s) || absl::IsPermissionDenied(s) ||
      ((absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) &&
       (absl::StrContains(m, "cannot connect") || absl::StrContains(m, "connecting to")));
  return unreachable ? 2 : 1;
}

mailrepl::coordpb::Durability ParseDurability(const std::string& d, bool* ok) {
  *ok = d == "async" || d == "sync";
  return d == "sync" ? mailrepl::coordpb::SYNC : mailrepl::coordpb::ASYNC;
}

std::string BinDir(const char* argv0) {
  const std::string env = Env("MAILREPL_BIN");
  if (!env.empty()) return env;
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) self = std::filesystem::absolute(argv0);
  return self.parent_path().string();
}

absl::StatusOr<mailrepl::coordpb::FailoverReply> CallFailover(uint64_t store, uint64_t to,
                                                              const std::string& reason) {
  mailrepl::coordpb::Request request;
  mailrepl::coordpb::Failover* f = request.mutable_failover();
  f->set_store_id(store);
  f->set_to_slot_id(to);
  f->set_timeout_ms(absl::GetFlag(FLAGS_timeout_ms));
  f->set_reason(reason);
  absl::StatusOr<mailrepl::coordpb::Response> r =
      Call(request, absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms)) + absl::Seconds(15));
  if (!r.ok()) return r.status();
  return r->failover();
}

std::string Describe(const mailrepl::coordpb::FailoverReply& f) {
  const auto& s = f.store();
  std::string to;
  for (const auto& m : s.members()) {
    if (m.slot_id() == s.master_slot_id()) to = absl::StrCat(m.slot_id(), "@", m.host());
  }
  return absl::StrCat("store ", s.store_id(), ": slot ", f.from_slot_id(), " -> ", to,
                      " at LSN ", f.switch_lsn(), ", epoch ", s.epoch(), ", ", f.took_ms(), " ms");
}

int Promote(uint64_t store, bool json) {
  mailrepl::coordpb::Request request;
  mailrepl::coordpb::Promote* p = request.mutable_promote();
  p->set_store_id(store);
  p->set_force(absl::GetFlag(FLAGS_force));
  p->set_wait(absl::GetFlag(FLAGS_wait));
  p->set_timeout_ms(absl::GetFlag(FLAGS_timeout_ms));
  p->set_reason("manual");
  // The coordinator waits up to 2 L + G (lease, vouch grace) before it
  // switches, and with --wait up to 2 L more before it begins.
  absl::StatusOr<mailrepl::coordpb::Response> r =
      Call(request, absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms)) +
                        absl::Minutes(absl::GetFlag(FLAGS_wait) ? 4 : 2));
  if (!r.ok()) return Failed(r.status());
  const mailrepl::coordpb::PromoteReply& pr = r->promote();
  if (json) {
    std::printf("%s\n", mailrepl::tools::ToJson(pr).c_str());
    return 0;
  }
  std::printf("%s\n", mailrepl::tools::FormatPromote(pr).c_str());
  return 0;
}

int Failover(uint64_t store, uint64_t to, const std::string& reason, bool json) {
  absl::StatusOr<mailrepl::coordpb::FailoverReply> f = CallFailover(store, to, reason);
  if (!f.ok()) return Failed(f.status());
  std::printf("%s\n", json ? mailrepl::tools::ToJson(*f).c_str() : Describe(*f).c_str());
  return 0;
}

// drain: every store mastered on HOST moves to a replica elsewhere;
// undrain: every store whose preferred slot is on HOST moves back to it.
int Drain(const std::string& host, bool undrain, bool json) {
  mailrepl::coordpb::Request request;
  request.mutable_get_status();
  absl::StatusOr<mailrepl::coordpb::Response> status = Call(request);
  if (!status.ok()) return Failed(status.status());
  struct Move {
    uint64_t store;
    uint64_t to;
  };
  std::vector<Move> moves;
  bool known_host = false;
  for (const auto& h : status->get_status().hosts()) known_host |= h.host() == host;
  if (!known_host) return CannotRun(absl::StrCat("no host `", host, "` in the cluster"));
  for (const auto& st : status->get_status().stores()) {
    const auto& s = st.store();
    std::string master_host, preferred_host;
    for (const auto& m : s.members()) {
      if (m.slot_id() == s.master_slot_id()) master_host = m.host();
      if (m.slot_id() == s.preferred_slot_id()) preferred_host = m.host();
    }
    if (!undrain && master_host == host) moves.push_back({s.store_id(), 0});
    if (undrain && preferred_host == host && s.master_slot_id() != s.preferred_slot_id()) {
      moves.push_back({s.store_id(), s.preferred_slot_id()});
    }
  }
  const std::string verb = undrain ? "undrain" : "drain";
  const bool tty = ::isatty(1);
  std::printf("%s %s: %zu stores to move, %d at a time\n", verb.c_str(), host.c_str(),
              moves.size(), std::max(1, absl::GetFlag(FLAGS_parallel)));
  std::mutex mu;
  size_t next = 0, done = 0;
  std::vector<std::string> failed;
  const absl::Time start = absl::Now();
  auto worker = [&] {
    for (;;) {
      Move m;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (next == moves.size()) return;
        m = moves[next++];
      }
      absl::StatusOr<mailrepl::coordpb::FailoverReply> f =
          CallFailover(m.store, m.to, absl::StrCat(verb, " ", host));
      std::lock_guard<std::mutex> lock(mu);
      ++done;
      if (f.ok()) {
        std::printf("[%zu/%zu] %s\n", done, moves.size(),
                    json ? mailrepl::tools::ToJson(*f).c_str() : Describe(*f).c_str());
      } else {
        failed.push_back(absl::StrCat("store ", m.store, ": ", f.status().message()));
        std::printf("[%zu/%zu] store %llu FAILED: %s\n", done, moves.size(),
                    static_cast<unsigned long long>(m.store),
                    std::string(f.status().message()).c_str());
      }
      if (tty) std::fflush(stdout);
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < std::max(1, absl::GetFlag(FLAGS_parallel)); ++i) threads.emplace_back(worker);
  for (std::thread& t : threads) t.join();
  std::printf("%s %s: %zu of %zu stores moved in %s\n", verb.c_str(), host.c_str(),
              moves.size() - failed.size(), moves.size(),
              absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1))).c_str());
  if (!failed.empty()) {
    std::printf("not moved (run `replctl %s %s` again to retry):\n", verb.c_str(), host.c_str());
    for (const std::string& f : failed) std::printf("  %s\n", f.c_str());
    return 1;
  }
  return 0;
}

// plan: print the placement; --apply creates it from the hosts' registered
// slots, or nothing if one of those slots is already in a store.
int Plan(const std::vector<std::string>& args, bool json) {
  namespace tools = mailrepl::tools;
  if (args.size() != 1) return CannotRun("plan takes no arguments, only flags (see --help)");
  if (absl::GetFlag(FLAGS_hosts).empty()) return CannotRun("plan needs --hosts H1,H2,...");
  absl::StatusOr<std::vector<std::string>> names = tools::ParseHostNames(absl::GetFlag(FLAGS_hosts));
  if (!names.ok()) return CannotRun(std::string(names.status().message()));
  absl::StatusOr<tools::Placement> plan =
      tools::Plan(static_cast<int>(names->size()), absl::GetFlag(FLAGS_slots_per_host),
                  absl::GetFlag(FLAGS_replicas));
  if (!plan.ok()) return CannotRun(std::string(plan.status().message()));
  const tools::FailureLoad load = tools::Evaluate(*plan);
  if (!absl::GetFlag(FLAGS_apply)) {
    std::fputs((json ? tools::PlanToJson(*plan, load, *names, nullptr)
                     : tools::FormatPlan(*plan, load, *names))
                   .c_str(),
               stdout);
    return 0;
  }
  bool durability_ok;
  const mailrepl::coordpb::Durability durability =
      ParseDurability(absl::GetFlag(FLAGS_durability), &durability_ok);
  if (!durability_ok) return CannotRun("--durability is async or sync");
  mailrepl::coordpb::Request request;
  request.mutable_get_status();
  absl::StatusOr<mailrepl::coordpb::Response> status = Call(request);
  if (!status.ok()) return Failed(status.status());
  std::vector<std::string> notes;
  absl::StatusOr<tools::Placement> mapped =
      tools::MapToRegisteredSlots(*plan, *names, status->get_status(), &notes);
  if (!mapped.ok()) return CannotRun(std::string(mapped.status().message()));
  std::vector<tools::StoreOutcome> outcomes = tools::TakenSlots(*mapped, status->get_status());
  const bool refused = !outcomes.empty();
  if (!refused) outcomes = tools::CreateStores(*mapped, durability, [](const mailrepl::coordpb::Request& r) { return Call(r); });
  if (json) {
    std::fputs(tools::PlanToJson(*mapped, load, *names, &outcomes).c_str(), stdout);
  } else {
    std::fputs(tools::FormatPlan(*mapped, load, *names).c_str(), stdout);
    for (const std::string& n : notes) std::printf("note: %s\n", n.c_str());
    std::fputs(tools::FormatOutcomes(*mapped, outcomes, *names).c_str(), stdout);
    if (refused) {
      std::printf("apply: refused, nothing created: %zu planned stores use slots already in a "
                  "store\n",
                  outcomes.size());
    }
  }
  for (const tools::StoreOutcome& o : outcomes) {
    if (o.store_id == 0) return 1;
  }
  return 0;
}

constexpr absl::Duration kDevClusterGrace = absl::Seconds(15);  // SIGTERM to SIGKILL
constexpr absl::Duration kDevClusterStartTimeout = absl::Seconds(60);

// No cluster, an unknown process name, an old cluster: could not run (2);
// a process that would not stop or start: failed (1).
int DevClusterFailed(const absl::Status& s) {
  if (absl::IsNotFound(s) || absl::IsInvalidArgument(s) || absl::IsFailedPrecondition(s)) {
    return CannotRun(std::string(s.message()));
  }
  std::fprintf(stderr, "replctl: %s\n", std::string(s.message()).c_str());
  return 1;
}

// dev-cluster stop|start|restart NAME: one process of the cluster.
int DevClusterProcess(const std::string& verb, const std::string& name, const std::string& dir) {
  namespace tools = mailrepl::tools;
  absl::StatusOr<std::vector<std::string>> lines;
  if (verb == "restart") {
    lines = tools::DevClusterRestart(dir, name, kDevClusterGrace, kDevClusterStartTimeout);
  } else {
    absl::StatusOr<std::string> line =
        verb == "stop" ? tools::DevClusterStop(dir, name, kDevClusterGrace)
                       : tools::DevClusterStart(dir, name, kDevClusterStartTimeout);
    if (line.ok()) {
      lines = std::vector<std::string>{*line};
    } else {
      lines = line.status();
    }
  }
  if (!lines.ok()) return DevClusterFailed(lines.status());
  for (const std::string& l : *lines) std::printf("%s\n", l.c_str());
  return 0;
}

int DevCluster(const std::vector<std::string>& args, const char* argv0) {
  using mailrepl::tools::DevClusterOptions;
  const std::string verb = args.size() >= 2 ? args[1] : "";
  const bool one = verb == "stop" || verb == "start" || verb == "restart";
  if (!((verb == "up" || verb == "down") && args.size() == 2) && !(one && args.size() == 3)) {
    return CannotRun(
        "dev-cluster takes `up`, `down`, or `stop|start|restart NAME` (a host or coordinator)");
  }
  const std::string dir = absl::GetFlag(FLAGS_dir);
  if (dir.empty()) return CannotRun("dev-cluster needs --dir DIR");
  if (one) return DevClusterProcess(verb, args[2], dir);
  if (verb == "down") {
    absl::StatusOr<std::vector<std::string>> lines =
        mailrepl::tools::DevClusterDown(dir, kDevClusterGrace);
    if (!lines.ok()) return DevClusterFailed(lines.status());
    for (const std::string& l : *lines) std::printf("%s\n", l.c_str());
    std::printf("dev cluster in %s stopped\n", dir.c_str());
    return 0;
  }
  int hosts = 3;
  if (!absl::GetFlag(FLAGS_hosts).empty() && !absl::SimpleAtoi(absl::GetFlag(FLAGS_hosts), &hosts)) {
    return CannotRun("dev-cluster up: --hosts takes a number of hosts");
  }
  DevClusterOptions o{.dir = dir,
                      .bin_dir = BinDir(argv0),
                      .hosts = hosts,
                      .slots_per_host = absl::GetFlag(FLAGS_slots_per_host),
                      .replicas = absl::GetFlag(FLAGS_replicas),
                      .users = absl::GetFlag(FLAGS_users),
                      .net = absl::GetFlag(FLAGS_net),
                      .service_net = absl::GetFlag(FLAGS_service_net),
                      .promote_hook = absl::GetFlag(FLAGS_promote_hook),
                      .demote_hook = absl::GetFlag(FLAGS_demote_hook),
                      .lease_ms = static_cast<uint32_t>(absl::GetFlag(FLAGS_lease_ms)),
                      .vouch_grace_ms = static_cast<uint32_t>(absl::GetFlag(FLAGS_vouch_grace_ms)),
                      .durability = absl::GetFlag(FLAGS_durability)};
  const absl::Time start = absl::Now();
  absl::StatusOr<mailrepl::configpb::DevCluster> c = mailrepl::tools::DevClusterUp(o);
  if (!c.ok()) return CannotRun(std::string(c.status().message()));
  std::printf("dev cluster up in %s: %d hosts, %d slots, %d stores, %d users (%s)\n",
              c->dir().c_str(), c->hosts_size(), c->slots_size(), c->stores_size(),
              c->users_size(),
              absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1)))
                  .c_str());
  std::printf("coordinator %s; Postfix socketmap %s; cluster file %s/cluster.json\n",
              c->coordinator().c_str(), c->socketmap().c_str(), c->dir().c_str());
  std::printf("try: replctl --cluster %s status\n", c->dir().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  // Flags are spelled with dashes (--slots-per-host); Abseil's names use
  // underscores.
  std::vector<std::string> spelled(argv, argv + argc);
  // --store may be given several times (check): keep every value.
  std::vector<uint64_t> stores_given;
  for (size_t i = 1; i < spelled.size(); ++i) {
    std::string value;
    if (spelled[i] == "--store" && i + 1 < spelled.size()) value = spelled[i + 1];
    if (spelled[i].rfind("--store=", 0) == 0) value = spelled[i].substr(8);
    uint64_t id;
    if (!value.empty() && absl::SimpleAtoi(value, &id)) stores_given.push_back(id);
  }
  std::vector<char*> argv2;
  for (std::string& a : spelled) {
    if (a.rfind("--", 0) == 0) {
      const size_t end = std::min(a.find('='), a.size());
      std::replace(a.begin() + 2, a.begin() + end, '-', '_');
    }
    argv2.push_back(a.data());
  }
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv2.data());
  std::vector<std::string> args(rest.begin() + 1, rest.end());
  if (args.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  mailrepl::SetLogQuiet(true);
  const std::string& command = args[0];
  using namespace mailrepl;
  const bool json = absl::GetFlag(FLAGS_json);

  if (command == "dev-cluster") return DevCluster(args, argv[0]);
  if (command == "plan") return Plan(args, json);
  // Every other command talks to the coordinator: find it first.
  if (absl::StatusOr<Target> t = ResolveTarget(); !t.ok()) {
    return CannotRun(std::string(t.status().message()));
  }
  if (command == "promote") {
    uint64_t store = 0;
    if (args.size() != 2 || !absl::SimpleAtoi(args[1], &store)) {
      return CannotRun("promote takes one STORE id (and --force)");
    }
    return Promote(store, json);
  }
  if (command == "failover") {
    uint64_t store = 0;
    if (args.size() != 2 || !absl::SimpleAtoi(args[1], &store)) {
      return CannotRun("failover takes one STORE id");
    }
    return Failover(store, absl::GetFlag(FLAGS_to), "manual", json);
  }
  if (command == "check") {
    tools::CheckOptions o;
    o.stores = stores_given;
    for (size_t i = 1; i < args.size(); ++i) {
      uint64_t id;
      if (!absl::SimpleAtoi(args[i], &id)) return CannotRun("check takes store ids: check 3 5");
      o.stores.push_back(id);
    }
    o.host = absl::GetFlag(FLAGS_host);
    o.all = absl::GetFlag(FLAGS_all);
    o.deep = absl::GetFlag(FLAGS_deep);
    o.repair = absl::GetFlag(FLAGS_repair);
    o.max_rate_mb = absl::GetFlag(FLAGS_max_rate);
    o.max_lag_records = absl::GetFlag(FLAGS_max_lag);
    o.json = json;
    o.progress = !json && ::isatty(STDOUT_FILENO) && ::isatty(STDERR_FILENO);
    if (o.stores.empty() && o.host.empty() && !o.all) {
      return CannotRun("check: give --store S (repeatable), --host H or --all");
    }
    if (o.max_rate_mb < 0) return CannotRun("--max-rate must not be negative");
    return tools::RunCheck(
        o, [](const coordpb::Request& r) { return Call(r); }, ResolveTarget()->secret);
  }
  if (command == "mail") {
    return tools::RunMail({.args = args, .json = json, .slot = absl::GetFlag(FLAGS_slot),
                           .secret = ResolveTarget()->secret},
                          [](const coordpb::Request& r) { return Call(r); });
  }
  if (command == "drain" || command == "undrain") {
    if (args.size() != 2) return CannotRun(command + " takes one HOST");
    return Drain(args[1], command == "undrain", json);
  }

  coordpb::Request request;
  if (command == "status") {
    request.mutable_get_status();
  } else if (command == "history") {
    request.mutable_get_history()->set_store_id(absl::GetFlag(FLAGS_store));
  } else if (command == "remove-store" || command == "remove-slot") {
    uint64_t id = 0;
    if (args.size() != 2 || !absl::SimpleAtoi(args[1], &id) || id == 0) {
      return CannotRun(absl::StrCat(command, " takes one ", command == "remove-store" ? "STORE" : "SLOT",
                                    " id"));
    }
    if (command == "remove-store") {
      request.mutable_remove_store()->set_store_id(id);
      request.mutable_remove_store()->set_force(absl::GetFlag(FLAGS_force));
    } else {
      request.mutable_remove_slot()->set_slot_id(id);
    }
  } else if (command == "remove-host") {
    if (args.size() != 2) return CannotRun("remove-host takes one HOST");
    request.mutable_remove_host()->set_host(args[1]);
  } else if (command == "lookup") {
    if (args.size() != 2) return CannotRun("lookup takes one USER");
    request.mutable_lookup_user()->set_user(args[1]);
  } else if (command == "create-store") {
    coordpb::CreateStore* cs = request.mutable_create_store();
    cs->set_store_id(absl::GetFlag(FLAGS_store));
    for (absl::string_view id : absl::StrSplit(absl::GetFlag(FLAGS_slots), ',', absl::SkipEmpty())) {
      uint64_t n;
      if (!absl::SimpleAtoi(id, &n)) return CannotRun("--slots takes slot ids: 1,5");
      cs->add_slot_ids(n);
    }
    bool ok;
    cs->set_durability(ParseDurability(absl::GetFlag(FLAGS_durability), &ok));
    if (!ok) return CannotRun("--durability is async or sync");
    cs->set_service_lmtp(absl::GetFlag(FLAGS_service_lmtp));
    cs->set_service_api(absl::GetFlag(FLAGS_service_api));
  } else if (command == "set-service-address") {
    if (absl::GetFlag(FLAGS_store) == 0) {
      return CannotRun("set-service-address --store S [--service-lmtp A:P] [--service-api A:P]");
    }
    coordpb::SetServiceAddress* sa = request.mutable_set_service_address();
    sa->set_store_id(absl::GetFlag(FLAGS_store));
    sa->set_lmtp(absl::GetFlag(FLAGS_service_lmtp));
    sa->set_api(absl::GetFlag(FLAGS_service_api));
  } else if (command == "assign-users") {
    if (absl::GetFlag(FLAGS_store) == 0 || args.size() < 2) {
      return CannotRun("assign-users --store S USER...");
    }
    request.mutable_assign_users()->set_store_id(absl::GetFlag(FLAGS_store));
    for (size_t i = 1; i < args.size(); ++i) request.mutable_assign_users()->add_users(args[i]);
  } else if (command == "set-durability") {
    bool ok;
    request.mutable_set_durability()->set_store_id(absl::GetFlag(FLAGS_store));
    request.mutable_set_durability()->set_durability(
        ParseDurability(absl::GetFlag(FLAGS_durability), &ok));
    if (!ok || absl::GetFlag(FLAGS_store) == 0) {
      return CannotRun("set-durability --store S --durability async|sync");
    }
  } else {
    return CannotRun(absl::StrCat("unknown command `", command, "` (see --help)"));
  }

  absl::StatusOr<coordpb::Response> r = Call(request);
  if (!r.ok()) return Failed(r.status());
  if (command == "status") {
    const coordpb::GetStatusReply& s = r->get_status();
    std::fputs((json ? tools::ToJson(s) : tools::FormatStatus(s)).c_str(), stdout);
    for (const auto& st : s.stores()) {
      if (st.state() != "ok") return 1;
    }
    return 0;
  }
  if (command == "history") {
    std::fputs((json ? tools::ToJson(r->get_history()) : tools::FormatHistory(r->get_history()))
                   .c_str(),
               stdout);
    return 0;
  }
  if (!json && absl::StartsWith(command, "remove-")) {
    if (command == "remove-store") {
      std::printf("store %s removed; its slots are idle\n", args[1].c_str());
    } else if (command == "remove-slot") {
      std::printf("slot %s removed\n", args[1].c_str());
    } else {
      std::printf("host %s removed with its %u slots\n", args[1].c_str(),
                  r->remove_host().slots_removed());
    }
    return 0;
  }
  if (command == "lookup") {
    const coordpb::LookupUserReply& l = r->lookup_user();
    if (json) {
      std::fputs(tools::ToJson(l).c_str(), stdout);
    } else if (l.found()) {
      std::printf("%s: store %llu, master slot %llu@%s, lmtp %s, api %s, epoch %llu\n",
                  args[1].c_str(), static_cast<unsigned long long>(l.store_id()),
                  static_cast<unsigned long long>(l.master().slot_id()), l.master().host().c_str(),
                  l.master().lmtp_address().c_str(), l.master().api_address().c_str(),
                  static_cast<unsigned long long>(l.epoch()));
    } else {
      std::printf("%s: unknown user\n", args[1].c_str());
    }
    return l.found() ? 0 : 1;
  }
  std::fputs(tools::ToJson(*r).c_str(), stdout);
  return 0;
}
