// Crash safety: a child process appends from several threads and reports
// every acknowledged append; the parent SIGKILLs it at random moments, many
// times, and after each crash checks that every acknowledged append is
// present and that verify is clean.
#include <catch2/catch.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_split.h"
#include "common/log.h"
#include "store/verify.h"
#include "test/test_util.h"

namespace mailrepl {
namespace {

using testing::TempDir;

[[noreturn]] void AppendForever(const std::string& dir, int round, int ack_fd) {
  auto slot = Slot::Open(SlotPaths::Under(dir), {});
  if (!slot.ok()) _exit(3);
  std::mutex ack_mu;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(round * 100 + t);
      for (int i = 0;; ++i) {
        std::string body = testing::TestMessage(round * 1000000 + t * 100000 + i,
                                                500 + rng() % 20000);
        auto r = (*slot)->Append({.mailbox = "user/u", .body = body});
        if (!r.ok()) _exit(4);
        std::string line = absl::BytesToHexString(r->guid) + "\n";
        std::lock_guard<std::mutex> l(ack_mu);
        if (::write(ack_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
          _exit(5);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  _exit(0);
}

// Reads ack lines until `want` arrived (or the deadline passed); returns them.
std::vector<std::string> ReadAcks(int fd, size_t want, std::string& partial) {
  std::vector<std::string> acks;
  char buf[4096];
  while (acks.size() < want) {
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, 30000);
    REQUIRE(rc > 0);  // the child keeps appending; 30 s without an ack is a hang
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    partial.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = partial.find('\n')) != std::string::npos) {
      acks.push_back(partial.substr(0, nl));
      partial.erase(0, nl + 1);
    }
  }
  return acks;
}

TEST_CASE("no acknowledged append is lost when the writer is SIGKILLed at random moments",
          "[crash]") {
  TempDir dir;
  testing::NewSlot(dir.path())->CreateMailbox("user/u").IgnoreError();
  SetLogQuiet(true);
  std::mt19937 rng(42);
  std::set<std::string> acked;
  const int kRounds = 30;
  int torn_tails = 0;
  for (int round = 1; round <= kRounds; ++round) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      AppendForever(dir.path(), round, fds[1]);
    }
    ::close(fds[1]);
    std::string partial;
    size_t want = 1 + rng() % 60;
    auto acks = ReadAcks(fds[0], want, partial);
    ::kill(pid, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFSIGNALED(status));
    // Acks written before the kill are acknowledged appends too.
    auto rest = ReadAcks(fds[0], SIZE_MAX, partial);
    ::close(fds[0]);
    acked.insert(acks.begin(), acks.end());
    acked.insert(rest.begin(), rest.end());

    auto slot = testing::ReopenSlot(dir.path());
    if (slot->recovery().torn_tail) ++torn_tails;
    auto msgs = slot->ListMessages("user/u", false);
    REQUIRE(msgs.ok());
    std::set<std::string> present;
    for (const auto& m : *msgs) present.insert(absl::BytesToHexString(m.guid));
    for (const auto& g : acked) {
      INFO("round " << round << " guid " << g);
      REQUIRE(present.count(g) == 1);
    }
    auto report = VerifySlot(*slot);
    REQUIRE(report.ok());
    INFO((report->problems.empty() ? "" : report->problems[0]));
    INFO((report->bad_bodies.empty() ? "" : report->bad_bodies[0].problem));
    REQUIRE(report->clean());
  }
  SetLogQuiet(false);
  CHECK(acked.size() >= kRounds);
  WARN("crash rounds: " << kRounds << ", acknowledged appends checked: " << acked.size()
                        << ", torn tails truncated: " << torn_tails);
}

}  // namespace
}  // namespace mailrepl
