#include "test/process_util.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

extern char** environ;

namespace mailrepl::testing {
namespace {

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The environment for the child: ours, with `extra` added or overriding.
std::vector<std::string> ChildEnvironment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    absl::string_view entry(*e);
    if (entry.find('=') == absl::string_view::npos) continue;
    const absl::string_view name = entry.substr(0, entry.find('=') + 1);
    bool overridden = false;
    for (const std::string& x : extra) overridden |= absl::StartsWith(x, name);
    if (!overridden) env.emplace_back(entry);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::vector<char*> CArray(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout, absl::Duration poll) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(poll);
  }
  return condition();
}

Process::Process(std::vector<std::string> argv, std::vector<std::string> env)
    : argv_(std::move(argv)) {
  if (argv_.empty()) throw std::runtime_error("Process: empty argv");
  const char* tmp = getenv("TMPDIR");
  std::string tmpl = absl::StrCat(tmp ? tmp : "/tmp", "/mailrepl-proc-XXXXXX");
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;

  // Everything the child needs is prepared before fork(): after it, the
  // child of a multithreaded process may only call async-signal-safe
  // functions.
  std::vector<std::string> args = argv_;
  std::vector<std::string> environment = ChildEnvironment(env);
  std::vector<char*> c_args = CArray(args);
  std::vector<char*> c_env = CArray(environment);
  const int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int out =
      ::open((dir_ + "/stdout").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int err =
      ::open((dir_ + "/stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (in < 0 || out < 0 || err < 0) {
    for (int fd : {in, out, err}) {
      if (fd >= 0) ::close(fd);
    }
    throw std::runtime_error("Process: cannot open the output files in " + dir_);
  }
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) _exit(126);  // the test died before prctl
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP}) ::signal(sig, SIG_DFL);
    if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) _exit(126);
    // No descriptor of the test (sockets, databases) leaks into the child.
    ::syscall(SYS_close_range, 3u, ~0u, 0u);
    ::execve(c_args[0], c_args.data(), c_env.data());
    _exit(127);
  }
  const int fork_errno = errno;
  ::close(in);
  ::close(out);
  ::close(err);
  if (pid_ < 0) {
    throw std::runtime_error(absl::StrCat("fork failed: ", strerror(fork_errno)));
  }
}

Process::~Process() {
  if (pid_ > 0 && !exit_.has_value()) {
    ::kill(pid_, SIGKILL);
    Reap(/*block=*/true);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

bool Process::Reap(bool block) {
  if (exit_.has_value()) return true;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r != pid_) return false;
  exit_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return true;
}

void Process::Signal(int sig) {
  if (pid_ > 0 && !exit_.has_value()) ::kill(pid_, sig);
}

std::optional<int> Process::Wait(absl::Duration timeout) {
  WaitFor([&] { return Reap(/*block=*/false); }, timeout, absl::Milliseconds(2));
  return exit_;
}

bool Process::Running() { return !Reap(/*block=*/false); }

std::string Process::Stdout() const { return ReadWhole(dir_ + "/stdout"); }
std::string Process::Stderr() const { return ReadWhole(dir_ + "/stderr"); }

std::string Process::Describe() const {
  std::string err = Stderr();
  constexpr size_t kTail = 3000;
  if (err.size() > kTail) err = "..." + err.substr(err.size() - kTail);
  return absl::StrCat(absl::StrJoin(argv_, " "), "\n  exit=",
                      exit_.has_value() ? absl::StrCat(*exit_) : std::string("(running)"),
                      "\n  stderr:\n", err, "\n  stdout:\n", Stdout());
}

}  // namespace mailrepl::testing
