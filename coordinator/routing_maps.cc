#include "coordinator/routing_maps.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace mailrepl::coord {

namespace {

// Reasons go back to Postfix, which logs them: printable and short.
std::string Printable(absl::string_view text) {
  constexpr size_t kMax = 300;
  std::string out = absl::CEscape(text.substr(0, kMax));
  if (text.size() > kMax) out += "...";
  return out;
}

}  // namespace

std::string RoutingLmtpAddress(const coordpb::StoreInfo& store) {
  if (!store.service_lmtp().empty()) return store.service_lmtp();
  for (const coordpb::SlotInfo& m : store.members()) {
    if (m.slot_id() == store.master_slot_id()) return m.lmtp_address();
  }
  return "";
}

RoutingMaps::RoutingMaps(UserStoreLookup lookup, std::vector<std::string> domains)
    : lookup_(std::move(lookup)) {
  for (const std::string& d : domains) domains_.insert(absl::AsciiStrToLower(d));
}

RoutingAnswer RoutingMaps::Perm(absl::string_view reason) {
  ++stats_.errors;
  return {.reply = absl::StrCat("PERM ", reason), .close = true};
}

RoutingAnswer RoutingMaps::Answer(absl::string_view request) {
  const size_t space = request.find(' ');
  if (space == absl::string_view::npos) {
    return Perm(
        absl::StrCat("bad request '", Printable(request), "': a socketmap request is 'NAME KEY'"));
  }
  const absl::string_view map = request.substr(0, space);
  const absl::string_view key = request.substr(space + 1);
  const bool transport = map == kTransportMap;
  if (!transport && map != kMailboxMap) {
    return Perm(absl::StrCat("unknown map '", Printable(map), "': this server answers '",
                             kTransportMap, "' and '", kMailboxMap, "'"));
  }
  ++stats_.lookups;
  if (const size_t at = key.rfind('@');
      at != absl::string_view::npos && !domains_.empty() &&
      !domains_.contains(absl::AsciiStrToLower(key.substr(at + 1)))) {
    ++stats_.not_found;  // another domain's mail
    return {.reply = "NOTFOUND "};
  }
  absl::StatusOr<std::optional<coordpb::StoreInfo>> store = lookup_(key);
  if (!store.ok() && absl::IsInvalidArgument(store.status())) {
    // Not a user name: no such user (Postfix then rejects or routes
    // elsewhere), not an error of ours.
    ++stats_.not_found;
    return {.reply = "NOTFOUND "};
  }
  if (!store.ok()) {
    ++stats_.temp;
    return {.reply = absl::StrCat("TEMP coordinator lookup of '", Printable(key), "' failed: ",
                                  Printable(store.status().message()), "; retry later")};
  }
  if (!store->has_value()) {
    ++stats_.not_found;
    return {.reply = "NOTFOUND "};
  }
  const coordpb::StoreInfo& s = **store;
  if (!transport) {
    ++stats_.found;
    return {.reply = absl::StrCat("OK store-", s.store_id())};
  }
  // A fenced store (a failover or promotion switching its master) keeps its
  // route: its LMTP answers 451 or refuses the connection meanwhile, so the
  // MTA accepts the message at SMTP time and retries it from its own queue.
  // A TEMP here would make Postfix refuse the recipient at the SMTP edge
  // (451 at RCPT) and cache that failure for tens of seconds, pushing the
  // mail back into the senders' queues for their much longer retry times.
  const std::string address = RoutingLmtpAddress(s);
  if (address.empty()) {
    ++stats_.temp;
    return {.reply = absl::StrCat("TEMP store ", s.store_id(), " has no master slot ",
                                  s.master_slot_id(), " among its members; retry later")};
  }
  ++stats_.found;
  return {.reply = absl::StrCat("OK lmtp:inet:", address)};
}

}  // namespace mailrepl::coord
