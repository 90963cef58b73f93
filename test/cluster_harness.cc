#include "test/cluster_harness.h"

#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"
#include "common/file_util.h"
#include "rpc/rpc_client.h"
#include "transport/auth.h"
#include "tools/dev_cluster.h"

namespace mailrepl::testing {

std::string Bin(const std::string& name) {
  const char* bin = std::getenv("MAILREPL_BIN");
  if (bin == nullptr) throw std::runtime_error("MAILREPL_BIN is not set");
  return std::string(bin) + "/" + name;
}

RunResult Run(const std::vector<std::string>& argv, absl::Duration timeout) {
  Process p(argv);
  RunResult r;
  std::optional<int> code = p.Wait(timeout);
  r.exit = code.value_or(-1);
  r.out = p.Stdout();
  r.err = p.Stderr();
  return r;
}

std::string WorkloadEml(int count) {
  // Made once per test process, in a directory removed when it exits.
  static TempDir root;
  static std::map<int, std::string> made;
  if (made.contains(count)) return made[count];
  const std::string dir = root.Sub(absl::StrCat("eml_", count));
  RunResult r = Run({Bin("workload"), "dump", "--dir", dir, "--count", absl::StrCat(count)});
  if (r.exit != 0) throw std::runtime_error("workload dump failed: " + r.err);
  made[count] = dir;
  return dir;
}

Cluster::Cluster(ClusterOptions options) : options_(std::move(options)) {
  std::vector<std::string> args = {
      Bin("replctl"), "dev-cluster", "up", "--dir", tmp_.Sub("cluster"), "--hosts",
      absl::StrCat(options_.hosts), "--slots-per-host", absl::StrCat(options_.slots_per_host),
      "--replicas", absl::StrCat(options_.replicas), "--net", options_.net, "--lease-ms",
      absl::StrCat(options_.lease_ms), "--durability", options_.durability,
      // Service addresses on a loopback net of this test's own.
      "--service-net", absl::StrCat("127.1.", options_.net.substr(options_.net.rfind('.') + 1))};
  if (!options_.promote_hook.empty()) {
    args.insert(args.end(), {"--promote-hook", options_.promote_hook});
  }
  if (!options_.demote_hook.empty()) {
    args.insert(args.end(), {"--demote-hook", options_.demote_hook});
  }
  RunResult up = Run(args, absl::Seconds(90));
  INFO(up.out << up.err);
  REQUIRE(up.exit == 0);
  absl::StatusOr<configpb::DevCluster> c = tools::ReadClusterFile(tmp_.Sub("cluster"));
  REQUIRE(c.ok());
  info_ = *c;
  absl::StatusOr<std::string> secret = transport::LoadSecret(info_.secret_file());
  REQUIRE(secret.ok());
  secret_ = *secret;
}

Cluster::~Cluster() {
  Run({Bin("replctl"), "dev-cluster", "down", "--dir", info_.dir()}, absl::Seconds(60));
  for (auto& [name, p] : restarted_) {
    p->Signal(SIGTERM);
    if (!p->Wait(absl::Seconds(10))) p->Signal(SIGKILL);
  }
}

const configpb::DevStore& Cluster::store(uint64_t id) const {
  for (const auto& s : info_.stores()) {
    if (s.store_id() == id) return s;
  }
  throw std::runtime_error(absl::StrCat("no store ", id));
}

const configpb::DevSlot& Cluster::slot(uint64_t id) const {
  for (const auto& s : info_.slots()) {
    if (s.slot_id() == id) return s;
  }
  throw std::runtime_error(absl::StrCat("no slot ", id));
}

const configpb::DevHost& Cluster::host(const std::string& name) const {
  for (const auto& h : info_.hosts()) {
    if (h.name() == name) return h;
  }
  throw std::runtime_error("no host " + name);
}

int Cluster::PidOf(const std::string& name) const {
  auto it = restarted_.find(name);
  if (it != restarted_.end()) return it->second->pid();
  if (name == "coordinator") return info_.coordinator_pid();
  return host(name).pid();
}

void Cluster::Signal(const std::string& name, int sig) {
  auto it = restarted_.find(name);
  if (it != restarted_.end()) {
    it->second->Signal(sig);
    if (sig == SIGKILL) it->second->Wait(absl::Seconds(10));
    return;
  }
  const int pid = PidOf(name);
  ::kill(pid, sig);
  if (sig == SIGKILL) {
    WaitFor([&] { return ::kill(pid, 0) != 0; }, absl::Seconds(10));
  }
}

bool Cluster::Stop(const std::string& name, absl::Duration timeout) {
  auto it = restarted_.find(name);
  if (it != restarted_.end()) {
    it->second->Signal(SIGTERM);
    return it->second->Wait(timeout).has_value();
  }
  const int pid = PidOf(name);
  ::kill(pid, SIGTERM);
  return WaitFor([&] { return ::kill(pid, 0) != 0; }, timeout);
}

void Cluster::Restart(const std::string& name) {
  std::vector<std::string> argv;
  if (name == "coordinator") {
    argv = {Bin("coordinatord"), "--db", info_.dir() + "/coordinator.db", "--listen",
            info_.coordinator(), "--secret-file", info_.secret_file(), "--lease-ms",
            absl::StrCat(info_.lease_ms())};
    if (!info_.socketmap().empty()) {
      argv.insert(argv.end(), {"--socketmap-listen", info_.socketmap()});
    }
  } else {
    argv = {Bin("replicad"), "--config", host(name).config()};
  }
  restarted_[name] = std::make_unique<Process>(argv);
}

std::vector<uint64_t> Cluster::Members(uint64_t store_id) const {
  const configpb::DevStore& s = store(store_id);
  std::vector<uint64_t> members{s.master_slot_id()};
  members.insert(members.end(), s.replica_slot_ids().begin(), s.replica_slot_ids().end());
  return members;
}

void Cluster::CheckAckedOnEverySlot(const std::map<int, Outcome>& results) {
  std::map<std::string, std::set<int>> by_user;
  for (const auto& [index, o] : results) {
    if (o.code == 250) by_user[o.user].insert(index);
  }
  REQUIRE(WaitCaughtUp(absl::Seconds(60)));
  for (const auto& [user, indexes] : by_user) {
    const std::vector<uint64_t> members = Members(StoreOf(user));
    const std::set<int> first = IndexesOn(members[0], user);
    for (int i : indexes) {
      INFO("message " << i << " to " << user << " on slot " << members[0]);
      CHECK(first.contains(i));
    }
    for (size_t k = 1; k < members.size(); ++k) {
      INFO(user << " on slot " << members[k] << " vs slot " << members[0]);
      CHECK(IndexesOn(members[k], user) == first);
    }
  }
}

RunResult Cluster::Replctl(const std::vector<std::string>& args) {
  std::vector<std::string> argv{Bin("replctl"), "--cluster", info_.dir()};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv, absl::Seconds(180));
}

