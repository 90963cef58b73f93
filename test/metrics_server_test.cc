// MetricsServer over real TCP connections (a raw socket client and Python's
// urllib), and MetricsBuilder's text checked by an exposition-format parser
// written from the format's specification.
#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "asio.hpp"
#include "catch2/catch.hpp"
#include "replicad/metrics_server.h"
#include "replicad/metrics_text.h"
#include "test/process_util.h"

namespace mailrepl::metrics {
namespace {

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

// ---- the exposition format, parsed independently of the code under test ----

struct ParsedSample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;  // unescaped values
  double value = 0;
};

struct Exposition {
  std::vector<ParsedSample> samples;
  std::map<std::string, std::string> help;  // unescaped
  std::map<std::string, std::string> type;
  std::string error;  // empty if the text is valid
};

bool IsNameChar(char c, bool first, bool colon_ok) {
  return absl::ascii_isalpha(c) || c == '_' || (colon_ok && c == ':') ||
         (!first && absl::ascii_isdigit(c));
}

// Text format 0.0.4: "# HELP name text", "# TYPE name type", other "#"
// lines are comments; samples are name[{l="v",...}] value [timestamp].
// Label values escape \\ \" \n; HELP text escapes \\ and \n.
Exposition Parse(const std::string& text) {
  Exposition out;
  auto fail = [&out](std::string message) {
    out.error = std::move(message);
    return out;
  };
  if (!text.empty() && text.back() != '\n') return fail("the text does not end with a newline");
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  if (!lines.empty()) lines.pop_back();  // after the final newline
  std::map<std::string, bool> seen_samples;
  for (size_t n = 0; n < lines.size(); ++n) {
    const std::string& line = lines[n];
    const std::string where = absl::StrCat("line ", n + 1, " '", line, "': ");
    if (absl::StartsWith(line, "#")) {
      std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(' ', 3));
      if (parts.size() >= 3 && (parts[1] == "HELP" || parts[1] == "TYPE")) {
        const std::string& name = parts[2];
        const std::string rest = parts.size() > 3 ? parts[3] : "";
        if (parts[1] == "TYPE") {
          if (out.type.count(name)) return fail(where + "second TYPE");
          if (seen_samples.count(name)) return fail(where + "TYPE after samples");
          if (rest != "counter" && rest != "gauge" && rest != "untyped" &&
              rest != "summary" && rest != "histogram") {
            return fail(where + "unknown type");
          }
          out.type[name] = rest;
        } else {
          if (out.help.count(name)) return fail(where + "second HELP");
          std::string help;
          for (size_t i = 0; i < rest.size(); ++i) {
            if (rest[i] == '\\' && i + 1 < rest.size() && rest[i + 1] == '\\') {
              help += '\\';
              ++i;
            } else if (rest[i] == '\\' && i + 1 < rest.size() && rest[i + 1] == 'n') {
              help += '\n';
              ++i;
            } else {
              help += rest[i];
            }
          }
          out.help[name] = help;
        }
      }
      continue;
    }
    if (line.empty()) continue;
    ParsedSample s;
    size_t i = 0;
    while (i < line.size() && IsNameChar(line[i], i == 0, true)) ++i;
    s.name = line.substr(0, i);
    if (s.name.empty()) return fail(where + "no metric name");
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t start = i;
        while (i < line.size() && IsNameChar(line[i], i == start, false)) ++i;
        std::string label = line.substr(start, i - start);
        if (label.empty()) return fail(where + "bad label name");
        if (i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') {
          return fail(where + "expected =\"");
        }
        i += 2;
        std::string value;
        bool closed = false;
        while (i < line.size()) {
          const char c = line[i++];
          if (c == '"') {
            closed = true;
            break;
          }
          if (c == '\\') {
            if (i >= line.size()) break;
            const char e = line[i++];
            if (e == '\\') {
              value += '\\';
            } else if (e == '"') {
              value += '"';
            } else if (e == 'n') {
              value += '\n';
            } else {
              return fail(where + "bad escape");
            }
          } else {
            value += c;
          }
        }
        if (!closed) return fail(where + "unterminated label value");
        s.labels.emplace_back(std::move(label), std::move(value));
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) return fail(where + "unterminated label set");
      ++i;  // '}'
    }
    if (i >= line.size() || line[i] != ' ') return fail(where + "no space before value");
    std::vector<std::string> fields = absl::StrSplit(line.substr(i + 1), ' ');
    if (fields.empty() || fields.size() > 2) return fail(where + "bad value field");
    const std::string v = absl::AsciiStrToLower(fields[0]);
    if (v == "nan" || v == "+inf" || v == "-inf") {
      s.value = 0;
    } else if (!absl::SimpleAtod(fields[0], &s.value)) {
      return fail(where + "value is not a number");
    }
    seen_samples[s.name] = true;
    out.samples.push_back(std::move(s));
  }
  return out;
}

