#include "transport/net.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace mailrepl::transport {

absl::StatusOr<asio::ip::tcp::endpoint> ParseEndpoint(const std::string& text) {
  // Asio reads the host as a C string: "127.0.0.1\0junk:24" would pass.
  if (!std::all_of(text.begin(), text.end(), [](char c) { return c > ' ' && c < 127; })) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", absl::CEscape(text), "' is not ADDR:PORT (control or non-ASCII bytes)"));
  }
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not ADDR:PORT"));
  }
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  uint32_t port = 0;
  if (!absl::SimpleAtoi(text.substr(colon + 1), &port) || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in '", text, "'"));
  }
  asio::error_code ec;
  const asio::ip::address addr = asio::ip::make_address(host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad address in '", text, "'"));
  return asio::ip::tcp::endpoint(addr, static_cast<uint16_t>(port));
}

std::string PeerAddress(const asio::ip::tcp::socket& socket) {
  asio::error_code ec;
  const asio::ip::tcp::endpoint ep = socket.remote_endpoint(ec);
  if (ec) return "unknown";
  return absl::StrCat(ep.address().to_string(), ":", ep.port());
}

absl::Status ListenOn(asio::ip::tcp::acceptor& acceptor, const std::string& address,
                      bool free_bind) {
  absl::StatusOr<asio::ip::tcp::endpoint> endpoint = ParseEndpoint(address);
  if (!endpoint.ok()) return endpoint.status();
  asio::error_code ec;
  acceptor.open(endpoint->protocol(), ec);
  if (!ec) acceptor.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec && free_bind) {
    const int one = 1;
    if (setsockopt(acceptor.native_handle(), IPPROTO_IP, IP_FREEBIND, &one, sizeof(one)) != 0) {
      ec = asio::error_code(errno, asio::system_category());
    }
  }
  if (!ec) acceptor.bind(*endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    asio::error_code ignored;
    acceptor.close(ignored);
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace mailrepl::transport
