// Command-line parsing for mailctl: the global options, the command word,
// the command's own options and its positional arguments; plus the value
// syntaxes the commands share (numbers, UID sets, flag lists), and the
// marking of errors that mean "could not run" (exit status 2) rather than
// "the command failed" (exit status 1).
// Thread-safe: pure functions and value types.
#ifndef MAILREPL_TOOLS_MAILCTL_ARGS_H_
#define MAILREPL_TOOLS_MAILCTL_ARGS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mailrepl {

// One option a command accepts: "--json" (a switch) or "--from" (takes a
// value, given as "--from 5" or "--from=5").
struct OptionSpec {
  std::string name;
  bool takes_value = false;
};

struct CommandLine {
  // Global options (accepted anywhere on the line).
  std::string slot;
  std::string meta;   // "" means SLOT/meta
  std::string spool;  // "" means SLOT/spool
  std::optional<uint64_t> max_message_bytes;
  std::optional<uint64_t> segment_bytes;
  bool verbose = false;
  bool help = false;

  std::string command;  // "" when none was given
  std::vector<std::string> positional;
  std::map<std::string, std::string>
      options;  // "--json" -> "", "--from" -> "5"

  bool Has(const std::string& option) const { return options.contains(option); }
  // The option's value, or nullptr when it was not given.
  const std::string* Get(const std::string& option) const;
};

// The options of a command, or nullptr if there is no such command.
using OptionLookup =
    std::function<const std::vector<OptionSpec>*(const std::string& command)>;

// Parses argv. Errors are usage errors (see IsCannotRun); an unknown command
// word is kNotFound, to be refused whatever else is on the line (--help
// included). "--" ends the options; "-" is a positional argument (stdin).
absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv,
                                             const OptionLookup& lookup);

// --- errors with exit status 2 ---

// Marks s as "could not run" (bad usage, slot cannot be opened): exit 2.
absl::Status CannotRun(absl::Status s);
bool IsCannotRun(const absl::Status& s);
// CannotRun(InvalidArgumentError(message)).
absl::Status UsageError(absl::string_view message);
// What mailctl reports when Slot::Open refuses a slot with kUnavailable
// (another process has it open), in place of the store's own advice: what
// to do instead. Exit status 2.
absl::Status SlotInUseError();

// --- value syntaxes; errors are usage errors naming `what` ---

absl::StatusOr<uint64_t> ParseUint64(absl::string_view what,
                                     absl::string_view text);
absl::StatusOr<int64_t> ParseInt64(absl::string_view what,
                                   absl::string_view text);

// A UID set such as "1,3,5-9": sorted, duplicates removed. UIDs are 1..2^32-1
// and a set may name at most kMaxUidSetSize UIDs.
inline constexpr uint64_t kMaxUidSetSize = 1'000'000;
absl::StatusOr<std::vector<uint32_t>> ParseUidSet(absl::string_view text);
std::string FormatUidList(const std::vector<uint32_t>& uids);

// A comma-separated flag list such as "\Seen,$Label"; "" is the empty list.
// Rejects empty flags and characters IMAP does not allow in a flag (the rule
// Slot::SetFlags applies; Slot::Append does not check flags itself).
absl::StatusOr<std::vector<std::string>> ParseFlagList(absl::string_view text);

}  // namespace mailrepl

#endif  // MAILREPL_TOOLS_MAILCTL_ARGS_H_