// ---- an HTTP client on a plain blocking socket ----

struct HttpResponse {
  std::string status_line;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string raw;
};

// Sends `request` as is, reads until the server closes (at most 10 s).
HttpResponse Exchange(uint16_t port, const std::string& request) {
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  socket.connect({asio::ip::make_address("127.0.0.1"), port});
  timeval tv{.tv_sec = 10, .tv_usec = 0};
  setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  HttpResponse r;
  asio::error_code ec;
  // A server that closes at once may reset the connection: not an error here.
  if (!request.empty()) asio::write(socket, asio::buffer(request), ec);
  ec.clear();
  char buf[4096];
  while (!ec) {
    const size_t n = socket.read_some(asio::buffer(buf), ec);
    r.raw.append(buf, n);
  }
  const size_t head_end = r.raw.find("\r\n\r\n");
  if (head_end == std::string::npos) return r;
  std::vector<std::string> lines = absl::StrSplit(r.raw.substr(0, head_end), "\r\n");
  r.status_line = lines[0];
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == std::string::npos) continue;
    r.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  r.body = r.raw.substr(head_end + 4);
  return r;
}

HttpResponse Get(uint16_t port, const std::string& path) {
  return Exchange(port, absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     "User-Agent: metrics_server_test\r\n\r\n"));
}

// ---- a MetricsServer on its own io thread ----

class TestServer {
 public:
  explicit TestServer(MetricsServerOptions options = {}) {
    if (options.listen.empty()) options.listen = "127.0.0.1:0";
    server_ = std::make_unique<MetricsServer>(
        io_, options, [this] { return Scrape(); },
        [this] {
          return HealthReport{.ok = healthy.load(),
                              .text = healthy.load() ? "ok\n" : "slot 3: log damaged\n"};
        });
    REQUIRE(server_->Listen().ok());
    asio::co_spawn(io_, server_->Run(), [this](std::exception_ptr) { run_ended_ = true; });
    thread_ = std::thread([this] { io_.run(); });
  }
  ~TestServer() {
    asio::post(io_, [this] { server_->Stop(); });
    thread_.join();  // io.run() returns once every connection ended
  }
  uint16_t port() const { return server_->port(); }
  MetricsServerStats Stats() {
    std::promise<MetricsServerStats> p;
    asio::post(io_, [&] { p.set_value(server_->stats()); });
    return p.get_future().get();
  }
  bool run_ended() const { return run_ended_; }

  std::atomic<bool> healthy{true};
  std::atomic<int> scrapes{0};

 private:
  std::string Scrape() {
    ++scrapes;
    MetricsBuilder b;
    b.Gauge("mailrepl_store_lsn", "Last LSN of the slot",
            {{"store", "1"}, {"slot", "3"}, {"role", "master"}}, 123);
    b.Gauge("mailrepl_store_lsn", "Last LSN of the slot",
            {{"store", "2"}, {"slot", "4"}, {"role", "replica"}}, 45);
    b.Counter("mailrepl_api_calls_total", "Client API calls answered", {{"slot", "3"}},
              scrapes.load());
    b.Gauge("mailrepl_odd_label", "A label value with \"quotes\", \\ and a\nnewline",
            {{"mailbox", "user/a\"b\\c\nd"}}, 1);
    return b.Text();
  }

