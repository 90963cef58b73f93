// The project's standard mail workload: a deterministic, seeded stream of
// RFC 5322 messages used by benchmarks, tests and the `workload` CLI. Same
// definition as the workload the first Cyrus comparison used (not byte-identical
// with it); bench/cyrus/ drives Cyrus with this one:
//   * U users user0..user{U-1}; message i (global, 0-based) goes to the INBOX
//     of one user drawn uniformly at random;
//   * whole-message sizes (headers + body, CRLF line endings) are lognormal
//     with median 8 KiB (mu = ln 8192) and sigma 1.0, clipped to
//     [1 KiB, 256 KiB]; every message is exactly its planned size;
//   * Message-ID <wl<seed>.<i>@bench.invalid>, Date derived from i;
//   * the plan (user, size, corpus offset) is drawn sequentially from
//     std::mt19937_64(seed), so message i is byte-identical whatever range of
//     messages is generated, and in whatever order.
//
// Memory: a fixed ~512 KiB text corpus (from the seed) that bodies are cut
// from, plus 12 bytes of plan per message up to the highest index asked for.
//
// Thread-safety: not thread-safe. Message() and Size() extend the plan lazily,
// so one Workload must be used by one thread at a time (or be externally
// synchronized). Separate instances share nothing.
#ifndef MAILREPL_TOOLS_WORKLOAD_H_
#define MAILREPL_TOOLS_WORKLOAD_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace mailrepl {

struct WorkloadOptions {
  uint64_t seed = 42;
  int users = 100;                      // >= 1
  std::string domain = "example.test";  // 1..253 chars of [A-Za-z0-9.-]
};

struct WorkloadMessage {
  uint64_t index;
  std::string user;        // "user17"
  std::string rcpt;        // "user17@example.test"
  std::string message_id;  // "<wl42.5@bench.invalid>", brackets included
  std::string bytes;       // the whole RFC 5322 message
};

class Workload {
 public:
  static constexpr uint64_t kMinSize = 1024;
  static constexpr uint64_t kMaxSize = 256 * 1024;

  // Returns "" if options are usable, else a description of the problem.
  static std::string OptionsError(const WorkloadOptions& options);

  // Aborts if OptionsError(options) is not empty: check user input first.
  explicit Workload(WorkloadOptions options = {});

  Workload(const Workload&) = delete;
  Workload& operator=(const Workload&) = delete;

  // Builds message `index`, extending the plan up to it if needed.
  WorkloadMessage Message(uint64_t index);

  // The exact size in bytes of message `index`, without building it.
  uint64_t Size(uint64_t index);

  // The user number (0..users-1) message `index` is delivered to.
  int User(uint64_t index);

  const WorkloadOptions& options() const { return options_; }

 private:
  struct PlanEntry {
    uint32_t user;
    uint32_t size;
    uint32_t corpus_line;  // where the body starts in corpus_
  };

  // Draws plan entries until entry `index` exists.
  const PlanEntry& Plan(uint64_t index);

  WorkloadOptions options_;
  std::mt19937_64 rng_;
  std::vector<PlanEntry> plan_;
  std::vector<std::string> corpus_;  // lines of at most 76 chars, ~512 KiB
};

}  // namespace mailrepl

#endif  // MAILREPL_TOOLS_WORKLOAD_H_