std::string Cluster::NotAcked(const std::map<int, Outcome>& results) {
  std::string out;
  int shown = 0;
  for (const auto& [i, o] : results) {
    if (o.code != 250 && shown++ < 20) absl::StrAppend(&out, i, " ", o.user, " ", o.code, "\n");
  }
  return out;
}

bool Cluster::NearlyAllAcked(const std::map<int, Outcome>& results) {
  const int acked = Count(results, 250);
  if (acked != static_cast<int>(results.size())) {
    WARN("not acknowledged (" << results.size() - acked << "):\n" << NotAcked(results));
  }
  return acked * 100 >= static_cast<int>(results.size()) * 99;
}

int Cluster::Count(const std::map<int, Outcome>& results, int code) {
  int n = 0;
  for (const auto& [i, o] : results) n += o.code == code;
  return n;
}

int Cluster::StopRestarted(const std::string& name, int sig, absl::Duration timeout) {
  Process& p = *restarted_.at(name);
  p.Signal(sig);
  return p.Wait(timeout).value_or(-1);
}

absl::StatusOr<coordpb::GetStatusReply> Cluster::Status() {
  coordpb::Request request;
  request.mutable_get_status();
  absl::StatusOr<coordpb::Response> r = rpc::CallOnce<coordpb::Response>(
      {.address = info_.coordinator(), .service = "coordinator", .secret = secret_,
       .client = "test"},
      request, absl::Seconds(5));
  if (!r.ok()) return r.status();
  return r->get_status();
}

uint64_t Cluster::MasterLsnSum() {
  uint64_t sum = 0;
  if (absl::StatusOr<coordpb::GetStatusReply> s = Status(); s.ok()) {
    for (const auto& st : s->stores()) {
      for (const auto& slot : st.slots()) {
        if (slot.role() == coordpb::MASTER) sum += slot.last_lsn();
      }
    }
  }
  return sum;
}

