// The fork point (syncclient/fork_point.h): where a master's and a replica's
// logs stop agreeing, from their epoch histories and last LSNs alone. The
// sync client sends DIVERGED, and the replica sets aside everything past
// the fork point, exactly when the replica's last LSN is above it, so every
// row here names the fork LSN and that verdict.
#include <cstdint>
#include <string>
#include <vector>

#include "catch2/catch.hpp"
#include "syncclient/fork_point.h"

namespace mailrepl::sync {
namespace {

struct Case {
  std::string name;
  LogPosition master;
  LogPosition replica;
  uint64_t fork;
  bool diverged;  // the replica holds records the master does not
};

// History entries are {epoch, first LSN}; records before the first entry
// are epoch 0.
const std::vector<Case>& Cases() {
  static const std::vector<Case> cases = {
      {"two empty logs agree on nothing and neither has diverged",
       {0, {}}, {0, {}}, 0, false},
      {"an empty replica of a master with records is behind, not diverged",
       {20, {{1, 1}, {2, 11}}}, {0, {}}, 0, false},
      {"an empty replica of a master holding only epoch-0 records is behind",
       {20, {}}, {0, {}}, 0, false},
      {"a master and a replica with equal histories and last LSNs agree on everything",
       {20, {{1, 1}, {2, 11}}}, {20, {{1, 1}, {2, 11}}}, 20, false},
      {"a replica behind in the master's current epoch agrees up to its own last LSN",
       {20, {{1, 1}, {2, 11}}}, {15, {{1, 1}, {2, 11}}}, 15, false},
      {"a replica behind in an epoch the master has since left agrees up to its own last LSN",
       {20, {{1, 1}, {2, 11}}}, {8, {{1, 1}}}, 8, false},
      {"a replica that stopped at the last LSN of the master's previous epoch is behind",
       {20, {{1, 1}, {2, 11}}}, {10, {{1, 1}}}, 10, false},
      {"a replica that holds only the master's first record of a new epoch is behind",
       {20, {{1, 1}, {2, 11}}}, {11, {{1, 1}, {2, 11}}}, 11, false},
      {"a replica ahead of the master in the same epoch holds records the master lacks: "
       "diverged after the master's last LSN",
       {10, {{1, 1}}}, {15, {{1, 1}}}, 10, true},
      {"a replica that went on writing in an epoch the master ended has diverged at that "
       "epoch's end on the master",
       {20, {{1, 1}, {2, 11}}}, {15, {{1, 1}}}, 10, true},
      {"a replica holding records of an epoch the master never had has diverged after the "
       "last common LSN",
       {20, {{1, 1}, {3, 11}}}, {14, {{1, 1}, {2, 11}}}, 10, true},
      {"a replica that began an epoch the master never had and wrote only its BeginEpoch "
       "has diverged",
       {20, {{1, 1}, {3, 11}}}, {11, {{1, 1}, {2, 11}}}, 10, true},
      {"epochs starting at different LSNs: the logs part where the earlier one starts",
       {30, {{1, 1}, {3, 13}}}, {12, {{1, 1}, {2, 9}}}, 8, true},
      {"a master whose newer epoch starts earlier than the replica's: the logs part at the "
       "master's start",
       {30, {{1, 1}, {2, 9}}}, {15, {{1, 1}, {3, 13}}}, 8, true},
      {"a replica with an epoch newer than any the master has is diverged after the master's "
       "last LSN",
       {10, {{1, 1}}}, {15, {{1, 1}, {2, 11}}}, 10, true},
      {"a replica with an extra epoch in the middle of an otherwise equal history has "
       "diverged where that epoch starts",
       {30, {{1, 1}, {3, 21}}}, {30, {{1, 1}, {2, 11}, {3, 21}}}, 10, true},
      {"histories that differ from their first epoch agree on nothing",
       {20, {{2, 1}}}, {20, {{1, 1}}}, 0, true},
      {"epoch-0 records before both sides' first BeginEpoch are common history",
       {20, {{1, 11}}}, {15, {{1, 11}}}, 15, false},
      {"a replica holding only epoch-0 records, behind where the master began epoch 1, is "
       "behind",
       {20, {{1, 11}}}, {5, {}}, 5, false},
      {"a replica holding epoch-0 records past where the master began epoch 1 has diverged "
       "there",
       {20, {{1, 11}}}, {14, {}}, 10, true},
      {"a replica holding epoch-0 records while the master's log is epoch 1 from LSN 1 has "
       "diverged from the start",
       {20, {{1, 1}}}, {5, {}}, 0, true},
      {"a master seeded by a snapshot carries the full epoch history and agrees with a "
       "replica of the same history",
       {120, {{1, 1}, {2, 51}, {3, 101}}}, {90, {{1, 1}, {2, 51}}}, 90, false},
      {"a master whose history starts after a snapshot base counts the LSNs below it as "
       "epoch 0, like a replica seeded from the same base",
       {120, {{3, 101}}}, {110, {{3, 101}}}, 110, false},
      {"a replica seeded by a snapshot of epoch-0 records is behind a master whose history "
       "starts after that base",
       {120, {{3, 101}}}, {100, {}}, 100, false},
  };
  return cases;
}

TEST_CASE("the fork point is the last LSN both logs hold with the same epoch, and a replica "
          "above it has diverged",
          "[fork_point]") {
  for (const Case& c : Cases()) {
    SECTION(c.name) {
      uint64_t fork = ForkPoint(c.master, c.replica);
      CHECK(fork == c.fork);
      CHECK((c.replica.last_lsn > fork) == c.diverged);
    }
  }
}

TEST_CASE("the fork point does not depend on which log is the master's", "[fork_point]") {
  for (const Case& c : Cases()) {
    SECTION(c.name) { CHECK(ForkPoint(c.replica, c.master) == ForkPoint(c.master, c.replica)); }
  }
}

TEST_CASE("the fork point is never above either side's last LSN", "[fork_point]") {
  for (const Case& c : Cases()) {
    SECTION(c.name) {
      uint64_t fork = ForkPoint(c.master, c.replica);
      CHECK(fork <= c.master.last_lsn);
      CHECK(fork <= c.replica.last_lsn);
    }
  }
}

TEST_CASE("a log compared with itself has its fork point at its own last LSN", "[fork_point]") {
  for (const Case& c : Cases()) {
    SECTION(c.name) {
      CHECK(ForkPoint(c.master, c.master) == c.master.last_lsn);
      CHECK(ForkPoint(c.replica, c.replica) == c.replica.last_lsn);
    }
  }
}

}  // namespace
}  // namespace mailrepl::sync
