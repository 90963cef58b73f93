#include "tools/workload.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <numbers>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mailrepl {
namespace {

constexpr double kMedianSize = 8192.0;
constexpr double kSigma = 1.0;
constexpr size_t kCorpusBytes = 512 * 1024;
constexpr size_t kMaxCorpusLine = 76;
constexpr int64_t kEpoch = 1700000000;  // Date of message 0: 2023-11-14.

constexpr std::string_view kWords[] = {
    "the",     "of",      "and",      "to",       "in",         "is",
    "was",     "that",    "for",      "on",       "are",        "with",
    "as",      "by",      "at",       "be",       "this",       "from",
    "or",      "have",    "an",       "they",     "which",      "one",
    "you",     "were",    "all",      "we",       "there",      "would",
    "their",   "will",    "when",     "who",      "been",       "has",
    "more",    "if",      "no",       "out",      "so",         "what",
    "up",      "its",     "about",    "into",     "than",       "them",
    "can",     "only",    "other",    "new",      "some",       "time",
    "could",   "these",   "two",      "may",      "then",       "do",
    "first",   "any",     "now",      "such",     "like",       "our",
    "over",    "even",    "most",     "made",     "after",      "also",
    "many",    "before",  "must",     "through",  "back",       "years",
    "where",   "much",    "your",     "way",      "well",       "down",
    "should",  "because", "each",     "just",     "those",      "people",
    "mail",    "server",  "replica",  "primary",  "slot",       "append",
    "log",     "stream",  "mailbox",  "message",  "index",      "journal",
    "commit",  "offset",  "checksum", "latency",  "throughput", "backup",
    "quota",   "folder",  "header",   "body",     "delivery",   "protocol",
    "network", "storage", "cluster",  "failover", "sync",       "engine",
};
constexpr uint64_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);

constexpr std::string_view kDays[] = {"Sun", "Mon", "Tue", "Wed",
                                      "Thu", "Fri", "Sat"};
constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr",
                                        "May", "Jun", "Jul", "Aug",
                                        "Sep", "Oct", "Nov", "Dec"};

// Uniform in [0, n), n > 0, by rejection: independent of the standard
// library's (implementation-defined) distributions.
uint64_t UniformInt(std::mt19937_64& rng, uint64_t n) {
  const uint64_t threshold = (0 - n) % n;  // 2^64 mod n
  for (;;) {
    uint64_t x = rng();
    if (x >= threshold) return x % n;
  }
}

// Standard normal variate by Box-Muller (cosine branch) from two raw outputs.
double Normal(std::mt19937_64& rng) {
  constexpr double kTwoPow53 = 9007199254740992.0;
  // 53-bit uniforms: u1 in (0, 1] so that log(u1) is finite, u2 in [0, 1).
  const double u1 = static_cast<double>((rng() >> 11) + 1) / kTwoPow53;
  const double u2 = static_cast<double>(rng() >> 11) / kTwoPow53;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

std::vector<std::string> BuildCorpus(uint64_t seed) {
  std::mt19937_64 rng(seed * 7919 + 1);
  std::vector<std::string> lines;
  size_t total = 0;
  while (total < kCorpusBytes) {
    const uint64_t n = 6 + UniformInt(rng, 7);  // 6..12 words
    std::string line;
    for (uint64_t w = 0; w < n; ++w) {
      if (w > 0) line += ' ';
      line += kWords[UniformInt(rng, kNumWords)];
    }
    if (line.size() > kMaxCorpusLine) line.resize(kMaxCorpusLine);
    absl::StripTrailingAsciiWhitespace(&line);
    total += line.size() + 2;
    lines.push_back(std::move(line));
  }
  return lines;
}

// RFC 5322 date-time in UTC, e.g. "Tue, 14 Nov 2023 22:13:20 +0000".
std::string Rfc5322Date(int64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  gmtime_r(&t, &tm);
  return absl::StrFormat("%s, %02d %s %04d %02d:%02d:%02d +0000",
                         kDays[tm.tm_wday], tm.tm_mday, kMonths[tm.tm_mon],
                         tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

// Appends one body line `text` padded with 'x' (after trailing spaces are
// dropped) or cut to exactly `len` chars, then CRLF.
void AppendLine(std::string_view text, size_t len, std::string* out) {
  text = text.substr(0, len);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  out->append(text);
  out->append(len - text.size(), 'x');
  out->append("\r\n");
}

}  // namespace

std::string Workload::OptionsError(const WorkloadOptions& options) {
  if (options.users < 1) {
    return absl::StrCat("users must be >= 1, got ", options.users);
  }
  const std::string& d = options.domain;
  if (d.empty() || d.size() > 253) {
    return absl::StrCat("domain must be 1..253 characters, got ", d.size());
  }
  for (char c : d) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '-') {
      return absl::StrCat("domain may only contain [A-Za-z0-9.-]: \"", d, "\"");
    }
  }
  return "";
}