bool Cluster::WaitCaughtUp(absl::Duration timeout) {
  // Asks the slots themselves (the coordinator's view is as old as the
  // last heartbeat): every reachable slot of a store holds the master's
  // last LSN. Slots that cannot be reached (a killed host) are skipped.
  apipb::Request get_slot;
  get_slot.mutable_get_slot();
  return WaitFor(
      [&] {
        absl::StatusOr<coordpb::GetStatusReply> s = Status();
        if (!s.ok()) return false;
        for (const auto& st : s->stores()) {
          absl::StatusOr<apipb::Response> master = Api(st.store().master_slot_id(), get_slot);
          if (!master.ok() || !master->slot().master()) return false;
          for (const auto& m : st.store().members()) {
            if (m.slot_id() == st.store().master_slot_id()) continue;
            absl::StatusOr<apipb::Response> r = Api(m.slot_id(), get_slot);
            if (r.ok() && r->slot().last_lsn() < master->slot().last_lsn()) return false;
          }
        }
        return true;
      },
      timeout, absl::Milliseconds(50));
}

absl::StatusOr<apipb::Response> Cluster::Api(uint64_t slot_id, const apipb::Request& request) {
  return rpc::CallOnce<apipb::Response>(
      {.address = slot(slot_id).api(), .service = "api", .secret = secret_, .client = "test"},
      request, absl::Seconds(10));
}

std::set<int> Cluster::IndexesOn(uint64_t slot_id, const std::string& user) {
  std::set<int> found;
  apipb::Request list;
  list.mutable_list_messages()->set_mailbox("user/" + user);
  absl::StatusOr<apipb::Response> messages = Api(slot_id, list);
  if (!messages.ok()) return found;
  for (const apipb::Message& m : messages->messages()) {
    apipb::Request fetch;
    fetch.mutable_fetch_body()->set_mailbox("user/" + user);
    fetch.mutable_fetch_body()->set_uid(m.uid());
    absl::StatusOr<apipb::Response> body = Api(slot_id, fetch);
    if (!body.ok()) continue;
    const std::string& b = body->body();
    const size_t at = b.find("\r\nX-Bench-Index: ");
    if (at == std::string::npos) continue;
    int index;
    const size_t start = at + 17;
    if (absl::SimpleAtoi(b.substr(start, b.find("\r\n", start) - start), &index)) {
      found.insert(index);
    }
  }
  return found;
}

std::unique_ptr<Process> Cluster::StartDelivery(const std::string& eml_dir, int start, int count,
                                                int conns, double retry_seconds,
                                                const std::string& record) {
  return std::make_unique<Process>(std::vector<std::string>{
      "/usr/bin/python3", LMTP_DELIVER_PY, "--cluster", info_.dir(), "--eml-dir", eml_dir,
      "--start", absl::StrCat(start), "--count", absl::StrCat(count), "--conns",
      absl::StrCat(conns), "--retry", absl::StrCat(retry_seconds), "--record", record,
      "--lookup", Bin("replctl")});
}

std::map<int, Cluster::Outcome> Cluster::ReadRecord(const std::string& record) {
  std::map<int, Outcome> codes;
  std::ifstream in(record);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    int index, code;
    if (f.size() == 3 && absl::SimpleAtoi(f[0], &index) && absl::SimpleAtoi(f[2], &code)) {
      codes[index] = {f[1], code};
    }
  }
  return codes;
}

std::map<int, Cluster::Outcome> Cluster::Deliver(const std::string& eml_dir, int start, int count, int conns,
                                    double retry_seconds, std::string* summary) {
  const std::string record = tmp_.Sub(absl::StrCat("record_", start, "_", count));
  std::unique_ptr<Process> p = StartDelivery(eml_dir, start, count, conns, retry_seconds, record);
  p->Wait(absl::Seconds(300));
  if (summary) *summary = p->Stdout() + p->Stderr();
  return ReadRecord(record);
}

}  // namespace mailrepl::testing

namespace mailrepl::testing {

std::string Cluster::Http(const std::string& name, const std::string& path) {
  RunResult r = Run({"/usr/bin/python3", "-c",
                     "import sys, urllib.request, urllib.error\n"
                     "try:\n"
                     "  print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n"
                     "except urllib.error.HTTPError as e:\n"
                     "  print(e.code, e.read().decode())\n",
                     "http://" + host(name).metrics() + path},
                    absl::Seconds(20));
  return r.out;
}

}  // namespace mailrepl::testing