  asio::io_context io_;
  std::unique_ptr<MetricsServer> server_;
  std::thread thread_;
  std::atomic<bool> run_ended_{false};
};

const ParsedSample* Find(const Exposition& e, const std::string& name,
                         const std::string& label, const std::string& value) {
  for (const ParsedSample& s : e.samples) {
    if (s.name != name) continue;
    for (const auto& [l, v] : s.labels) {
      if (l == label && v == value) return &s;
    }
  }
  return nullptr;
}

// ---- tests ----

TEST_CASE("GET /metrics answers 200 with parsable Prometheus text from the callback",
          "[metrics]") {
  TestServer server;
  HttpResponse r = Get(server.port(), "/metrics");
  CHECK(r.status_line == "HTTP/1.1 200 OK");
  CHECK_THAT(r.headers["content-type"], StartsWith("text/plain; version=0.0.4"));
  CHECK(r.headers["content-length"] == std::to_string(r.body.size()));
  CHECK(r.headers["connection"] == "close");
  Exposition e = Parse(r.body);
  INFO(r.body);
  REQUIRE(e.error.empty());
  CHECK(e.type["mailrepl_store_lsn"] == "gauge");
  CHECK(e.type["mailrepl_api_calls_total"] == "counter");
  CHECK(e.help["mailrepl_store_lsn"] == "Last LSN of the slot");
  const ParsedSample* lsn = Find(e, "mailrepl_store_lsn", "role", "master");
  REQUIRE(lsn != nullptr);
  CHECK(lsn->value == 123);
  CHECK(lsn->labels == std::vector<std::pair<std::string, std::string>>{
                           {"store", "1"}, {"slot", "3"}, {"role", "master"}});
  CHECK(Find(e, "mailrepl_store_lsn", "role", "replica")->value == 45);
  // The callback runs at scrape time: a second scrape sees a new value.
  HttpResponse again = Get(server.port(), "/metrics");
  CHECK(Find(Parse(again.body), "mailrepl_api_calls_total", "slot", "3")->value == 2);
  CHECK(server.Stats().scrapes == 2);
}

TEST_CASE("Python's urllib scrapes /metrics and /health like a real client", "[metrics]") {
  TestServer server;
  const std::string script =
      "import sys, urllib.request, urllib.error\n"
      "base = 'http://127.0.0.1:' + sys.argv[1]\n"
      "with urllib.request.urlopen(base + '/metrics', timeout=10) as r:\n"
      "    print(r.status, r.headers['Content-Type'])\n"
      "    sys.stdout.write(r.read().decode('utf-8'))\n"
      "try:\n"
      "    urllib.request.urlopen(base + '/health', timeout=10)\n"
      "except urllib.error.HTTPError as e:\n"
      "    print('health', e.code, e.read().decode().strip())\n";
  server.healthy = false;
  testing::Process python({"/usr/bin/python3", "-c", script, std::to_string(server.port())});
  REQUIRE(python.Wait(absl::Seconds(30)) == 0);
  const std::string out = python.Stdout();
  INFO(python.Describe() << "\n" << out);
  CHECK_THAT(out, StartsWith("200 text/plain; version=0.0.4"));
  CHECK_THAT(out, Contains("mailrepl_store_lsn{store=\"1\",slot=\"3\",role=\"master\"} 123"));
  CHECK_THAT(out, Contains("health 503 slot 3: log damaged"));
}

