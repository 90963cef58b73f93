// File: test/process_util.h
//
// Child processes for tests that run the real binaries (sync_client,
// sync_server, ...), and WaitFor(), which polls a condition until a deadline
// so that tests never sleep blindly.
//
// Example:
//   Process server({bin + "/sync_server", "--slot", dir, ...});
//   REQUIRE(WaitFor([&] { return Contains(server.Stderr(), "listening"); },
//                   absl::Seconds(10)));
//   server.Signal(SIGTERM);
//   REQUIRE(server.Wait(absl::Seconds(5)) == 0);
//
// Thread-compatible: a Process is used from one thread at a time. Starting a
// process from a multithreaded test is safe (the child only calls
// async-signal-safe functions before exec).
#ifndef MAILREPL_TEST_PROCESS_UTIL_H_
#define MAILREPL_TEST_PROCESS_UTIL_H_

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace mailrepl::testing {

// Calls condition every `poll` until it returns true (then returns true) or
// timeout has passed (then returns the result of one last call).
bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout,
             absl::Duration poll = absl::Milliseconds(5));

class Process {
 public:
  // Starts argv[0] (a path; PATH is not searched) with arguments argv, the
  // test's environment plus `env` ("NAME=value" entries, overriding), stdin
  // from /dev/null, and stdout and stderr in files of a fresh temporary
  // directory. The child gets SIGKILL if the thread that started it ends
  // (the test process died), so no child outlives a crashed test.
  // Throws std::runtime_error if the process cannot be started (a missing
  // binary shows as exit code 127 instead).
  explicit Process(std::vector<std::string> argv, std::vector<std::string> env = {});
  // SIGKILLs and reaps the child if it still runs; removes the output files.
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // Sends sig to the child, unless it was already reaped.
  void Signal(int sig);
  // Waits up to timeout for the child to end. Returns its exit code, or
  // 128 + the signal number if a signal ended it (as shells report it);
  // nullopt if it still runs. Once the child ended, returns the same value
  // at once.
  std::optional<int> Wait(absl::Duration timeout);
  // Whether the child still runs (reaps it if it ended).
  bool Running();

  // Everything the child wrote so far.
  std::string Stdout() const;
  std::string Stderr() const;
  // "argv[0]... exit=<...>" plus the last lines of stderr: for failure
  // messages.
  std::string Describe() const;

 private:
  bool Reap(bool block);

  std::vector<std::string> argv_;
  std::string dir_;
  pid_t pid_ = -1;
  std::optional<int> exit_;
};

}  // namespace mailrepl::testing

#endif  // MAILREPL_TEST_PROCESS_UTIL_H_
