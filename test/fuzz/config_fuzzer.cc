// libFuzzer target for replicad's configuration file (replicad/config.h):
// the text, parsed and checked by ParseReplicadConfig, the function
// LoadReplicadConfig runs on the file's contents (protobuf text format of
// configpb::ReplicadConfig, then ValidateReplicadConfig).
//
// Invariants:
//   - the answer is a config or kInvalidArgument whose message starts with
//     the origin (the file's path) and says something;
//   - an accepted config holds what replicad relies on, restated: a host,
//     a coordinator and metrics address that parse as ADDR:PORT, a secret
//     file, an absolute state_dir, lmtp_threads and sync_timeout_ms filled
//     in, at least one slot, slot ids non-zero and unique, data, meta and
//     spool absolute, listen addresses that parse and are not shared (but
//     for port 0);
//   - an accepted config printed back (TextFormat, as replctl dev-cluster
//     writes replicad.conf) is accepted again, unchanged.
//
// (cluster.json, read by tools/dev_cluster.cc ReadClusterFile, has no parse
// function apart from the file's reading; it is not fuzzed here.)
//
// Seeds (test/fuzz/corpus/config_fuzzer/) were written once by running
// this fuzzer with MAILREPL_FUZZ_WRITE_SEEDS=DIR (WriteSeeds below):
// etc/replicad.conf, a config made and printed as replctl dev-cluster up
// makes it, and variants with each refusal ValidateReplicadConfig knows.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "replicad/config.h"
#include "transport/net.h"