TEST_CASE("GET /health answers 200 with the text when healthy and 503 when not",
          "[metrics]") {
  TestServer server;
  HttpResponse ok = Get(server.port(), "/health");
  CHECK(ok.status_line == "HTTP/1.1 200 OK");
  CHECK(ok.body == "ok\n");
  server.healthy = false;
  HttpResponse bad = Get(server.port(), "/health");
  CHECK(bad.status_line == "HTTP/1.1 503 Service Unavailable");
  CHECK(bad.body == "slot 3: log damaged\n");
}

TEST_CASE("an unknown path gets 404 and another method gets 405", "[metrics]") {
  TestServer server;
  CHECK(Get(server.port(), "/nothing").status_line == "HTTP/1.1 404 Not Found");
  CHECK(Get(server.port(), "/metrics/x").status_line == "HTTP/1.1 404 Not Found");
  // A query string does not change the path.
  CHECK(Get(server.port(), "/metrics?name[]=x").status_line == "HTTP/1.1 200 OK");
  HttpResponse post =
      Exchange(server.port(), "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                              "\r\nhello");
  CHECK(post.status_line == "HTTP/1.1 405 Method Not Allowed");
  CHECK(post.headers["allow"] == "GET");
  CHECK(Exchange(server.port(), "DELETE /health HTTP/1.0\r\n\r\n").status_line ==
        "HTTP/1.1 405 Method Not Allowed");
}

TEST_CASE("a garbage request gets 400 and the server goes on serving the next client",
          "[metrics]") {
  TestServer server;
  for (const std::string& garbage :
       {std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 15),
        std::string("GET /metrics\r\n\r\n"),                     // no version
        std::string("GET  /metrics HTTP/1.1\r\n\r\n"),           // two spaces
        std::string("GET /metrics HTTP/9.9\r\n\r\n"),            // unknown version
        std::string("GET metrics HTTP/1.1\r\n\r\n"),             // not a path
        std::string("GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n"),
        std::string("GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n"),
        std::string("GET /metrics HTTP/1.1\r\nX: a\x01z\r\n\r\n")}) {
    INFO(absl::CEscape(garbage));
    HttpResponse r = Exchange(server.port(), garbage);
    CHECK(r.status_line == "HTTP/1.1 400 Bad Request");
    CHECK_THAT(r.body, StartsWith("bad request: "));
    CHECK(Get(server.port(), "/metrics").status_line == "HTTP/1.1 200 OK");
  }
  CHECK(server.Stats().bad_requests == 8);
}

TEST_CASE("a request head over 8 KiB gets 400 and closes", "[metrics]") {
  TestServer server;
  const std::string big = absl::StrCat("GET /metrics HTTP/1.1\r\nX-Fill: ",
                                       std::string(kMaxHttpRequestBytes, 'a'), "\r\n\r\n");
  HttpResponse r = Exchange(server.port(), big);
  CHECK(r.status_line == "HTTP/1.1 400 Bad Request");
  CHECK_THAT(r.body, Contains("over 8192 bytes"));
  // Just under the limit is still served.
  const std::string head = "GET /metrics HTTP/1.1\r\nX-Fill: ";
  const std::string fits =
      absl::StrCat(head, std::string(kMaxHttpRequestBytes - head.size() - 4, 'a'), "\r\n\r\n");
  REQUIRE(fits.size() == kMaxHttpRequestBytes);
  CHECK(Exchange(server.port(), fits).status_line == "HTTP/1.1 200 OK");
}

TEST_CASE("a silent client is disconnected at the read deadline", "[metrics]") {
  TestServer server({.read_timeout = absl::Milliseconds(200)});
  const absl::Time start = absl::Now();
  HttpResponse r = Exchange(server.port(), "GET /metr");  // never finishes
  CHECK(r.raw.empty());  // closed without an answer
  CHECK(absl::Now() - start < absl::Seconds(5));
  CHECK(server.Stats().timeouts == 1);
  CHECK(Get(server.port(), "/health").status_line == "HTTP/1.1 200 OK");
}

