// workload: summarizes, dumps or delivers the project's standard mail
// workload (see tools/workload.h for its definition).
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "store/slot.h"
#include "tools/slot_delivery.h"
#include "tools/workload.h"

namespace mailrepl {
namespace {

// The plan costs 12 bytes per message up to start + count.
constexpr uint64_t kMaxIndex = 100'000'000;

constexpr char kUsage[] =
    R"(Usage:
  workload plan [--seed N] [--users U] [--start S] [--count N]
      Prints one JSON line of statistics for messages [S, S+N): count, total
      bytes, min/median/mean/max size, min/max messages per user.
  workload dump --dir D [--start S] [--count N] [--seed N] [--users U]
                [--domain DOMAIN]
      Writes messages [S, S+N) as D/<index>.eml (creates D).
  workload deliver --slot DIR [--start S] [--count N] [--seed N] [--users U]
                   [--domain DOMAIN] [--threads T]
      Opens the slot in DIR (made by 'mailctl init'), creates the INBOXes
      user/user0..user{U-1} that are missing, appends messages [S, S+N) each
      to its user's INBOX using T threads (default 1), and prints one JSON
      line: count, bytes, seconds, msgs_per_s, mb_per_s (MB = 10^6 bytes),
      threads, last_lsn. Messages already delivered are appended again.
  workload --help

Defaults: --seed 42 --users 100 --start 0 --count 10000
          --domain example.test
Workload: message i goes to one of user0..user{U-1} drawn uniformly; whole
message sizes are lognormal (median 8 KiB, sigma 1.0) clipped to
[1 KiB, 256 KiB]; message i is byte-identical for a given seed whatever range
is generated.
Exit status: 0 on success, 1 on I/O errors, 2 on bad arguments.
)";

struct Command {
  std::string name;
  std::map<std::string, std::string> flags;  // "--seed" -> "42"
};

struct Range {
  uint64_t start = 0;
  uint64_t count = 10000;
};

int BadArgs(const std::string& message) {
  std::fprintf(stderr, "workload: %s\nRun 'workload --help' for usage.\n",
               message.c_str());
  return 2;
}

// Fills *cmd from argv; returns "" or an error message.
std::string Parse(int argc, char** argv, Command* cmd) {
  static const std::map<std::string, std::set<std::string>> kAllowed = {
      {"plan", {"--seed", "--users", "--start", "--count"}},
      {"dump",
       {"--dir", "--seed", "--users", "--domain", "--start", "--count"}},
      {"deliver",
       {"--slot", "--seed", "--users", "--domain", "--start", "--count",
        "--threads"}},
  };
  if (argc < 2) return "missing subcommand (plan, dump or deliver)";
  cmd->name = argv[1];
  auto allowed = kAllowed.find(cmd->name);
  if (allowed == kAllowed.end()) {
    return absl::StrCat("unknown subcommand \"", cmd->name, "\"");
  }
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
      has_value = true;
    }
    if (!allowed->second.contains(arg)) {
      return absl::StrCat("unknown argument \"", argv[i], "\" for ", cmd->name);
    }
    if (!has_value) {
      if (i + 1 >= argc) return absl::StrCat(arg, " needs a value");
      value = argv[++i];
    }
    cmd->flags[arg] = value;
  }
  return "";
}

template <typename T>
std::string GetNumber(const Command& cmd, const std::string& flag, T* out) {
  auto it = cmd.flags.find(flag);
  if (it == cmd.flags.end()) return "";
  if (!absl::SimpleAtoi(it->second, out)) {
    return absl::StrCat(flag, ": not a valid number: \"", it->second, "\"");
  }
  return "";
}

// Reads the options and range shared by the subcommands.
std::string GetCommon(const Command& cmd, WorkloadOptions* options,
                      Range* range) {
  for (std::string error : {GetNumber(cmd, "--seed", &options->seed),
                            GetNumber(cmd, "--users", &options->users),
                            GetNumber(cmd, "--start", &range->start),
                            GetNumber(cmd, "--count", &range->count)}) {
    if (!error.empty()) return error;
  }
  if (auto it = cmd.flags.find("--domain"); it != cmd.flags.end()) {
    options->domain = it->second;
  }
  if (std::string error = Workload::OptionsError(*options); !error.empty()) {
    return error;
  }
  if (range->count < 1) return "--count must be >= 1";
  if (range->start > kMaxIndex || range->count > kMaxIndex - range->start) {
    return absl::StrCat("--start + --count must be <= ", kMaxIndex);
  }
  return "";
}

