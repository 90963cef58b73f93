#include "replicad/hooks.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "common/log.h"
#include "replicad/work_pool.h"

extern char** environ;

namespace mailrepl::replicad {

Hooks::Hooks(std::string promote, std::string demote, absl::Duration timeout,
             std::optional<asio::any_io_executor> pool)
    : promote_(std::move(promote)), demote_(std::move(demote)), timeout_(timeout) {
  if (!pool) {
    own_pool_ = std::make_unique<HostPool>(1);
    pool = own_pool_->executor();
  }
  serial_ = std::make_unique<WorkGate>(*pool, 1);
}

Hooks::~Hooks() {
  serial_->Close();
  own_pool_.reset();  // joins
}

asio::awaitable<absl::Status> Hooks::Run(HookEvent event) {
  auto work = [this, &event] { return RunBlocking(event); };
  asio::awaitable<absl::Status> done = serial_->Run(std::move(work));
  co_return co_await std::move(done);
}

absl::Status Hooks::RunBlocking(const HookEvent& e) {
  const std::string& command = e.event == "promote" ? promote_ : demote_;
  if (command.empty()) return absl::OkStatus();
  const std::vector<std::string> args = {command,
                                         e.event,
                                         absl::StrCat(e.store_id),
                                         absl::StrCat(e.slot_id),
                                         e.service_lmtp,
                                         e.service_api};
  std::vector<std::string> env_strings = {
      absl::StrCat("MAILREPL_EVENT=", e.event), absl::StrCat("MAILREPL_STORE=", e.store_id),
      absl::StrCat("MAILREPL_SLOT=", e.slot_id),
      absl::StrCat("MAILREPL_SERVICE_LMTP=", e.service_lmtp),
      absl::StrCat("MAILREPL_SERVICE_API=", e.service_api)};
  for (char** v = environ; *v != nullptr; ++v) {
    if (std::strncmp(*v, "MAILREPL_", 9) != 0) env_strings.push_back(*v);
  }
  std::vector<char*> argv, envp;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (std::string& v : env_strings) envp.push_back(v.data());
  envp.push_back(nullptr);
  const std::string what = absl::StrCat(e.event, " hook ", command, " (store ", e.store_id,
                                        ", slot ", e.slot_id, ")");
  pid_t pid = 0;
  if (int err = ::posix_spawn(&pid, command.c_str(), nullptr, nullptr, argv.data(), envp.data());
      err != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot run the ", what, ": ", std::strerror(err), "; fix replicad.conf"));
  }
  const absl::Duration deadline = SinceBoot() + timeout_;  // a wall-clock step moves nothing
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("waiting for the ", what, ": ", std::strerror(errno)));
    }
    if (SinceBoot() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return absl::DeadlineExceededError(
          absl::StrCat("the ", what, " did not finish within ", absl::FormatDuration(timeout_),
                       " and was killed"));
    }
    absl::SleepFor(absl::Milliseconds(5));  // a child exits on its own time: poll
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    LogLine(Severity::kInfo, "hook done", Kv("hook", what));
    return absl::OkStatus();
  }
  const std::string how = WIFEXITED(status) ? absl::StrCat("exited ", WEXITSTATUS(status))
                                            : absl::StrCat("died of signal ", WTERMSIG(status));
  return absl::AbortedError(absl::StrCat("the ", what, " ", how));
}

}  // namespace mailrepl::replicad