TEST_CASE("connections over max_connections are closed at once", "[metrics]") {
  TestServer server({.max_connections = 1});
  asio::io_context io;
  asio::ip::tcp::socket idle(io);
  idle.connect({asio::ip::make_address("127.0.0.1"), server.port()});
  // The idle connection holds the only place until it is accepted...
  REQUIRE(testing::WaitFor([&] { return server.Stats().connections == 1; }, absl::Seconds(10)));
  HttpResponse r = Get(server.port(), "/metrics");
  CHECK(r.raw.empty());
  CHECK(server.Stats().rejected == 1);
  idle.close();
  // ...and frees it when it goes.
  REQUIRE(testing::WaitFor(
      [&] { return Get(server.port(), "/health").status_line == "HTTP/1.1 200 OK"; },
      absl::Seconds(10)));
}

TEST_CASE("Stop closes open connections and ends Run", "[metrics]") {
  asio::io_context io;
  MetricsServer server(io, {.listen = "127.0.0.1:0"}, [] { return std::string(); },
                       [] { return HealthReport{.ok = true, .text = "ok\n"}; });
  REQUIRE(server.Listen().ok());
  REQUIRE(server.port() != 0);
  bool ended = false;
  asio::co_spawn(io, server.Run(), [&](std::exception_ptr) { ended = true; });
  asio::ip::tcp::socket client(io);
  client.connect({asio::ip::make_address("127.0.0.1"), server.port()});
  // Run the server until it accepted the connection, then stop it.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (server.stats().connections == 0 && absl::Now() < deadline) {
    io.run_one_for(std::chrono::seconds(1));
  }
  REQUIRE(server.stats().connections == 1);
  server.Stop();
  io.run_for(std::chrono::seconds(10));  // returns once nothing is left to do
  CHECK(ended);
  char byte;
  asio::error_code ec;
  client.read_some(asio::buffer(&byte, 1), ec);
  CHECK(ec == asio::error::eof);
}

TEST_CASE("Listen refuses a bad address and reports a taken port", "[metrics]") {
  asio::io_context io;
  MetricsServer bad(io, {.listen = "nonsense"}, nullptr, nullptr);
  CHECK(bad.Listen().code() == absl::StatusCode::kInvalidArgument);
  MetricsServer first(io, {.listen = "127.0.0.1:0"}, nullptr, nullptr);
  REQUIRE(first.Listen().ok());
  MetricsServer second(io, {.listen = absl::StrCat("127.0.0.1:", first.port())}, nullptr,
                       nullptr);
  // SO_REUSEADDR does not allow two listeners on one port.
  CHECK(second.Listen().code() == absl::StatusCode::kUnavailable);
}

// ---- MetricsBuilder ----

TEST_CASE("label values with quotes, backslashes and newlines are escaped and parse back",
          "[metrics]") {
  TestServer server;
  HttpResponse r = Get(server.port(), "/metrics");
  CHECK_THAT(r.body, Contains("mailrepl_odd_label{mailbox=\"user/a\\\"b\\\\c\\nd\"} 1\n"));
  Exposition e = Parse(r.body);
  REQUIRE(e.error.empty());
  CHECK(Find(e, "mailrepl_odd_label", "mailbox", "user/a\"b\\c\nd") != nullptr);
  // HELP text: backslash and newline escaped exactly once.
  CHECK_THAT(r.body, Contains("# HELP mailrepl_odd_label A label value with \"quotes\", \\\\ "
                              "and a\\nnewline\n"));
  CHECK(e.help["mailrepl_odd_label"] == "A label value with \"quotes\", \\ and a\nnewline");
}

TEST_CASE("a family gets one HELP and one TYPE line, in first-seen order", "[metrics]") {
  MetricsBuilder b;
  b.Gauge("b_gauge", "B", {{"x", "1"}}, 1);
  b.Counter("a_total", "A", {}, 7);
  b.Gauge("b_gauge", "B", {{"x", "2"}}, 2.5);
  REQUIRE(b.status().ok());
  CHECK(b.samples() == 3);
  CHECK(b.Text() ==
        "# HELP b_gauge B\n# TYPE b_gauge gauge\nb_gauge{x=\"1\"} 1\nb_gauge{x=\"2\"} 2.5\n"
        "# HELP a_total A\n# TYPE a_total counter\na_total 7\n");
  CHECK(MetricsBuilder().Text().empty());
}

