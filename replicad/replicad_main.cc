// replicad: the host daemon. Usage: replicad --config FILE
// (docs/operations.md "replicad"). Exit 0 after SIGTERM/SIGINT once every
// slot has wound down; 2 when it cannot start (the message says why).
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "asio.hpp"
#include "common/io_thread.h"
#include "common/log.h"
#include "replicad/config.h"
#include "replicad/replicad.h"
#include "transport/auth.h"

namespace {

constexpr char kUsage[] =
    "usage: replicad --config FILE\n"
    "\n"
    "Hosts the slots FILE lists and serves each in the role coordinatord\n"
    "assigns: a master serves LMTP and the client API and streams its log to\n"
    "its replicas; a replica applies that stream. FILE is protobuf text format\n"
    "(docs/operations.md \"replicad.conf\"; example in etc/replicad.conf).\n"
    "SIGTERM: stop accepting, finish writes in flight, exit 0.\n";

int Fail(const std::string& message) {
  std::fprintf(stderr, "replicad: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (std::strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
      config_path = argv[++i];
    } else {
      std::fputs(kUsage, stderr);
      return 2;
    }
  }
  if (config_path.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  auto config = mailrepl::replicad::LoadReplicadConfig(config_path);
  if (!config.ok()) return Fail(std::string(config.status().message()));
  auto secret = mailrepl::transport::LoadSecret(config->secret_file());
  if (!secret.ok()) return Fail(std::string(secret.status().message()));

  asio::io_context io(1);
  mailrepl::replicad::Replicad daemon(io, *config, *secret);
  if (absl::Status s = daemon.Start(); !s.ok()) return Fail(std::string(s.message()));

  asio::signal_set signals(io, SIGTERM, SIGINT);
  asio::steady_timer poll(io);
  std::function<void()> wait_done = [&] {
    if (daemon.done()) {
      io.stop();
      return;
    }
    poll.expires_after(std::chrono::milliseconds(20));
    poll.async_wait([&](const asio::error_code&) { wait_done(); });
  };
  signals.async_wait([&](const asio::error_code& ec, int) {
    if (ec) return;
    daemon.Stop();
    wait_done();
  });
  {
    // The io thread serves every slot and the coordinator link: nothing on
    // it may block (common/io_thread.h; checked in debug builds).
    mailrepl::IoThreadScope io_thread;
    io.run();
  }
  mailrepl::LogLine(mailrepl::Severity::kInfo, "replicad stopped", "");
  return 0;
}
