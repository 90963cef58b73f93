// Minimal JSON output for mailctl's --json modes (the project has no JSON
// library dependency). Only writing is supported: strings are escaped per
// RFC 8259, and bytes that are not valid UTF-8 become U+FFFD so the output is
// always valid JSON. Thread-safe: value types and pure functions.
//
// Example:
//   JsonObject o;
//   o.Str("name", mb.name).Num("uidvalidity", mb.uidvalidity);
//   std::string line = o.Close();  // {"name":"user/alice","uidvalidity":17}
#ifndef MAILREPL_TOOLS_MAILCTL_JSON_H_
#define MAILREPL_TOOLS_MAILCTL_JSON_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace mailrepl {

// Appends s as a JSON string literal, quotes included.
void AppendJsonString(std::string* out, absl::string_view s);
std::string JsonString(absl::string_view s);

// ["a","b"] from plain strings.
std::string JsonStringArray(const std::vector<std::string>& values);
// [v1,v2] from values that are already JSON.
std::string JsonArray(const std::vector<std::string>& encoded_values);

// Builds one JSON object, keys in insertion order. Distinct method names
// (no overloads) so a string literal can never turn into a bool.
class JsonObject {
 public:
  JsonObject& Str(absl::string_view key, absl::string_view value);
  JsonObject& Num(absl::string_view key, uint64_t value);
  JsonObject& Int(absl::string_view key, int64_t value);
  JsonObject& Bool(absl::string_view key, bool value);
  // value must already be valid JSON (an array, an object, a number...).
  JsonObject& Raw(absl::string_view key, absl::string_view value);
  // The object text, "{...}".
  std::string Close() const;

 private:
  void Key(absl::string_view key);
  std::string body_;
};

}  // namespace mailrepl

#endif  // MAILREPL_TOOLS_MAILCTL_JSON_H_
