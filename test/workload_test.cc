#include "tools/workload.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"

namespace mailrepl {
namespace {

constexpr uint64_t kKiB = 1024;

// Splits a message into lines, without their CRLF. Requires CRLF endings.
std::vector<std::string_view> Lines(std::string_view bytes) {
  std::vector<std::string_view> lines;
  while (!bytes.empty()) {
    size_t end = bytes.find("\r\n");
    if (end == std::string_view::npos) break;
    lines.push_back(bytes.substr(0, end));
    bytes.remove_prefix(end + 2);
  }
  return lines;
}

// Header fields of a message, name -> value (last one wins).
std::map<std::string, std::string> Headers(std::string_view bytes) {
  std::map<std::string, std::string> headers;
  const std::string_view header = bytes.substr(0, bytes.find("\r\n\r\n") + 2);
  for (std::string_view line : Lines(header)) {
    size_t colon = line.find(": ");
    if (colon == std::string_view::npos) continue;
    headers[std::string(line.substr(0, colon))] =
        std::string(line.substr(colon + 2));
  }
  return headers;
}

// True for "Tue, 14 Nov 2023 22:13:20 +0000" (the form the workload uses).
bool IsRfc5322Date(std::string_view date) {
  // '0' stands for a digit, 'a' for a letter; other characters are literal.
  constexpr std::string_view kShape = "aaa, 00 aaa 0000 00:00:00 +0000";
  constexpr std::string_view kDays = "Mon Tue Wed Thu Fri Sat Sun";
  constexpr std::string_view kMonths =
      "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec";
  if (date.size() != kShape.size()) return false;
  for (size_t k = 0; k < kShape.size(); ++k) {
    const char want = kShape[k];
    const bool ok = want == '0'   ? absl::ascii_isdigit(date[k])
                    : want == 'a' ? absl::ascii_isalpha(date[k])
                                  : date[k] == want;
    if (!ok) return false;
  }
  return kDays.find(date.substr(0, 3)) % 4 == 0 &&
         kMonths.find(date.substr(8, 3)) % 4 == 0;
}

TEST_CASE("workload messages are byte-identical whatever range is generated",
          "[workload]") {
  std::vector<std::string> expected;
  Workload whole;
  for (uint64_t i = 0; i < 12000; ++i) {
    WorkloadMessage m = whole.Message(i);
    if (i >= 10000) expected.push_back(std::move(m.bytes));
  }

  Workload tail;
  for (uint64_t i = 10000; i < 12000; ++i) {
    REQUIRE(tail.Message(i).bytes == expected[i - 10000]);
  }

  Workload reversed;
  for (uint64_t i = 12000; i-- > 10000;) {
    REQUIRE(reversed.Message(i).bytes == expected[i - 10000]);
  }

  Workload sized_first;  // Size() and Message() share one plan.
  REQUIRE(sized_first.Size(11999) == expected.back().size());
  REQUIRE(sized_first.Message(10500).bytes == expected[500]);
}

TEST_CASE("the seed selects the workload", "[workload]") {
  Workload a({.seed = 7});
  Workload b({.seed = 7});
  Workload c({.seed = 8});
  int differ = 0;
  for (uint64_t i = 0; i < 50; ++i) {
    WorkloadMessage ma = a.Message(i);
    REQUIRE(ma.bytes == b.Message(i).bytes);
    REQUIRE(ma.message_id == absl::StrCat("<wl7.", i, "@bench.invalid>"));
    if (ma.bytes != c.Message(i).bytes) ++differ;
  }
  REQUIRE(differ == 50);
}

TEST_CASE("every message has exactly its planned size and a unique Message-ID",
          "[workload]") {
  Workload workload;
  std::set<std::string> ids;
  for (uint64_t i = 0; i < 10000; ++i) {
    const uint64_t planned = workload.Size(i);
    WorkloadMessage m = workload.Message(i);
    REQUIRE(m.index == i);
    REQUIRE(m.bytes.size() == planned);
    REQUIRE(m.message_id == absl::StrCat("<wl42.", i, "@bench.invalid>"));
    REQUIRE(m.bytes.find(absl::StrCat("\r\nMessage-ID: ", m.message_id,
                                      "\r\n")) != std::string::npos);
    REQUIRE(ids.insert(m.message_id).second);
  }
  REQUIRE(ids.size() == 10000);
}

TEST_CASE("sizes follow the lognormal definition", "[workload]") {
  Workload workload;
  std::vector<uint64_t> sizes;
  uint64_t total = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    sizes.push_back(workload.Size(i));
    total += sizes.back();
  }
  std::sort(sizes.begin(), sizes.end());
  const double median = static_cast<double>(sizes[sizes.size() / 2]);
  const double mean = static_cast<double>(total) / sizes.size();
  CHECK(median >= 7.5 * kKiB);
  CHECK(median <= 8.9 * kKiB);
  CHECK(mean >= 12.0 * kKiB);
  CHECK(mean <= 15.0 * kKiB);
  CHECK(sizes.front() >= 1024);
  CHECK(sizes.back() <= 262144);
  // Clipping: about 1.9% of lognormal draws fall under 1 KiB.
  const auto clipped = std::count(sizes.begin(), sizes.end(), 1024);
  CHECK(clipped > 100);
  CHECK(clipped < 300);
}

TEST_CASE("messages are valid RFC 5322 with CRLF line endings", "[workload]") {
  Workload workload;
  for (uint64_t i = 0; i < 3000; ++i) {
    const WorkloadMessage m = workload.Message(i);
    const std::string& b = m.bytes;
    INFO("message " << i);
    const size_t separator = b.find("\r\n\r\n");
    REQUIRE(separator != std::string::npos);
    REQUIRE(b.ends_with("\r\n"));
    int bare_lf = 0, bare_cr = 0, not_printable = 0;
    for (size_t k = 0; k < b.size(); ++k) {
      const unsigned char c = b[k];
      if (c == '\n' && (k == 0 || b[k - 1] != '\r')) ++bare_lf;
      if (c == '\r' && (k + 1 == b.size() || b[k + 1] != '\n')) ++bare_cr;
      if (c != '\r' && c != '\n' && (c < 32 || c >= 127)) ++not_printable;
    }
    REQUIRE(bare_lf == 0);
    REQUIRE(bare_cr == 0);
    REQUIRE(not_printable == 0);
    for (std::string_view line : Lines(b)) REQUIRE(line.size() <= 998);
    const std::string_view body = std::string_view(b).substr(separator + 4);
    for (std::string_view line : Lines(body)) {
      REQUIRE(!line.empty());
      REQUIRE(line.size() <= 78);
    }

    const auto headers = Headers(b);
    REQUIRE(headers.at("From").ends_with("@bench.invalid>"));
    REQUIRE(headers.at("To") == m.rcpt);
    REQUIRE(headers.at("Subject") ==
            absl::StrCat("bench message ", i, " (seed 42)"));
    REQUIRE(IsRfc5322Date(headers.at("Date")));
    REQUIRE(headers.at("Message-ID") == m.message_id);
    REQUIRE(headers.at("MIME-Version") == "1.0");
    REQUIRE(headers.at("Content-Type") == "text/plain; charset=us-ascii");
    REQUIRE(headers.at("X-Bench-Index") == absl::StrCat(i));
  }
}

TEST_CASE("dates are derived from the index, not the clock", "[workload]") {
  CHECK(!IsRfc5322Date("Tue, 14 Nov 2023 22:13:20 GMT"));
  CHECK(!IsRfc5322Date("Tux, 14 Nov 2023 22:13:20 +0000"));
  Workload workload;
  CHECK(Headers(workload.Message(0).bytes).at("Date") ==
        "Tue, 14 Nov 2023 22:13:20 +0000");
  CHECK(Headers(workload.Message(86400).bytes).at("Date") ==
        "Wed, 15 Nov 2023 22:13:20 +0000");
}

TEST_CASE("users are drawn uniformly", "[workload]") {
  Workload workload;
  std::vector<int> per_user(100, 0);
  for (uint64_t i = 0; i < 10000; ++i) {
    const int user = workload.User(i);
    REQUIRE(user >= 0);
    REQUIRE(user < 100);
    ++per_user[user];
  }
  for (int u = 0; u < 100; ++u) {
    INFO("user" << u);
    CHECK(per_user[u] >= 50);
    CHECK(per_user[u] <= 160);
  }
  const WorkloadMessage m = workload.Message(17);
  CHECK(m.user == absl::StrCat("user", workload.User(17)));
  CHECK(m.rcpt == absl::StrCat(m.user, "@example.test"));
}

TEST_CASE("messages keep their exact size with extreme options", "[workload]") {
  WorkloadOptions options;
  options.seed = std::numeric_limits<uint64_t>::max();
  options.users = std::numeric_limits<int>::max();
  options.domain = std::string(253, 'd');
  REQUIRE(Workload::OptionsError(options).empty());
  Workload workload(options);
  bool saw_min = false;
  for (uint64_t i = 0; i < 2000; ++i) {
    const WorkloadMessage m = workload.Message(i);
    REQUIRE(m.bytes.size() == workload.Size(i));
    REQUIRE(m.rcpt == absl::StrCat(m.user, "@", options.domain));
    if (m.bytes.size() == Workload::kMinSize) saw_min = true;
  }
  CHECK(saw_min);
}

TEST_CASE("invalid options are reported", "[workload]") {
  CHECK(Workload::OptionsError({}).empty());
  CHECK(!Workload::OptionsError({.users = 0}).empty());
  CHECK(!Workload::OptionsError({.domain = ""}).empty());
  CHECK(!Workload::OptionsError({.domain = "a b"}).empty());
  CHECK(!Workload::OptionsError({.domain = "a\r\nBcc: x"}).empty());
  CHECK(!Workload::OptionsError({.domain = std::string(254, 'd')}).empty());
}

}  // namespace
}  // namespace mailrepl