int Plan(const WorkloadOptions& options, const Range& range) {
  Workload workload(options);
  std::vector<uint64_t> sizes;
  sizes.reserve(range.count);
  std::vector<uint64_t> per_user(options.users, 0);
  uint64_t total = 0;
  for (uint64_t i = range.start; i < range.start + range.count; ++i) {
    sizes.push_back(workload.Size(i));
    total += sizes.back();
    ++per_user[workload.User(i)];
  }
  std::sort(sizes.begin(), sizes.end());
  auto [min_user, max_user] =
      std::minmax_element(per_user.begin(), per_user.end());
  std::printf(
      "%s\n",
      absl::StrFormat(
          "{\"seed\": %d, \"users\": %d, \"start\": %d, \"count\": %d, "
          "\"bytes\": %d, \"min\": %d, \"median\": %d, \"mean\": %.1f, "
          "\"max\": %d, \"per_user_min\": %d, \"per_user_max\": %d}",
          options.seed, options.users, range.start, range.count, total,
          sizes.front(), sizes[sizes.size() / 2],
          static_cast<double>(total) / static_cast<double>(sizes.size()),
          sizes.back(), *min_user, *max_user)
          .c_str());
  return 0;
}

int Dump(const WorkloadOptions& options, const Range& range,
         const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    std::fprintf(stderr, "workload: mkdir %s: %s\n", dir.c_str(),
                 ec.message().c_str());
    return 1;
  }
  Workload workload(options);
  uint64_t total = 0;
  for (uint64_t i = range.start; i < range.start + range.count; ++i) {
    const WorkloadMessage m = workload.Message(i);
    const std::string path = absl::StrCat(dir, "/", i, ".eml");
    errno = 0;
    std::FILE* f = std::fopen(path.c_str(), "wb");
    const size_t n = m.bytes.size();
    bool ok = f != nullptr && std::fwrite(m.bytes.data(), 1, n, f) == n;
    if (f != nullptr && std::fclose(f) != 0) ok = false;
    if (!ok) {
      std::fprintf(stderr, "workload: write %s: %s\n", path.c_str(),
                   errno != 0 ? std::strerror(errno) : "short write");
      return 1;
    }
    total += m.bytes.size();
  }
  std::printf("wrote %llu messages (%llu bytes) to %s\n",
              static_cast<unsigned long long>(range.count),
              static_cast<unsigned long long>(total), dir.c_str());
  return 0;
}

// The delivery target is chosen by flag: --slot now; an LMTP target
// (--lmtp HOST:PORT) will plug in here with its own DeliverySink.
int Deliver(const Command& cmd, const WorkloadOptions& options,
            const Range& range) {
  DeliveryOptions delivery;
  delivery.workload = options;
  delivery.start = range.start;
  delivery.count = range.count;
  if (std::string error = GetNumber(cmd, "--threads", &delivery.threads);
      !error.empty()) {
    return BadArgs(error);
  }
  if (std::string error = DeliveryOptionsError(delivery); !error.empty()) {
    return BadArgs(error);
  }
  auto slot_dir = cmd.flags.find("--slot");
  if (slot_dir == cmd.flags.end() || slot_dir->second.empty()) {
    return BadArgs("deliver needs --slot DIR");
  }
  SetLogQuiet(true);
  absl::StatusOr<std::unique_ptr<Slot>> slot =
      Slot::Open(SlotPaths::Under(slot_dir->second), {});
  if (!slot.ok()) {
    std::fprintf(stderr, "workload: open slot %s: %s\n",
                 slot_dir->second.c_str(),
                 std::string(slot.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<DeliveryStats> stats = DeliverToSlot(**slot, delivery);
  if (!stats.ok()) {
    std::fprintf(stderr, "workload: deliver to slot %s: %s\n",
                 slot_dir->second.c_str(),
                 std::string(stats.status().message()).c_str());
    return 1;
  }
  std::printf("%s\n", stats->ToJson().c_str());
  return 0;
}

int Main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  Command cmd;
  if (std::string error = Parse(argc, argv, &cmd); !error.empty()) {
    return BadArgs(error);
  }
  WorkloadOptions options;
  Range range;
  if (std::string error = GetCommon(cmd, &options, &range); !error.empty()) {
    return BadArgs(error);
  }
  if (cmd.name == "plan") return Plan(options, range);
  if (cmd.name == "deliver") return Deliver(cmd, options, range);
  auto dir = cmd.flags.find("--dir");
  if (dir == cmd.flags.end() || dir->second.empty()) {
    return BadArgs("dump needs --dir");
  }
  return Dump(options, range, dir->second);
}

}  // namespace
}  // namespace mailrepl

int main(int argc, char** argv) { return mailrepl::Main(argc, argv); }
