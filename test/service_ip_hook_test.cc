// etc/hooks/service-ip, the promote/demote hook that moves a store's
// service address between hosts: run for real inside a network namespace
// of its own (on its loopback interface), so the host's addresses are
// never touched.
#include <unistd.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "test/cluster_harness.h"

namespace mailrepl::testing {
namespace {

constexpr char kIp[] = "/bin/ip";

// A network namespace that lives as long as the object.
class Netns {
 public:
  Netns() : name_(absl::StrCat("mailrepl-hook-", ::getpid())) {
    Run({kIp, "netns", "del", name_});  // a leftover of a killed run
    RunResult add = Run({kIp, "netns", "add", name_});
    INFO(add.err);
    REQUIRE(add.exit == 0);
    REQUIRE(Run({kIp, "-n", name_, "link", "set", "lo", "up"}).exit == 0);
  }
  ~Netns() { Run({kIp, "netns", "del", name_}); }

  // The hook, run inside the namespace with SERVICE_IP_DEV=lo (unless dev
  // is given as "": the default route's interface, which it has none of).
  RunResult Hook(const std::vector<std::string>& args, const std::string& dev = "lo") {
    std::vector<std::string> argv = {kIp, "netns", "exec", name_, "/usr/bin/env"};
    if (!dev.empty()) argv.push_back("SERVICE_IP_DEV=" + dev);
    argv.push_back(SERVICE_IP_HOOK);
    argv.insert(argv.end(), args.begin(), args.end());
    return Run(argv);
  }

  // How many times `address` (e.g. "10.9.8.7/32") is on lo.
  int Held(const std::string& address) {
    RunResult r = Run({kIp, "-n", name_, "-o", "addr", "show", "dev", "lo"});
    REQUIRE(r.exit == 0);
    int n = 0;
    for (size_t at = r.out.find(" " + address + " "); at != std::string::npos;
         at = r.out.find(" " + address + " ", at + 1)) {
      ++n;
    }
    return n;
  }

 private:
  std::string name_;
};

TEST_CASE("the service-ip hook adds a store's address on promote and removes it on demote, "
          "both idempotent",
          "[hooks]") {
  Netns ns;
  RunResult promote = ns.Hook({"promote", "7", "3", "10.9.8.7:2424", "10.9.8.7:2425"});
  INFO(promote.out << promote.err);
  REQUIRE(promote.exit == 0);
  CHECK(absl::StrContains(promote.out, "store 7 slot 3: added 10.9.8.7/32 on lo"));
  CHECK(ns.Held("10.9.8.7/32") == 1);  // LMTP and API share one address

  // Promoting again (a replicad restart) keeps exactly one.
  REQUIRE(ns.Hook({"promote", "7", "3", "10.9.8.7:2424", "10.9.8.7:2425"}).exit == 0);
  CHECK(ns.Held("10.9.8.7/32") == 1);

  RunResult demote = ns.Hook({"demote", "7", "3", "10.9.8.7:2424", "10.9.8.7:2425"});
  INFO(demote.out << demote.err);
  REQUIRE(demote.exit == 0);
  CHECK(ns.Held("10.9.8.7/32") == 0);
  // Demoting a slot that holds nothing succeeds.
  CHECK(ns.Hook({"demote", "7", "3", "10.9.8.7:2424", "10.9.8.7:2425"}).exit == 0);
}

TEST_CASE("the service-ip hook moves IPv6 addresses and separate LMTP and API addresses",
          "[hooks]") {
  Netns ns;
  REQUIRE(ns.Hook({"promote", "1", "2", "[fd00::7]:2424", "10.9.8.8:2425"}).exit == 0);
  CHECK(ns.Held("fd00::7/128") == 1);
  CHECK(ns.Held("10.9.8.8/32") == 1);
  REQUIRE(ns.Hook({"demote", "1", "2", "[fd00::7]:2424", "10.9.8.8:2425"}).exit == 0);
  CHECK(ns.Held("fd00::7/128") == 0);
  CHECK(ns.Held("10.9.8.8/32") == 0);
}

TEST_CASE("the service-ip hook refuses bad calls with a clear error and changes nothing",
          "[hooks]") {
  Netns ns;
  RunResult bogus = ns.Hook({"elect", "1", "2", "10.9.8.7:2424", ""});
  CHECK(bogus.exit == 2);
  CHECK(absl::StrContains(bogus.err, "usage: service-ip promote|demote"));
  CHECK(ns.Hook({"promote"}).exit == 2);
  // No interface given and no default route to find one by.
  RunResult nodev = ns.Hook({"promote", "1", "2", "10.9.8.7:2424", ""}, "");
  CHECK(nodev.exit == 1);
  CHECK(absl::StrContains(nodev.err, "set SERVICE_IP_DEV"));
  CHECK(ns.Held("10.9.8.7/32") == 0);
  // A store without service addresses: nothing to do.
  CHECK(ns.Hook({"promote", "1", "2", "", ""}).exit == 0);
}

}  // namespace
}  // namespace mailrepl::testing
