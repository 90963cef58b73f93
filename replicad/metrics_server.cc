#include "replicad/metrics_server.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/log.h"
#include "replicad/metrics_text.h"

namespace mailrepl::metrics {

using asio::awaitable;
using asio::use_awaitable;

namespace {

// After the response, how long to read (and discard) what the client still
// sends, so that closing with unread bytes does not reset the connection
// before the client has read the response.
constexpr absl::Duration kLingerTimeout = absl::Seconds(1);
constexpr size_t kLingerBytes = 64 * 1024;

// RFC 9110 tchar.
bool IsTokenChar(char c) {
  return absl::ascii_isalnum(c) || absl::StrContains("!#$%&'*+-.^_`|~", c);
}

bool IsToken(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// Where the request head ends (just after the empty line), or npos. Bare LF
// line ends are accepted too (RFC 9112 2.2).
size_t HeadEnd(absl::string_view data) {
  const size_t crlf = data.find("\r\n\r\n");
  const size_t lf = data.find("\n\n");
  size_t end = absl::string_view::npos;
  if (crlf != absl::string_view::npos) end = crlf + 4;
  if (lf != absl::string_view::npos && (end == absl::string_view::npos || lf + 2 < end)) {
    end = lf + 2;
  }
  return end;
}

struct RequestLine {
  std::string method;
  std::string path;  // without query and fragment
};

// Parses and checks a request head (through the empty line). The error
// names what is wrong, for the 400 body.
absl::StatusOr<RequestLine> ParseHead(absl::string_view head) {
  std::vector<absl::string_view> lines = absl::StrSplit(head, '\n');
  for (absl::string_view& line : lines) absl::ConsumeSuffix(&line, "\r");
  // lines ends with the two empty strings around the final line break.
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  if (lines.empty()) return absl::InvalidArgumentError("empty request");

  std::vector<absl::string_view> parts = absl::StrSplit(lines[0], ' ');
  if (parts.size() != 3) {
    return absl::InvalidArgumentError("the request line is not METHOD SP TARGET SP VERSION");
  }
  if (!IsToken(parts[0])) return absl::InvalidArgumentError("bad method");
  if (parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0") {
    return absl::InvalidArgumentError("only HTTP/1.0 and HTTP/1.1 are served");
  }
  absl::string_view target = parts[1];
  for (char c : target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError("control character in the request target");
    }
  }
  // Absolute form (RFC 9112 3.2.2): keep only the path.
  for (absl::string_view scheme : {"http://", "https://"}) {
    if (absl::StartsWithIgnoreCase(target, scheme)) {
      target.remove_prefix(scheme.size());
      const size_t slash = target.find('/');
      target = slash == absl::string_view::npos ? "/" : target.substr(slash);
      break;
    }
  }
  if (target.empty() || (target[0] != '/' && target != "*")) {
    return absl::InvalidArgumentError("the request target is not a path");
  }
  target = target.substr(0, target.find_first_of("?#"));

  for (size_t i = 1; i < lines.size(); ++i) {
    const absl::string_view line = lines[i];
    if (line.empty()) return absl::InvalidArgumentError("empty line inside the header");
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos || !IsToken(line.substr(0, colon))) {
      return absl::InvalidArgumentError(absl::StrCat("bad header line ", i + 1));
    }
    for (char c : line.substr(colon + 1)) {
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) {
        return absl::InvalidArgumentError(
            absl::StrCat("control character in header line ", i + 1));
      }
    }
  }
  return RequestLine{std::string(parts[0]), std::string(target)};
}

std::chrono::steady_clock::duration ToChrono(absl::Duration d) {
  return absl::ToChronoNanoseconds(d);
}

}  // namespace

struct MetricsServer::Connection {
  explicit Connection(asio::ip::tcp::socket s)
      : socket(std::move(s)), deadline(socket.get_executor()) {}
  asio::ip::tcp::socket socket;
  asio::steady_timer deadline;
  bool timed_out = false;
  std::string peer;
};

struct MetricsServer::Response {
  int code = 200;
  std::string reason;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  bool allow_get = false;  // adds "Allow: GET" (405)

  std::string Serialize() const {
    std::string out = absl::StrCat("HTTP/1.1 ", code, " ", reason, "\r\nContent-Type: ",
                                   content_type, "\r\nContent-Length: ", body.size(),
                                   "\r\nConnection: close\r\n");
    if (allow_get) out += "Allow: GET\r\n";
    absl::StrAppend(&out, "\r\n", body);
    return out;
  }
};

MetricsServer::MetricsServer(asio::io_context& io, MetricsServerOptions options,
                             MetricsCallback metrics, HealthCallback health)
    : options_(std::move(options)),
      metrics_(std::move(metrics)),
      health_(std::move(health)),
      server_(io,
              {.name = "metrics",
               .listen = options_.listen,
               .max_connections = options_.max_connections,
               // Closed at once, without a word: a scraper retries.
               .refuse = [](asio::ip::tcp::socket&) {}},
              [](asio::ip::tcp::socket socket, std::string peer) {
                auto conn = std::make_shared<Connection>(std::move(socket));
                conn->peer = std::move(peer);
                return conn;
              },
              [this](std::shared_ptr<Connection> conn) { return Session(std::move(conn)); }) {}

MetricsServer::~MetricsServer() = default;

