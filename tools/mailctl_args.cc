#include "tools/mailctl_args.h"

#include <algorithm>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace mailrepl {
namespace {

constexpr char kExitPayload[] = "type.mailrepl.dev/mailctl.exit";

struct GlobalOption {
  const char* name;
  bool takes_value;
};
constexpr GlobalOption kGlobalOptions[] = {
    {"--slot", true},          {"--meta", true},
    {"--spool", true},         {"--max-message-bytes", true},
    {"--segment-bytes", true}, {"-v", false},
    {"--verbose", false},      {"-h", false},
    {"--help", false},
};

const GlobalOption* FindGlobal(absl::string_view name) {
  for (const GlobalOption& g : kGlobalOptions) {
    if (name == g.name) return &g;
  }
  return nullptr;
}

const OptionSpec* FindOption(const std::vector<OptionSpec>* specs,
                             absl::string_view name) {
  if (specs == nullptr) return nullptr;
  for (const OptionSpec& s : *specs) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

absl::Status SetGlobal(CommandLine& cl, absl::string_view name,
                       const std::string& value) {
  if (name == "--slot") {
    cl.slot = value;
  } else if (name == "--meta") {
    cl.meta = value;
  } else if (name == "--spool") {
    cl.spool = value;
  } else if (name == "--max-message-bytes") {
    auto n = ParseUint64("--max-message-bytes", value);
    if (!n.ok()) return n.status();
    if (*n == 0) return UsageError("--max-message-bytes must be at least 1");
    cl.max_message_bytes = *n;
  } else if (name == "--segment-bytes") {
    auto n = ParseUint64("--segment-bytes", value);
    if (!n.ok()) return n.status();
    if (*n == 0) return UsageError("--segment-bytes must be at least 1");
    cl.segment_bytes = *n;
  } else if (name == "-v" || name == "--verbose") {
    cl.verbose = true;
  } else if (name == "-h" || name == "--help") {
    cl.help = true;
  }
  return absl::OkStatus();
}

}  // namespace

const std::string* CommandLine::Get(const std::string& option) const {
  auto it = options.find(option);
  return it == options.end() ? nullptr : &it->second;
}

absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv,
                                             const OptionLookup& lookup) {
  CommandLine cl;
  const std::vector<OptionSpec>* specs = nullptr;
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (options_done || arg == "-" || arg.size() < 2 || arg[0] != '-') {
      if (cl.command.empty()) {
        cl.command = arg;
        specs = lookup(arg);
        if (specs == nullptr) {
          return CannotRun(absl::NotFoundError(
              absl::StrCat("unknown command '", arg, "'; see mailctl --help")));
        }
      } else {
        cl.positional.push_back(arg);
      }
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    std::string name = arg;
    std::optional<std::string> inline_value;
    if (size_t eq = arg.find('=');
        eq != std::string::npos && arg.rfind("--", 0) == 0) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    bool takes_value;
    const GlobalOption* global = FindGlobal(name);
    const OptionSpec* option = global ? nullptr : FindOption(specs, name);
    if (global != nullptr) {
      takes_value = global->takes_value;
    } else if (option != nullptr) {
      takes_value = option->takes_value;
    } else if (cl.command.empty()) {
      return UsageError(
          absl::StrCat("unknown option '", name,
                       "' (command options go after the command)"));
    } else {
      return UsageError(
          absl::StrCat("unknown option '", name, "' for ", cl.command));
    }
    std::string value;
    if (takes_value) {
      if (inline_value) {
        value = *inline_value;
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return UsageError(absl::StrCat(name, " needs a value"));
      }
    } else if (inline_value) {
      return UsageError(absl::StrCat(name, " takes no value"));
    }
    if (global != nullptr) {
      absl::Status s = SetGlobal(cl, name, value);
      if (!s.ok()) return s;
    } else {
      if (cl.options.contains(name)) {
        return UsageError(absl::StrCat(name, " given more than once"));
      }
      cl.options[name] = value;
    }
  }
  return cl;
}

