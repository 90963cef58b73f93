#include "replicad/metrics_text.h"

#include <algorithm>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace mailrepl::metrics {

namespace {

// prometheus-cpp 1.0.1 (Debian 12) writes HELP text verbatim, so a newline
// in it would end the line early. The format wants "\\" and "\n" escaped.
// (metrics_server_test checks that the result carries exactly one escape,
// so a library that starts escaping by itself is noticed.)
std::string EscapeHelp(absl::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// Copies s, replacing every byte that is not part of a well-formed UTF-8
// sequence (overlong forms, surrogates and code points above U+10FFFF
// included) with U+FFFD.
std::string ValidUtf8(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    bool good = len > 0 && i + len <= s.size();
    for (size_t k = 1; good && k < len; ++k) {
      const unsigned char b = static_cast<unsigned char>(s[i + k]);
      good = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    }
    if (good) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

// One string per label set, independent of label order.
std::string SeriesKey(const Labels& labels) {
  Labels sorted = labels;
  std::sort(sorted.begin(), sorted.end());
  std::string key;
  for (const auto& [name, value] : sorted) {
    absl::StrAppend(&key, name.size(), ":", name, value.size(), ":", value);
  }
  return key;
}

}  // namespace

bool IsValidMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = absl::ascii_isalpha(c) || c == '_' || c == ':' ||
                    (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return false;
  }
  return true;
}

bool IsValidLabelName(absl::string_view name) {
  if (name.empty() || absl::StartsWith(name, "__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = absl::ascii_isalpha(c) || c == '_' || (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return false;
  }
  return true;
}

MetricsBuilder::MetricsBuilder() = default;
MetricsBuilder::~MetricsBuilder() = default;

void MetricsBuilder::Counter(absl::string_view name, absl::string_view help,
                             const Labels& labels, double value) {
  Add(Type::kCounter, name, help, labels, value);
}

void MetricsBuilder::Gauge(absl::string_view name, absl::string_view help, const Labels& labels,
                           double value) {
  Add(Type::kGauge, name, help, labels, value);
}

void MetricsBuilder::Fail(std::string message) {
  if (status_.ok()) status_ = absl::InvalidArgumentError(std::move(message));
}

void MetricsBuilder::Add(Type type, absl::string_view name, absl::string_view help,
                         const Labels& labels, double value) {
  if (!IsValidMetricName(name)) {
    Fail(absl::StrCat("metric name '", name, "' is not valid: use [a-zA-Z_:][a-zA-Z0-9_:]*"));
    return;
  }
  absl::flat_hash_set<absl::string_view> label_names;
  for (const auto& [label, unused] : labels) {
    if (!IsValidLabelName(label)) {
      Fail(absl::StrCat("metric ", name, ": label name '", label,
                        "' is not valid: use [a-zA-Z_][a-zA-Z0-9_]*, not starting with __"));
      return;
    }
    if (!label_names.insert(label).second) {
      Fail(absl::StrCat("metric ", name, ": label '", label, "' given twice"));
      return;
    }
  }
  auto [it, inserted] = by_name_.try_emplace(std::string(name), families_.size());
  if (inserted) {
    families_.push_back({.name = std::string(name), .help = std::string(help), .type = type});
  }
  Family& family = families_[it->second];
  if (family.type != type) {
    Fail(absl::StrCat("metric ", name, " is declared both as a counter and as a gauge"));
    return;
  }
  if (family.help != help) {
    Fail(absl::StrCat("metric ", name, " is declared with two help texts: '", family.help,
                      "' and '", help, "'"));
    return;
  }
  Sample sample{.labels = {}, .value = value};
  sample.labels.reserve(labels.size());
  for (const auto& [label, text] : labels) sample.labels.emplace_back(label, ValidUtf8(text));
  if (!family.series.insert(SeriesKey(sample.labels)).second) {
    Fail(absl::StrCat("metric ", name, ": the same label set is given twice"));
    return;
  }
  family.samples.push_back(std::move(sample));
  ++samples_;
}

std::string MetricsBuilder::Text() const {
  std::vector<prometheus::MetricFamily> out;
  out.reserve(families_.size());
  for (const Family& family : families_) {
    if (family.samples.empty()) continue;
    prometheus::MetricFamily f;
    f.name = family.name;
    f.help = EscapeHelp(family.help);
    f.type = family.type == Type::kCounter ? prometheus::MetricType::Counter
                                           : prometheus::MetricType::Gauge;
    for (const Sample& s : family.samples) {
      prometheus::ClientMetric m;
      for (const auto& [label, value] : s.labels) m.label.push_back({label, value});
      if (family.type == Type::kCounter) {
        m.counter.value = s.value;
      } else {
        m.gauge.value = s.value;
      }
      f.metric.push_back(std::move(m));
    }
    out.push_back(std::move(f));
  }
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, out);
  return text.str();
}

}  // namespace mailrepl::metrics
