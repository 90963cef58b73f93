// Coordinator requests and files that tests of the coordinator build again
// and again (coordinator_test, socketmap_test): slots with made-up
// addresses (slot k: 10.0.0.k, LMTP port 24), hosts, stores, user
// assignments, a secret file. Thread-safe: pure functions.
#ifndef MAILREPL_TEST_COORD_REQUESTS_H_
#define MAILREPL_TEST_COORD_REQUESTS_H_

#include <sys/stat.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "proto/coord.pb.h"

namespace mailrepl::coord {

inline coordpb::SlotInfo Slot(uint64_t id) {
  coordpb::SlotInfo s;
  s.set_slot_id(id);
  s.set_lmtp_address(absl::StrCat("10.0.0.", id, ":24"));
  s.set_api_address(absl::StrCat("10.0.0.", id, ":7100"));
  s.set_sync_address(absl::StrCat("10.0.0.", id, ":7200"));
  s.set_data_path(absl::StrCat("/srv/slot", id));
  return s;
}

inline coordpb::RegisterHost Host(const std::string& name, std::vector<uint64_t> slot_ids) {
  coordpb::RegisterHost r;
  r.set_host(name);
  r.set_metrics_address(name + ":9100");
  for (uint64_t id : slot_ids) *r.add_slots() = Slot(id);
  return r;
}

inline coordpb::CreateStore Store(std::vector<uint64_t> slot_ids, uint64_t store_id = 0) {
  coordpb::CreateStore r;
  r.set_store_id(store_id);
  for (uint64_t id : slot_ids) r.add_slot_ids(id);
  return r;
}

inline coordpb::AssignUsers Users(std::vector<std::string> users, uint64_t store_id) {
  coordpb::AssignUsers r;
  for (auto& u : users) r.add_users(u);
  r.set_store_id(store_id);
  return r;
}

// A secret file coordinatord accepts (mode 0600; secret: 16 bytes or more).
inline void WriteSecret(const std::string& path, const std::string& secret) {
  {
    std::ofstream out(path, std::ios::trunc);
    out << secret << "\n";
  }
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
}

}  // namespace mailrepl::coord

#endif  // MAILREPL_TEST_COORD_REQUESTS_H_