absl::Status CannotRun(absl::Status s) {
  if (!s.ok()) s.SetPayload(kExitPayload, absl::Cord("2"));
  return s;
}

bool IsCannotRun(const absl::Status& s) {
  return s.GetPayload(kExitPayload).has_value();
}

absl::Status UsageError(absl::string_view message) {
  return CannotRun(absl::InvalidArgumentError(message));
}

absl::Status SlotInUseError() {
  return CannotRun(absl::UnavailableError(
      "another process (replicad, or another mailctl) has it open; stop that "
      "process first, or read a live cluster's mail with the read-only "
      "'replctl mail ...' commands (list, messages, fetch, digest)"));
}

absl::StatusOr<uint64_t> ParseUint64(absl::string_view what,
                                     absl::string_view text) {
  uint64_t v;
  if (text.empty() || text[0] == '-' || text[0] == '+' ||
      !absl::SimpleAtoi(text, &v)) {
    return UsageError(
        absl::StrCat(what, ": '", text, "' is not a non-negative integer"));
  }
  return v;
}

absl::StatusOr<int64_t> ParseInt64(absl::string_view what,
                                   absl::string_view text) {
  int64_t v;
  if (text.empty() || text[0] == '+' || !absl::SimpleAtoi(text, &v)) {
    return UsageError(absl::StrCat(what, ": '", text, "' is not an integer"));
  }
  return v;
}

absl::StatusOr<std::vector<uint32_t>> ParseUidSet(absl::string_view text) {
  auto bad = [&](absl::string_view why) {
    return UsageError(
        absl::StrCat("UID set '", text, "': ", why,
                     " (expected UIDs and ranges such as 1,3,5-9)"));
  };
  auto uid = [&](absl::string_view s, uint32_t* out) {
    uint64_t v;
    if (s.empty() || s[0] == '-' || s[0] == '+' || !absl::SimpleAtoi(s, &v) ||
        v == 0 || v > UINT32_MAX) {
      return false;
    }
    *out = static_cast<uint32_t>(v);
    return true;
  };
  if (text.empty()) return bad("empty");
  std::vector<uint32_t> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    std::vector<absl::string_view> ends =
        absl::StrSplit(part, absl::MaxSplits('-', 1));
    uint32_t lo, hi;
    if (!uid(ends[0], &lo))
      return bad(absl::StrCat("'", part, "' is not a UID"));
    hi = lo;
    if (ends.size() == 2 && !uid(ends[1], &hi)) {
      return bad(absl::StrCat("'", part, "' is not a UID range"));
    }
    if (hi < lo) return bad(absl::StrCat("range '", part, "' runs backwards"));
    if (out.size() + (uint64_t{hi} - lo + 1) > kMaxUidSetSize) {
      return bad(absl::StrCat("more than ", kMaxUidSetSize, " UIDs"));
    }
    for (uint64_t u = lo; u <= hi; ++u) out.push_back(static_cast<uint32_t>(u));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string FormatUidList(const std::vector<uint32_t>& uids) {
  return absl::StrJoin(uids, ",");
}

absl::StatusOr<std::vector<std::string>> ParseFlagList(absl::string_view text) {
  std::vector<std::string> out;
  if (text.empty()) return out;
  for (absl::string_view f : absl::StrSplit(text, ',')) {
    if (f.empty()) {
      return UsageError(
          absl::StrCat("flag list '", text, "' has an empty flag"));
    }
    for (char c : f) {
      const unsigned char u = static_cast<unsigned char>(c);
      if (u <= 0x20 || u == 0x7F ||
          absl::string_view("()[]{}\"%*").find(c) != absl::string_view::npos) {
        return UsageError(
            absl::StrCat("flag '", absl::CHexEscape(f),
                         "' has a character IMAP does not allow in flags"));
      }
    }
    out.emplace_back(f);
  }
  return out;
}

}  // namespace mailrepl
