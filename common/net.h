// TCP address helpers shared by every server and client: parsing
// "ADDR:PORT" and naming a socket's peer in log lines. Thread-safe: pure
// functions.
#ifndef MAILREPL_COMMON_NET_H_
#define MAILREPL_COMMON_NET_H_

#include <string>

#include "absl/status/statusor.h"
#include "asio/ip/tcp.hpp"

namespace mailrepl {

// Parses "ADDR:PORT" (IPv4, or [IPv6]). Port 0 is allowed: a listener then
// takes any free port.
absl::StatusOr<asio::ip::tcp::endpoint> ParseEndpoint(const std::string& text);

// "ip:port" of the socket's peer, or "unknown".
std::string PeerAddress(const asio::ip::tcp::socket& socket);

}  // namespace mailrepl

#endif  // MAILREPL_COMMON_NET_H_
