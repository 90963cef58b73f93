// TCP address helpers shared by every server and client: parsing
// "ADDR:PORT" and naming a socket's peer in log lines. Thread-safe: pure
// functions.
#ifndef MAILREPL_TRANSPORT_NET_H_
#define MAILREPL_TRANSPORT_NET_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/ip/tcp.hpp"

namespace mailrepl::transport {

// Parses "ADDR:PORT" (IPv4, or [IPv6]). Port 0 is allowed: a listener then
// takes any free port.
absl::StatusOr<asio::ip::tcp::endpoint> ParseEndpoint(const std::string& text);

// "ip:port" of the socket's peer, or "unknown".
std::string PeerAddress(const asio::ip::tcp::socket& socket);

// Opens, binds and listens on `address` (ADDR:PORT; port 0 = any free
// port), with SO_REUSEADDR. With free_bind, also IP_FREEBIND, so that an
// address not (yet) configured on an interface can be bound (service
// addresses that move between hosts). kInvalidArgument for a bad address,
// kUnavailable when it cannot bind (the message names the address).
absl::Status ListenOn(asio::ip::tcp::acceptor& acceptor, const std::string& address,
                      bool free_bind = false);

}  // namespace mailrepl::transport

#endif  // MAILREPL_TRANSPORT_NET_H_
