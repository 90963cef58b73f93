#include "coordinator/netstring.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace mailrepl::coord {

namespace {

constexpr size_t kMaxDigits = 9;

NetstringParse Bad(std::string error) {
  NetstringParse p;
  p.result = NetstringResult::kBad;
  p.error = std::move(error);
  return p;
}

}  // namespace

NetstringParse ParseNetstring(absl::string_view input, size_t max_length) {
  size_t length = 0;
  size_t i = 0;
  for (; i < input.size() && input[i] >= '0' && input[i] <= '9'; ++i) {
    if (i == kMaxDigits)
      return Bad(absl::StrCat("netstring length has more than ", kMaxDigits, " digits"));
    length = length * 10 + static_cast<size_t>(input[i] - '0');
    if (length > max_length) {
      return Bad(absl::StrCat("netstring longer than ", max_length, " bytes"));
    }
  }
  if (i == input.size()) return {};  // digits so far (or nothing): need more
  if (input[i] != ':' || i == 0) {
    return Bad(absl::StrCat("not a netstring: expected LEN:DATA, and got '",
                            absl::CEscape(input.substr(0, std::min<size_t>(input.size(), 16))),
                            "'"));
  }
  const size_t data = i + 1;
  if (input.size() < data + length + 1) return {};
  if (input[data + length] != ',') {
    return Bad(absl::StrCat("netstring of length ", length, " does not end with ','"));
  }
  NetstringParse p;
  p.result = NetstringResult::kGood;
  p.payload = input.substr(data, length);
  p.consumed = data + length + 1;
  return p;
}

std::string EncodeNetstring(absl::string_view data) {
  return absl::StrCat(data.size(), ":", data, ",");
}

}  // namespace mailrepl::coord