Workload::Workload(WorkloadOptions options)
    : options_(std::move(options)), rng_(options_.seed) {
  if (std::string error = OptionsError(options_); !error.empty()) {
    std::fprintf(stderr, "mailrepl::Workload: %s\n", error.c_str());
    std::abort();
  }
  corpus_ = BuildCorpus(options_.seed);
}

const Workload::PlanEntry& Workload::Plan(uint64_t index) {
  const double mu = std::log(kMedianSize);
  while (plan_.size() <= index) {
    // Draw order (user, size, offset) is part of the definition.
    PlanEntry e;
    e.user = static_cast<uint32_t>(UniformInt(rng_, options_.users));
    double size = std::round(std::exp(mu + kSigma * Normal(rng_)));
    size = std::clamp(size, static_cast<double>(kMinSize),
                      static_cast<double>(kMaxSize));
    e.size = static_cast<uint32_t>(size);
    e.corpus_line = static_cast<uint32_t>(UniformInt(rng_, corpus_.size()));
    plan_.push_back(e);
  }
  return plan_[index];
}

uint64_t Workload::Size(uint64_t index) { return Plan(index).size; }

int Workload::User(uint64_t index) { return Plan(index).user; }

WorkloadMessage Workload::Message(uint64_t index) {
  const PlanEntry e = Plan(index);
  WorkloadMessage m;
  m.index = index;
  m.user = absl::StrCat("user", e.user);
  m.rcpt = absl::StrCat(m.user, "@", options_.domain);
  m.message_id =
      absl::StrCat("<wl", options_.seed, ".", index, "@bench.invalid>");

  const uint64_t sender = index % 997;
  std::string& out = m.bytes;
  out.reserve(e.size);
  absl::StrAppend(&out, "From: Sender ", sender, " <sender", sender,
                  "@bench.invalid>\r\n", "To: ", m.rcpt, "\r\n",
                  "Subject: bench message ", index, " (seed ", options_.seed,
                  ")\r\n", "Date: ", Rfc5322Date(kEpoch + index), "\r\n");
  absl::StrAppend(&out, "Message-ID: ", m.message_id, "\r\n",
                  "MIME-Version: 1.0\r\n",
                  "Content-Type: text/plain; charset=us-ascii\r\n",
                  "Content-Transfer-Encoding: 7bit\r\n",
                  "X-Bench-Index: ", index, "\r\n", "\r\n");
  absl::StrAppend(&out, "message ", index, " for ", m.user, "\r\n");

  // With a domain of at most 253 chars the header and first line take well
  // under 1 KiB (kMinSize), so at least 3 bytes remain: enough for one more
  // non-empty line. Invariant of the loop: remaining is 0 or >= 3.
  size_t remaining = e.size - out.size();
  for (uint64_t k = e.corpus_line; remaining > 0; ++k) {
    const std::string& line = corpus_[k % corpus_.size()];
    const size_t full = line.size() + 2;
    if (remaining == full || remaining >= full + 3) {
      AppendLine(line, line.size(), &out);
      remaining -= full;
    } else {  // Last line: cut or pad to fit exactly (at most 78 chars).
      AppendLine(line, remaining - 2, &out);
      remaining = 0;
    }
  }
  return m;
}

}  // namespace mailrepl