TEST_CASE("bad metric or label names, type clashes and repeated series are left out and reported",
          "[metrics]") {
  struct Case {
    std::string what;
    std::function<void(MetricsBuilder&)> add;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"metric name with a dash", [](MetricsBuilder& b) { b.Gauge("bad-name", "h", {}, 1); },
       "metric name 'bad-name'"},
      {"metric name starting with a digit",
       [](MetricsBuilder& b) { b.Gauge("1abc", "h", {}, 1); }, "metric name '1abc'"},
      {"label name with a colon",
       [](MetricsBuilder& b) { b.Gauge("ok", "h", {{"a:b", "v"}}, 1); }, "label name 'a:b'"},
      {"reserved label name",
       [](MetricsBuilder& b) { b.Gauge("ok", "h", {{"__name__", "v"}}, 1); },
       "label name '__name__'"},
      {"label given twice",
       [](MetricsBuilder& b) { b.Gauge("ok", "h", {{"a", "1"}, {"a", "2"}}, 1); },
       "label 'a' given twice"},
      {"counter and gauge of one name",
       [](MetricsBuilder& b) {
         b.Gauge("ok", "h", {{"a", "1"}}, 1);
         b.Counter("ok", "h", {{"a", "2"}}, 1);
       },
       "both as a counter and as a gauge"},
      {"two help texts",
       [](MetricsBuilder& b) {
         b.Gauge("ok", "h", {{"a", "1"}}, 1);
         b.Gauge("ok", "other", {{"a", "2"}}, 1);
       },
       "two help texts"},
      {"same series twice, labels reordered",
       [](MetricsBuilder& b) {
         b.Gauge("ok", "h", {{"a", "1"}, {"b", "2"}}, 1);
         b.Gauge("ok", "h", {{"b", "2"}, {"a", "1"}}, 2);
       },
       "the same label set is given twice"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    MetricsBuilder b;
    c.add(b);
    b.Gauge("good", "still here", {}, 5);
    CHECK(b.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(b.status().message()), Contains(c.message));
    Exposition e = Parse(b.Text());
    CHECK(e.error.empty());
    bool good = false;
    for (const ParsedSample& s : e.samples) good |= s.name == "good" && s.value == 5;
    CHECK(good);
    CHECK(!absl::StrContains(b.Text(), "bad-name"));
  }
}

TEST_CASE("label values that are not UTF-8 get U+FFFD per bad byte", "[metrics]") {
  MetricsBuilder b;
  b.Gauge("m", "h", {{"v", std::string("a\xff" "b\xc3(\xe2\x82\xac", 8)}}, 1);
  REQUIRE(b.status().ok());
  CHECK(b.Text() == "# HELP m h\n# TYPE m gauge\nm{v=\"a\xEF\xBF\xBD" "b\xEF\xBF\xBD(\xE2\x82\xAC\"} 1\n");
}

TEST_CASE("metric and label name rules follow the format", "[metrics]") {
  CHECK(IsValidMetricName("mailrepl_store_lsn"));
  CHECK(IsValidMetricName("a:b_c9"));
  CHECK(IsValidMetricName("_x"));
  CHECK_FALSE(IsValidMetricName(""));
  CHECK_FALSE(IsValidMetricName("9a"));
  CHECK_FALSE(IsValidMetricName("a b"));
  CHECK(IsValidLabelName("slot"));
  CHECK(IsValidLabelName("_x1"));
  CHECK_FALSE(IsValidLabelName("__x"));
  CHECK_FALSE(IsValidLabelName("a:b"));
  CHECK_FALSE(IsValidLabelName("1a"));
}

}  // namespace
}  // namespace mailrepl::metrics
