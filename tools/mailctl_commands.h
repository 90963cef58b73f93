// The commands of `mailctl`, the operator's tool for one slot, one function
// each. mailctl.cc parses the command line, opens the slot when the
// command's table entry asks for it, runs the command and maps the status it
// returns to the exit status: OK -> 0, IsCannotRun() -> 2 (usage errors, a
// slot that cannot be opened), any other error -> 1 (the command failed;
// the engine refused or damage was found). Commands write results to
// ctx.out and return errors rather than printing them; every error message
// names the mailbox or file and, where there is one, what to do.
//
// Thread-compatible: one command runs at a time on one CommandContext.
#ifndef MAILREPL_TOOLS_MAILCTL_COMMANDS_H_
#define MAILREPL_TOOLS_MAILCTL_COMMANDS_H_

#include <cstdio>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "store/slot.h"
#include "tools/mailctl_args.h"

namespace mailrepl {

struct CommandContext {
  SlotPaths paths;
  SlotOptions options;
  const CommandLine* args = nullptr;  // must outlive the command
  Slot* slot = nullptr;  // set when the command's table entry opens the slot
  std::FILE* out = stdout;
};

using CommandFn = absl::Status (*)(CommandContext& ctx);

// Writes text to ctx.out.
void Print(CommandContext& ctx, absl::string_view text);

// s with "what: " in front of its message and "; hint" after it (same code).
absl::Status Failed(const absl::Status& s, absl::string_view what,
                    absl::string_view hint = "");

// --- mail commands (mailctl_commands.cc); need ctx.slot ---
absl::Status RunCreate(CommandContext& ctx);
absl::Status RunRename(CommandContext& ctx);
absl::Status RunDelete(CommandContext& ctx);
absl::Status RunAppend(CommandContext& ctx);
absl::Status RunCopy(CommandContext& ctx);
absl::Status RunList(CommandContext& ctx);
absl::Status RunFetch(CommandContext& ctx);
absl::Status RunFlags(CommandContext& ctx);
absl::Status RunExpunge(CommandContext& ctx);
absl::Status RunQuota(CommandContext& ctx);

// --- slot administration (mailctl_admin.cc) ---
// Open the slot themselves, or work on a closed one:
absl::Status RunInit(CommandContext& ctx);
absl::Status RunVerify(CommandContext& ctx);
absl::Status RunDumpLog(CommandContext& ctx);
absl::Status RunReconstruct(CommandContext& ctx);
// Need ctx.slot:
absl::Status RunDigest(CommandContext& ctx);
absl::Status RunSnapshot(CommandContext& ctx);
absl::Status RunRetain(CommandContext& ctx);
absl::Status RunCheckpoint(CommandContext& ctx);

}  // namespace mailrepl

#endif  // MAILREPL_TOOLS_MAILCTL_COMMANDS_H_