absl::Status MetricsServer::Listen() { return server_.Listen(); }

uint16_t MetricsServer::port() const { return server_.port(); }

awaitable<void> MetricsServer::Run() { return server_.Run(); }

void MetricsServer::Stop() {
  server_.Stop([](Connection& conn) {
    asio::error_code ec;
    conn.deadline.cancel();
    conn.socket.close(ec);
  });
}

MetricsServerStats MetricsServer::stats() const {
  MetricsServerStats s = stats_;
  const transport::ServerStats& st = server_.stats();
  s.connections = st.accepted + st.refused;
  s.rejected = st.refused;
  s.accept_errors = st.accept_errors;
  s.session_failures = st.session_failures;
  return s;
}

// Closes the socket when the timer expires (a later Arm() or the end of the
// session cancels it). The wait holds a reference to the connection.
void MetricsServer::Arm(const std::shared_ptr<Connection>& conn, absl::Duration timeout) {
  conn->deadline.expires_after(ToChrono(timeout));
  conn->deadline.async_wait([conn](const asio::error_code& ec) {
    if (ec) return;  // cancelled
    conn->timed_out = true;
    asio::error_code ignored;
    conn->socket.close(ignored);
  });
}

MetricsServer::Response MetricsServer::Answer(const std::string& head) {
  absl::StatusOr<RequestLine> request = ParseHead(head);
  if (!request.ok()) {
    return {.code = 400, .reason = "Bad Request",
            .body = absl::StrCat("bad request: ", request.status().message(), "\n")};
  }
  const bool known = request->path == "/metrics" || request->path == "/health";
  if (!known) {
    return {.code = 404, .reason = "Not Found",
            .body = absl::StrCat("not found: ", request->path,
                                 " (this server has /metrics and /health)\n")};
  }
  if (request->method != "GET") {
    return {.code = 405, .reason = "Method Not Allowed",
            .body = absl::StrCat("method ", request->method, " is not allowed on ",
                                 request->path, ": use GET\n"),
            .allow_get = true};
  }
  if (request->path == "/metrics") {
    ++stats_.scrapes;
    return {.code = 200, .reason = "OK", .content_type = kTextContentType,
            .body = metrics_ ? metrics_() : std::string()};
  }
  HealthReport health = health_ ? health_() : HealthReport{.ok = true, .text = "ok\n"};
  if (health.ok) return {.code = 200, .reason = "OK", .body = std::move(health.text)};
  return {.code = 503, .reason = "Service Unavailable", .body = std::move(health.text)};
}

awaitable<void> MetricsServer::Session(std::shared_ptr<Connection> conn) {
  Arm(conn, options_.read_timeout);
  std::string data;
  size_t head_end = std::string::npos;
  asio::error_code ec;
  // Read until the empty line that ends the head, or one byte past the limit.
  while (!server_.stopping()) {
    char chunk[2048];
    const size_t room = kMaxHttpRequestBytes + 1 - data.size();
    const size_t n = co_await conn->socket.async_read_some(
        asio::buffer(chunk, std::min(sizeof(chunk), room)),
        asio::redirect_error(use_awaitable, ec));
    data.append(chunk, n);
    head_end = HeadEnd(data);
    if (head_end != std::string::npos || data.size() > kMaxHttpRequestBytes || ec) break;
  }

  std::optional<Response> response;
  if (server_.stopping()) {
    // Closed by Stop().
  } else if (head_end != std::string::npos && head_end <= kMaxHttpRequestBytes) {
    response = Answer(data.substr(0, head_end));
  } else if (conn->timed_out) {
    ++stats_.timeouts;
    LogLine(Severity::kInfo, "metrics connection timed out",
            absl::StrCat(Kv("peer", conn->peer), Kv("received_bytes", data.size())));
  } else if (data.size() > kMaxHttpRequestBytes) {
    response = Response{.code = 400, .reason = "Bad Request",
                        .body = absl::StrCat("bad request: the request head is over ",
                                             kMaxHttpRequestBytes, " bytes\n")};
  } else if (!data.empty()) {
    // The client closed in the middle of a request: nobody to answer.
    ++stats_.bad_requests;
  }

  if (response) {
    if (response->code == 400) {
      ++stats_.bad_requests;
      LogLine(Severity::kInfo, "metrics bad request",
              absl::StrCat(Kv("peer", conn->peer),
                           Kv("reason", absl::StripTrailingAsciiWhitespace(response->body))));
    }
    Arm(conn, options_.write_timeout);
    const std::string bytes = response->Serialize();
    co_await asio::async_write(conn->socket, asio::buffer(bytes),
                               asio::redirect_error(use_awaitable, ec));
    if (!ec) {
      ++stats_.responses;
      // Lingering close: stop sending, then discard what the client still
      // sends until it closes, so our close does not reset the connection
      // (and lose the response) while request bytes are unread.
      conn->socket.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
      Arm(conn, kLingerTimeout);
      size_t drained = 0;
      while (!ec && !server_.stopping() && drained < kLingerBytes) {
        char chunk[2048];
        drained += co_await conn->socket.async_read_some(
            asio::buffer(chunk), asio::redirect_error(use_awaitable, ec));
      }
    }
  }
  conn->deadline.cancel();
  conn->socket.close(ec);
}

}  // namespace mailrepl::metrics
