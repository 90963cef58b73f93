#include "store/mailbox_name.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace mailrepl {

absl::Status ValidateFlag(absl::string_view flag) {
  bool ok = !flag.empty() && flag.size() <= 100;
  for (char c : flag) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || absl::string_view("()[]{}\"%*").find(c) != absl::string_view::npos) {
      ok = false;
    }
  }
  if (!ok) return absl::InvalidArgumentError(absl::StrCat("invalid flag '", flag, "'"));
  return absl::OkStatus();
}

absl::Status ValidateUserName(absl::string_view user) {
  if (user.empty()) return absl::InvalidArgumentError("user name is empty");
  if (user.size() > 64) {
    return absl::InvalidArgumentError(absl::StrCat("user name '", user, "' is over 64 bytes"));
  }
  if (user == "." || user == "..") {
    return absl::InvalidArgumentError(absl::StrCat("user name '", user, "' is not allowed"));
  }
  for (char c : user) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_' || c == '@';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("user name '", user, "' has a character other than letters, digits, '.-_@'"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateMailboxName(absl::string_view name) {
  auto bad = [&](absl::string_view why) {
    // At most 80 bytes of the name, cut between UTF-8 characters, not
    // through one: the message must stay UTF-8 to travel in a proto3 string
    // (the client API's Reply), or the client cannot parse the refusal.
    size_t cut = std::min<size_t>(name.size(), 80);
    for (int back = 0; back < 3 && cut > 0 && cut < name.size() &&
                       (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80;
         ++back) {
      --cut;
    }
    std::string shown;
    for (char c : name.substr(0, cut)) {
      unsigned char u = static_cast<unsigned char>(c);
      if (u < 0x20 || u == 0x7f) {
        absl::StrAppend(&shown, "\\x", absl::Hex(u, absl::kZeroPad2));
      } else {
        shown.push_back(c);
      }
    }
    return absl::InvalidArgumentError(absl::StrCat("invalid mailbox name '", shown, "': ", why));
  };
  if (name.empty()) return bad("empty");
  if (name.size() > kMaxMailboxNameBytes) return bad("over 490 bytes");
  if (name.front() == '/') return bad("absolute path (leading '/')");
  if (name.back() == '/') return bad("trailing '/'");
  for (char c : name) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return bad("control character");
  }
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  for (absl::string_view p : parts) {
    if (p.empty()) return bad("empty component ('//')");
    if (p == "." || p == "..") return bad("'.' or '..' component");
  }
  if (parts.size() < 2 || parts[0] != "user") return bad("must be user/NAME[/Folder...]");
  if (!ValidateUserName(parts[1]).ok()) return bad("the user part is not a valid user name");
  return absl::OkStatus();
}

std::string MailboxOwner(absl::string_view name) {
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  return parts.size() >= 2 ? std::string(parts[1]) : std::string();
}

std::string InboxName(absl::string_view user) { return absl::StrCat("user/", user); }

bool IsSameOrBelow(absl::string_view name, absl::string_view parent) {
  if (name == parent) return true;
  return name.size() > parent.size() && name.substr(0, parent.size()) == parent &&
         name[parent.size()] == '/';
}

}  // namespace mailrepl
