// File: coordinator/routing_maps.h
//
// The answers of the coordinator's Postfix socketmap maps (docs/protocol.md
// "Socketmap routing lookups"; the server is coordinator/socketmap_server.h):
//
//   transport KEY  ->  "OK lmtp:inet:ADDR:PORT"  the store's service LMTP
//                      address if it has one, else its master slot's
//                      "NOTFOUND "                a user in no store, or not
//                                                 a user name at all
//                      "TEMP ..."                 the database failed:
//                                                 Postfix defers and retries
//                      (a fenced store, whose failover or promotion is
//                      switching its master, keeps answering its current
//                      route: see routing_maps.cc)
//   mailbox KEY    ->  "OK store-N" / "NOTFOUND " / "TEMP ..." (database)
//                      for relay_recipient_maps: does the user exist; a
//                      fenced store still has its users, so no TEMP.
//
// KEY is "user@domain", "user+ext@domain" or a bare "user". With a list of
// domains, "user@domain" with another domain is NOTFOUND (so that mail to
// other domains is not routed into the cluster); without one, the domain
// is not looked at. A request that is not "NAME KEY" or names another map
// gets "PERM ..." and the connection is to be closed.
//
// Thread-compatible: the lookup runs on the caller's thread (coordinatord's
// io thread, where the Coordinator lives).
//
// Example:
//   RoutingMaps maps([&](absl::string_view user) { return c.UserStore(user);
//   }); RoutingAnswer a = maps.Answer("transport bob@example.com");
//   // a.reply == "OK lmtp:inet:127.0.1.3:2400"
#ifndef MAILREPL_COORDINATOR_ROUTING_MAPS_H_
#define MAILREPL_COORDINATOR_ROUTING_MAPS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/coord.pb.h"

namespace mailrepl::coord {

inline constexpr char kTransportMap[] = "transport";
inline constexpr char kMailboxMap[] = "mailbox";

// A user's store now, nullopt for a user in no store; kInvalidArgument for
// a key that is not a user name (Coordinator::UserStore).
using UserStoreLookup =
    std::function<absl::StatusOr<std::optional<coordpb::StoreInfo>>(absl::string_view user)>;

struct RoutingAnswer {
  std::string reply;   // the reply netstring's payload
  bool close = false;  // a protocol error: close the connection after the reply
};

struct RoutingStats {
  uint64_t lookups = 0;
  uint64_t found = 0;
  uint64_t not_found = 0;
  uint64_t temp = 0;    // database errors, a store without its master
  uint64_t errors = 0;  // PERM answers (bad requests, unknown maps)
};

class RoutingMaps {
 public:
  // domains: the mail domains the cluster holds (any case); empty: any.
  explicit RoutingMaps(UserStoreLookup lookup, std::vector<std::string> domains = {});
  RoutingMaps(const RoutingMaps&) = delete;
  RoutingMaps& operator=(const RoutingMaps&) = delete;

  // Answers one socketmap request ("NAME KEY", the netstring's payload).
  RoutingAnswer Answer(absl::string_view request);
  const RoutingStats& stats() const { return stats_; }

 private:
  RoutingAnswer Perm(absl::string_view reason);

  UserStoreLookup lookup_;
  std::set<std::string> domains_;  // lower case
  RoutingStats stats_;
};

// The LMTP address Postfix should deliver the store's mail to: its service
// address if set, else its master slot's LMTP address ("" if the master is
// not among the members, which the coordinator never produces).
std::string RoutingLmtpAddress(const coordpb::StoreInfo& store);

}  // namespace mailrepl::coord

#endif  // MAILREPL_COORDINATOR_ROUTING_MAPS_H_
