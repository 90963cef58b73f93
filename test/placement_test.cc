// File: test/placement_test.cc
//
// Plan() and Evaluate() (tools/placement.h) over every combination of
// 2..10 hosts, 1..20 slots per host and 1..min(3, H-1) replicas, and
// `replctl plan` end to end.
#include "tools/placement.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <set>
#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "catch2/catch.hpp"
#include "test/process_util.h"

namespace mailrepl::tools {
namespace {

// Calls check for every combination Plan() accepts; combinations it
// refuses (replicas >= hosts: a store needs R+1 distinct hosts) are
// counted and must be exactly those.
void ForEveryCombination(const std::function<void(const Placement&)>& check) {
  int planned = 0, impossible = 0;
  for (int h = 2; h <= 10; ++h) {
    for (int k = 1; k <= 20; ++k) {
      for (int r = 1; r <= 3; ++r) {
        absl::StatusOr<Placement> p = Plan(h, k, r);
        if (r >= h) {
          REQUIRE_FALSE(p.ok());
          ++impossible;
          continue;
        }
        INFO(h << " hosts x " << k << " slots, " << r << " replicas");
        REQUIRE(p.ok());
        REQUIRE(static_cast<int>(p->stores.size()) == h * k / (r + 1));
        REQUIRE(p->wanted_stores == h * k / (r + 1));
        check(*p);
        ++planned;
      }
    }
  }
  // 9 host counts x 20 slot counts x 3 replica counts; R >= H only for
  // H=2 (R=2,3) and H=3 (R=3): 3 x 20 combinations.
  CHECK(planned == 9 * 20 * 3 - 60);
  CHECK(impossible == 60);
}

TEST_CASE("every store's slots are on distinct hosts") {
  ForEveryCombination([](const Placement& p) {
    for (const PlacedStore& s : p.stores) {
      std::set<int> hosts{s.master};
      for (int r : s.replicas) hosts.insert(r);
      REQUIRE(static_cast<int>(s.replicas.size()) == p.replicas);
      REQUIRE(static_cast<int>(hosts.size()) == p.replicas + 1);
    }
  });
}

TEST_CASE("no slot is used twice and no host exceeds K slots") {
  ForEveryCombination([](const Placement& p) {
    REQUIRE(CheckPlacement(p).ok());
    std::set<uint64_t> slots;
    std::vector<int> used(p.hosts, 0);
    for (const PlacedStore& s : p.stores) {
      for (size_t i = 0; i < s.slot_ids.size(); ++i) {
        const int host = i == 0 ? s.master : s.replicas[i - 1];
        // Host i has slot ids i*K+1 .. i*K+K.
        REQUIRE(static_cast<int>((s.slot_ids[i] - 1) / p.slots_per_host) == host);
        REQUIRE(slots.insert(s.slot_ids[i]).second);
        ++used[host];
      }
    }
    for (int u : used) REQUIRE(u <= p.slots_per_host);
  });
}

TEST_CASE("masters per host differ by at most one") {
  ForEveryCombination([](const Placement& p) {
    const std::vector<int> m = MastersPerHost(p);
    REQUIRE(*std::max_element(m.begin(), m.end()) - *std::min_element(m.begin(), m.end()) <= 1);
  });
}

TEST_CASE("losing any one host spreads its masters within ceil(m/(H-1)) per surviving host") {
  ForEveryCombination([](const Placement& p) {
    const FailureLoad load = Evaluate(p);
    REQUIRE(static_cast<int>(load.failures.size()) == p.hosts);
    for (const HostFailure& f : load.failures) {
      INFO("losing host " << f.lost << " (" << f.masters << " masters), bound " << f.bound
                          << ", worst gain " << f.max_gain);
      REQUIRE(f.bound == (f.masters + p.hosts - 2) / (p.hosts - 1));
      int moved = 0;
      for (int g = 0; g < p.hosts; ++g) {
        if (g == f.lost) REQUIRE(f.gain[g] == 0);
        REQUIRE(f.gain[g] <= f.bound);
        moved += f.gain[g];
      }
      REQUIRE(moved == f.masters);
    }
    REQUIRE(load.all_ok);
    REQUIRE(load.worst_excess <= 0);
  });
}

TEST_CASE("Evaluate reports a placement that breaks the bound") {
  // 3 hosts: both stores of host 0 fail over to host 1.
  Placement p{.hosts = 3, .slots_per_host = 4, .replicas = 1, .wanted_stores = 2};
  p.stores.push_back({.master = 0, .replicas = {1}, .slot_ids = {1, 5}});
  p.stores.push_back({.master = 0, .replicas = {1}, .slot_ids = {2, 6}});
  const FailureLoad load = Evaluate(p);
  CHECK_FALSE(load.all_ok);
  CHECK(load.failures[0].masters == 2);
  CHECK(load.failures[0].bound == 1);
  CHECK(load.failures[0].max_gain == 2);
  CHECK(load.worst_excess == 1);
  CHECK(load.worst_host == 1);
  CHECK(load.worst_after == 2);
  CHECK(load.worst_before == 0);
}

TEST_CASE("impossible combinations are refused with a reason") {
  absl::StatusOr<Placement> p = Plan(2, 4, 2);
  REQUIRE_FALSE(p.ok());
  CHECK(absl::StrContains(p.status().message(), "3 hosts"));
  CHECK_FALSE(Plan(1, 4, 1).ok());
  CHECK_FALSE(Plan(3, 0, 1).ok());
}

TEST_CASE("the 3x4 dev cluster layout has 6 stores, 2 masters per host") {
  absl::StatusOr<Placement> p = Plan(3, 4, 1);
  REQUIRE(p.ok());
  REQUIRE(p->stores.size() == 6);
  CHECK(MastersPerHost(*p) == std::vector<int>{2, 2, 2});
  CHECK(ReplicasPerHost(*p) == std::vector<int>{2, 2, 2});
  // Each host's two masters fail over to the two other hosts, one each.
  const FailureLoad load = Evaluate(*p);
  CHECK(load.all_ok);
  CHECK(load.worst_after == 3);
  CHECK(load.worst_before == 2);
  // Slot ids as dev-cluster numbers them: host i has i*4+1 .. i*4+4.
  std::set<uint64_t> all;
  for (const PlacedStore& s : p->stores) all.insert(s.slot_ids.begin(), s.slot_ids.end());
  CHECK(all.size() == 12);
  CHECK(*all.begin() == 1);
  CHECK(*all.rbegin() == 12);
}

// --- replctl plan, the real binary ---

std::string Bin(const std::string& name) {
  const char* bin = std::getenv("MAILREPL_BIN");
  if (bin == nullptr) throw std::runtime_error("MAILREPL_BIN is not set");
  return absl::StrCat(bin, "/", name);
}

TEST_CASE("replctl plan prints the layout and the worst case and exits 0") {
  testing::Process p({Bin("replctl"), "plan", "--hosts", "a,b,c", "--slots-per-host", "4"});
  REQUIRE(p.Wait(absl::Seconds(30)) == 0);
  const std::string out = p.Stdout();
  INFO(out << p.Describe());
  CHECK(absl::StrContains(out, "store"));
  CHECK(absl::StrContains(out, "@a"));
  CHECK(absl::StrContains(out, "@b"));
  CHECK(absl::StrContains(out, "@c"));
  CHECK(absl::StrContains(out, "if a fails: its 2 masters move to: b +1, c +1 (bound ⌈2/2⌉ = 1) OK"));
  CHECK(absl::StrContains(out,
                          "worst case after any single-host failure: host b carries 3 masters (was 2)"));
}

TEST_CASE("replctl plan --json prints the same as JSON") {
  testing::Process p(
      {Bin("replctl"), "plan", "--hosts", "a,b,c,d", "--slots-per-host", "6", "--replicas", "2",
       "--json"});
  REQUIRE(p.Wait(absl::Seconds(30)) == 0);
  const std::string out = p.Stdout();
  INFO(out << p.Describe());
  CHECK(absl::StrContains(out, "\"stores\""));
  CHECK(absl::StrContains(out, "\"failures\""));
  CHECK(absl::StrContains(out, "\"all_within_bound\": true"));
}

TEST_CASE("replctl plan refuses a host list that cannot hold a store") {
  testing::Process p({Bin("replctl"), "plan", "--hosts", "a,b", "--slots-per-host", "4",
                      "--replicas", "2"});
  REQUIRE(p.Wait(absl::Seconds(30)) == 2);
  CHECK(absl::StrContains(p.Stderr(), "replicas"));
}

}  // namespace
}  // namespace mailrepl::tools
