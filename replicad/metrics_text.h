// File: replicad/metrics_text.h
//
// MetricsBuilder: collects counters and gauges at scrape time and renders
// them in the Prometheus text exposition format, version 0.0.4
// (docs/operations.md "Metrics"). Samples of one family (same name) are
// grouped under a single # HELP / # TYPE header, in the order the families
// were first seen. Label values are escaped (backslash, double quote,
// newline) by prometheus-cpp's TextSerializer; HELP text is escaped here.
//
// Mistakes never break a scrape: a sample with a bad metric or label name,
// a family redeclared with another type or help, or a series given twice is
// left out of Text(), and status() names the first such mistake (replicad
// logs it). Label values that are not valid UTF-8 get U+FFFD for each bad
// byte (the format requires UTF-8).
//
// Thread-compatible: build one per scrape, on one thread.
//
// Example:
//   MetricsBuilder b;
//   b.Gauge("mailrepl_store_lsn", "Last LSN of the slot",
//           {{"store", "1"}, {"slot", "3"}, {"role", "master"}}, 123);
//   b.Counter("mailrepl_api_calls_total", "Client API calls", {{"slot", "3"}}, 42);
//   std::string text = b.Text();
#ifndef MAILREPL_REPLICAD_METRICS_TEXT_H_
#define MAILREPL_REPLICAD_METRICS_TEXT_H_

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace mailrepl::metrics {

// The content type of Text(), for the HTTP response.
inline constexpr char kTextContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// Label name -> value, in the order they are to be printed.
using Labels = std::vector<std::pair<std::string, std::string>>;

class MetricsBuilder {
 public:
  MetricsBuilder();
  ~MetricsBuilder();
  MetricsBuilder(const MetricsBuilder&) = delete;
  MetricsBuilder& operator=(const MetricsBuilder&) = delete;

  // A monotonically increasing count since the process started. By
  // Prometheus convention its name ends in "_total".
  void Counter(absl::string_view name, absl::string_view help, const Labels& labels,
               double value);
  // A value that goes up and down (an LSN, a lag, a 0/1 state).
  void Gauge(absl::string_view name, absl::string_view help, const Labels& labels,
             double value);

  // The exposition text of every accepted sample ("" if none).
  std::string Text() const;
  // OK, or kInvalidArgument naming the first sample that was left out.
  const absl::Status& status() const { return status_; }
  // Samples accepted so far.
  size_t samples() const { return samples_; }

 private:
  enum class Type { kCounter, kGauge };
  struct Sample {
    Labels labels;
    double value = 0;
  };
  struct Family {
    std::string name;
    std::string help;
    Type type = Type::kGauge;
    std::vector<Sample> samples;
    absl::flat_hash_set<std::string> series;  // canonical label sets seen
  };

  void Add(Type type, absl::string_view name, absl::string_view help, const Labels& labels,
           double value);
  void Fail(std::string message);

  std::vector<Family> families_;
  absl::flat_hash_map<std::string, size_t> by_name_;  // name -> index in families_
  absl::Status status_;
  size_t samples_ = 0;
};

// Exposed for tests: the format's name rules.
bool IsValidMetricName(absl::string_view name);  // [a-zA-Z_:][a-zA-Z0-9_:]*
bool IsValidLabelName(absl::string_view name);   // [a-zA-Z_][a-zA-Z0-9_]*, not "__..."

}  // namespace mailrepl::metrics

#endif  // MAILREPL_REPLICAD_METRICS_TEXT_H_
