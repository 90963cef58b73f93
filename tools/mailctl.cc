// mailctl: the operator's tool for one slot (one copy of one store): create
// it, look at and change its mail, check it, dump its change log, rebuild
// its index, snapshot it. Run it while no other process has the slot open.
// The commands live in mailctl_commands.cc and mailctl_admin.cc; this file
// holds the command table, the help texts and the exit status policy.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "store/slot.h"
#include "tools/mailctl_args.h"
#include "tools/mailctl_commands.h"

namespace mailrepl {
namespace {

struct CommandSpec {
  const char* name;
  const char* synopsis;  // what follows "mailctl --slot DIR "
  const char* description;
  size_t min_args;
  size_t max_args;
  std::vector<OptionSpec> options;
  bool opens_slot;  // the slot is opened before the command runs
  CommandFn run;
};

// One entry per command reads better than one field per line.
// clang-format off
const std::vector<CommandSpec>& Commands() {
  static const auto* kCommands = new std::vector<CommandSpec>{
      {"init", "init --store-id N --slot-id N [--cluster-id ID]",
       "Creates a new, empty slot in the --slot directory (and --meta,\n"
       "--spool) and prints its identity. The cluster id defaults to\n"
       "\"local\". Refuses a directory that already holds a slot.",
       0, 0,
       {{"--store-id", true}, {"--slot-id", true}, {"--cluster-id", true}},
       false, RunInit},
      {"create", "create MAILBOX",
       "Creates a mailbox, e.g. user/alice (an INBOX) or\n"
       "user/alice/Sent.",
       1, 1, {}, true, RunCreate},
      {"rename", "rename OLD NEW",
       "Renames a mailbox and every mailbox below it; ids, UIDs and\n"
       "UIDVALIDITY are kept.",
       2, 2, {}, true, RunRename},
      {"delete", "delete MAILBOX",
       "Deletes a mailbox and its messages. Refuses a mailbox that has\n"
       "children.",
       1, 1, {}, true, RunDelete},
      {"append", "append MAILBOX [FILE] [--flags LIST] [--date UNIXSECONDS]",
       "Appends the message in FILE (or stdin, also as '-') to MAILBOX\n"
       "and prints uid=<N> guid=<40 hex digits> lsn=<N>. --flags takes a\n"
       "comma-separated list such as '\\Seen,$Label'; --date sets the\n"
       "internal date (default: now). Invalid mailbox names, oversized\n"
       "messages and over-quota appends fail and change nothing.",
       1, 2, {{"--flags", true}, {"--date", true}}, true, RunAppend},
      {"copy", "copy FROM UIDS TO",
       "Copies messages (UIDS like 1,3,5-9) from mailbox FROM to mailbox\n"
       "TO, sharing their bodies, and prints the new UIDs.",
       3, 3, {}, true, RunCopy},
      {"list", "list [MAILBOX] [--expunged] [--json]",
       "Without MAILBOX: every mailbox (name, id, UIDVALIDITY, last UID,\n"
       "highest MODSEQ, messages, bytes). With MAILBOX: its messages\n"
       "(UID, GUID, size, internal date, MODSEQ, flags); --expunged\n"
       "includes expunged ones. --json prints one JSON object.",
       0, 1, {{"--json", false}, {"--expunged", false}}, true, RunList},
      {"fetch", "fetch MAILBOX UID",
       "Writes the message's exact bytes to stdout.",
       2, 2, {}, true, RunFetch},
      {"flags", "flags MAILBOX UIDS (--set|--add|--remove) LIST",
       "Changes the flags of messages (UIDS like 1,3,5-9). LIST is\n"
       "comma-separated, e.g. '\\Seen,\\Flagged'; --set '' clears all\n"
       "flags.",
       2, 2,
       {{"--set", true}, {"--add", true}, {"--remove", true}},
       true, RunFlags},
      {"expunge", "expunge MAILBOX UIDS",
       "Expunges messages (UIDS like 1,3,5-9); they stay listed with\n"
       "list --expunged.",
       2, 2, {}, true, RunExpunge},
      {"quota", "quota USER [--storage BYTES] [--messages N]",
       "Without limits: shows the user's usage and limits. With\n"
       "--storage and/or --messages: sets those limits (0 = unlimited; a\n"
       "limit not given is kept).",
       1, 1, {{"--storage", true}, {"--messages", true}}, true, RunQuota},
      {"verify", "verify",
       "Checks every log record, every body against its GUID and size,\n"
       "and that the index equals the state rebuilt from the log. Prints\n"
       "counts and each problem. Exit status 0: clean; 1: damage found\n"
       "(including a log too damaged to open); 2: the check could not\n"
       "run.",
       0, 0, {}, false, RunVerify},
      {"digest", "digest [--json]",
       "Prints the slot digest, last LSN, epoch, log start, each\n"
       "mailbox's digest and id, and quarantined mailboxes: two slots\n"
       "holding the same state print the same digests.",
       0, 0, {{"--json", false}}, true, RunDigest},
      {"dump-log", "dump-log [--from LSN] [--json]",
       "Prints one line per change-log record (LSN, epoch, type and a\n"
       "summary of the payload), then the epoch history. Does not open\n"
       "the slot, so it also works on a damaged one; exits 1 if it meets\n"
       "damage. --json prints JSON lines.",
       0, 0, {{"--from", true}, {"--json", false}}, false, RunDumpLog},
      {"reconstruct", "reconstruct",
       "Rebuilds the index (META/index.sqlite3) from the change log,\n"
       "base snapshot and spool, records the repair in the log, and\n"
       "prints the records replayed.",
       0, 0, {}, false, RunReconstruct},
      {"snapshot", "snapshot (export|import) FILE",
       "export: writes the slot's state, bodies included, to FILE.\n"
       "import: loads FILE into this slot, which must be freshly\n"
       "initialized and empty.",
       2, 2, {}, true, RunSnapshot},
      {"retain", "retain --below LSN",
       "Log retention: checkpoints the spool, writes the base snapshot\n"
       "and removes log segments whose records are all below LSN.",
       0, 0, {{"--below", true}}, true, RunRetain},
      {"checkpoint", "checkpoint",
       "Makes the spool durable up to the last LSN (fdatasync of its packs),\n"
       "so that the log's copies of those bodies are no longer needed.",
       0, 0, {}, true, RunCheckpoint},
  };
  return *kCommands;
}
// clang-format on

const CommandSpec* FindCommand(const std::string& name) {
  for (const CommandSpec& c : Commands()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

constexpr char kGlobalUsage[] =
    "Usage: mailctl --slot DIR [--meta DIR] [--spool DIR] [--max-message-bytes "
    "N]\n"
    "               [--segment-bytes N] [-v] COMMAND [ARGS...]\n"
    "       mailctl [COMMAND] --help\n"
    "\n"
    "Operates on one slot: one copy of one store. Run it while no other "
    "process\n"
    "(replicad, another mailctl) has the slot open.\n";

std::string GlobalOptionsHelp() {
  const SlotOptions defaults;
  return absl::StrCat(
      "\nGlobal options (accepted anywhere on the line):\n"
      "  --slot DIR             the slot directory (identity file, log/)\n"
      "  --meta DIR             where the index lives (default: DIR/meta)\n"
      "  --spool DIR            where bodies live (default: DIR/spool)\n"
      "  --max-message-bytes N  largest message accepted (default: ",
      defaults.max_message_bytes, ")\n",
      "  --segment-bytes N      new log segment past this size (default: ",
      defaults.segment_bytes, ")\n",
      "  -v, --verbose          also print the engine's info log lines\n"
      "  -h, --help             this text; 'mailctl COMMAND --help'\n"
      "\nExit status: 0 success; 1 the command failed or damage was found\n"
      "(stderr says what and what to do); 2 usage error, or the slot\n"
      "cannot be opened.\n");
}

std::string GlobalHelp() {
  std::string out = absl::StrCat(kGlobalUsage, "\nCommands:\n");
  for (const CommandSpec& c : Commands())
    absl::StrAppend(&out, "  ", c.synopsis, "\n");
  absl::StrAppend(&out, GlobalOptionsHelp());
  return out;
}

std::string CommandHelp(const CommandSpec& c) {
  return absl::StrCat("Usage: mailctl --slot DIR ", c.synopsis, "\n\n",
                      c.description, "\n", GlobalOptionsHelp());
}

int Report(const absl::Status& s) {
  std::fprintf(stderr, "mailctl: %s\n", std::string(s.message()).c_str());
  return IsCannotRun(s) ? 2 : 1;
}

int UsageFailure(const absl::Status& s, const CommandSpec* c) {
  std::fprintf(stderr, "mailctl: %s\n", std::string(s.message()).c_str());
  if (c != nullptr) {
    std::fprintf(
        stderr,
        "Usage: mailctl --slot DIR %s\nRun 'mailctl %s --help' for details.\n",
        c->synopsis, c->name);
  } else {
    std::fprintf(stderr, "Run 'mailctl --help' for usage.\n");
  }
  return 2;
}

std::string OpenHint(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kNotFound:
      return "check --slot; 'mailctl init' creates a slot";
    case absl::StatusCode::kDataLoss:
      return "'mailctl verify' checks the whole slot";
    default:
      return "";
  }
}

int Main(int argc, char** argv) {
  absl::StatusOr<CommandLine> cl = ParseCommandLine(
      argc, argv,
      [](const std::string& name) -> const std::vector<OptionSpec>* {
        const CommandSpec* c = FindCommand(name);
        return c ? &c->options : nullptr;
      });
  // An unknown command is refused whatever else is on the line.
  if (!cl.ok() && cl.status().code() == absl::StatusCode::kNotFound)
    return Report(cl.status());
  // Otherwise --help wins over everything else on the line that parsed.
  for (int i = 1; i < argc && !cl.ok(); ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      const CommandSpec* c = nullptr;
      for (int j = 1; j < argc && c == nullptr; ++j) c = FindCommand(argv[j]);
      std::fputs((c ? CommandHelp(*c) : GlobalHelp()).c_str(), stdout);
      return 0;
    }
  }
  if (!cl.ok()) return UsageFailure(cl.status(), nullptr);
  const CommandSpec* spec = FindCommand(cl->command);
  if (cl->help) {
    std::fputs((spec ? CommandHelp(*spec) : GlobalHelp()).c_str(), stdout);
    return 0;
  }
  if (spec == nullptr)
    return UsageFailure(UsageError("missing command"), nullptr);
  const size_t n = cl->positional.size();
  if (n < spec->min_args || n > spec->max_args) {
    const std::string expected =
        spec->min_args == spec->max_args
            ? absl::StrCat(spec->min_args)
            : absl::StrCat(spec->min_args, " to ", spec->max_args);
    return UsageFailure(
        UsageError(absl::StrCat(spec->name, ": expected ", expected,
                                " arguments, got ", n)),
        spec);
  }
  if (cl->slot.empty())
    return UsageFailure(UsageError("--slot DIR is required"), spec);
  SetLogQuiet(!cl->verbose);

  CommandContext ctx;
  ctx.paths = SlotPaths::Under(cl->slot);
  if (!cl->meta.empty()) ctx.paths.meta = cl->meta;
  if (!cl->spool.empty()) ctx.paths.spool = cl->spool;
  if (cl->max_message_bytes)
    ctx.options.max_message_bytes = *cl->max_message_bytes;
  if (cl->segment_bytes) ctx.options.segment_bytes = *cl->segment_bytes;
  ctx.args = &*cl;
  std::unique_ptr<Slot> slot;
  if (spec->opens_slot) {
    absl::StatusOr<std::unique_ptr<Slot>> opened =
        Slot::Open(ctx.paths, ctx.options);
    if (!opened.ok()) {
      const std::string what = absl::StrCat("cannot open slot ", cl->slot);
      if (opened.status().code() == absl::StatusCode::kUnavailable)
        return Report(Failed(SlotInUseError(), what));
      return Report(
          CannotRun(Failed(opened.status(), what, OpenHint(opened.status()))));
    }
    slot = *std::move(opened);
    ctx.slot = slot.get();
  }
  absl::Status s = spec->run(ctx);
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    if (s.ok()) s = absl::UnavailableError("writing to stdout failed");
  }
  if (!s.ok()) {
    if (IsCannotRun(s) && s.code() == absl::StatusCode::kInvalidArgument) {
      return UsageFailure(s, spec);
    }
    return Report(s);
  }
  return 0;
}

}  // namespace
}  // namespace mailrepl

int main(int argc, char** argv) { return mailrepl::Main(argc, argv); }