namespace mailrepl::replicad {
namespace {

constexpr char kOrigin[] = "/etc/mailrepl/replicad.conf";

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

bool Absolute(const std::string& path) { return !path.empty() && path[0] == '/'; }

void CheckAccepted(const configpb::ReplicadConfig& c) {
  Check(!c.host().empty(), "a host");
  Check(transport::ParseEndpoint(c.coordinator()).ok(), "the coordinator is ADDR:PORT");
  Check(!c.secret_file().empty(), "a secret file");
  Check(Absolute(c.state_dir()), "state_dir absolute");
  Check(c.metrics_listen().empty() || transport::ParseEndpoint(c.metrics_listen()).ok(),
        "metrics_listen empty or ADDR:PORT");
  Check(c.lmtp_threads() > 0 && c.sync_timeout_ms() > 0, "defaults filled in");
  Check(c.slot_size() > 0, "at least one slot");
  std::set<uint64_t> ids;
  std::set<std::string> addresses;
  for (const configpb::SlotConfig& s : c.slot()) {
    Check(s.slot_id() != 0 && ids.insert(s.slot_id()).second, "slot ids non-zero, unique");
    Check(Absolute(s.data()) && Absolute(s.meta()) && Absolute(s.spool()), "slot paths absolute");
    for (const std::string& a : {s.lmtp_listen(), s.api_listen(), s.sync_listen()}) {
      Check(transport::ParseEndpoint(a).ok(), "listen addresses are ADDR:PORT");
      Check(absl::EndsWith(a, ":0") || addresses.insert(a).second, "an address is used once");
    }
  }
}

void Run(const std::string& text) {
  absl::StatusOr<configpb::ReplicadConfig> c = ParseReplicadConfig(text, kOrigin);
  if (!c.ok()) {
    Check(c.status().code() == absl::StatusCode::kInvalidArgument, "refusals are kInvalidArgument");
    Check(absl::StartsWith(c.status().message(), absl::StrCat(kOrigin, ": ")) &&
              c.status().message().size() > sizeof(kOrigin) + 1,
          "a refusal names the file and says why");
    return;
  }
  CheckAccepted(*c);
  std::string printed;
  Check(google::protobuf::TextFormat::PrintToString(*c, &printed), "an accepted config prints");
  absl::StatusOr<configpb::ReplicadConfig> again = ParseReplicadConfig(printed, kOrigin);
  Check(again.ok(), "an accepted config printed back is accepted");
  Check(google::protobuf::util::MessageDifferencer::Equals(*c, *again), "and reads back unchanged");
}

// --- seeds ---

// A host's config as replctl dev-cluster up makes it (tools/dev_cluster.cc).
configpb::ReplicadConfig DevClusterConfig(int h, int slots_per_host) {
  const std::string net = "127.0.1";
  const std::string dir = "/tmp/mailrepl-dev";
  const std::string host_dir = absl::StrCat(dir, "/host", h);
  configpb::ReplicadConfig rc;
  rc.set_host(absl::StrCat("host", h));
  rc.set_coordinator(absl::StrCat(net, ".1:7400"));
  rc.set_secret_file(dir + "/secret");
  rc.set_metrics_listen(absl::StrCat(net, ".", 200 + h, ":9100"));
  rc.set_state_dir(host_dir + "/state");
  rc.set_promote_hook("/usr/local/lib/mailrepl/service-ip");
  rc.set_demote_hook("/usr/local/lib/mailrepl/service-ip");
  for (int k = 1; k <= slots_per_host; ++k) {
    const int slot_id = (h - 1) * slots_per_host + k;
    const std::string ip = absl::StrCat(net, ".", 10 + slot_id);
    configpb::SlotConfig* s = rc.add_slot();
    s->set_slot_id(slot_id);
    s->set_data(absl::StrCat(host_dir, "/slot", slot_id));
    s->set_lmtp_listen(ip + ":2424");
    s->set_api_listen(ip + ":2425");
    s->set_sync_listen(ip + ":2426");
  }
  return rc;
}

std::string Print(const configpb::ReplicadConfig& c) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(c, &text);
  return absl::StrCat("# replicad.conf written by replctl dev-cluster up\n", text);
}

void WriteSeeds(const std::string& dir) {
  std::vector<std::pair<std::string, std::string>> seeds;
  {
    std::ifstream in("etc/replicad.conf");  // run from the source tree
    std::stringstream text;
    text << in.rdbuf();
    Check(!text.str().empty(), "etc/replicad.conf (run from the source tree)");
    seeds.emplace_back("etc_replicad_conf", text.str());
  }
  configpb::ReplicadConfig good = DevClusterConfig(2, 2);
  Check(ValidateReplicadConfig(good, "seed").ok(), "the dev-cluster config is valid");
  seeds.emplace_back("dev_cluster", Print(DevClusterConfig(2, 2)));
  auto variant = [&](const std::string& name, auto change) {
    configpb::ReplicadConfig c = DevClusterConfig(1, 2);
    change(c);
    seeds.emplace_back(name, Print(c));
  };
  variant("no_host", [](configpb::ReplicadConfig& c) { c.clear_host(); });
  variant("bad_coordinator", [](configpb::ReplicadConfig& c) { c.set_coordinator("coord:x"); });
  variant("relative_state_dir", [](configpb::ReplicadConfig& c) { c.set_state_dir("state"); });
  variant("ipv6_metrics", [](configpb::ReplicadConfig& c) { c.set_metrics_listen("[::1]:9100"); });
  variant("no_slots", [](configpb::ReplicadConfig& c) { c.clear_slot(); });
  variant("slot_twice", [](configpb::ReplicadConfig& c) { c.mutable_slot(1)->set_slot_id(1); });
  variant("slot_zero", [](configpb::ReplicadConfig& c) { c.mutable_slot(0)->set_slot_id(0); });
  variant("relative_meta",
          [](configpb::ReplicadConfig& c) { c.mutable_slot(0)->set_meta("meta"); });
  variant("address_twice", [](configpb::ReplicadConfig& c) {
    c.mutable_slot(1)->set_api_listen(c.slot(0).lmtp_listen());
  });
  variant("port_zero", [](configpb::ReplicadConfig& c) {
    for (configpb::SlotConfig& s : *c.mutable_slot()) {
      s.set_lmtp_listen("127.0.0.1:0");
      s.set_api_listen("127.0.0.1:0");
      s.set_sync_listen("127.0.0.1:0");
    }
  });
  seeds.emplace_back("syntax_error", "host: \"a\"\nslot { slot_id: -1 }\nbogus: 3\n");
  seeds.emplace_back("text_format_forms",
                     "host: 'mail1' coordinator: \"10.0.0.5:\" \"7400\" secret_file: \"/s\"\n"
                     "state_dir: \"/st\\x41te\" lmtp_threads: 0x10 sync_timeout_ms: 5000\n"
                     "slot < slot_id: 1 data: \"/d\" lmtp_listen: \"[::1]:1\" api_listen: "
                     "\"[::1]:2\" sync_listen: \"[::1]:3\" >\n");
  for (const auto& [name, data] : seeds) {
    FILE* f = std::fopen((dir + "/" + name).c_str(), "wb");
    Check(f != nullptr, "open seed file");
    std::fwrite(data.data(), 1, data.size(), f);
    std::fclose(f);
  }
  std::printf("%zu seeds in %s\n", seeds.size(), dir.c_str());
}

void Quiet(google::protobuf::LogLevel, const char*, int, const std::string&) {}

}  // namespace
}  // namespace mailrepl::replicad

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(mailrepl::replicad::Quiet);  // the parser's error logs
  if (const char* dir = std::getenv("MAILREPL_FUZZ_WRITE_SEEDS")) {
    mailrepl::replicad::WriteSeeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mailrepl::replicad::Run(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
