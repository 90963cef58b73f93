// sync_server: applies a master's change log to the replica slot in DIR.
// Exit codes: 0 stopped cleanly (SIGTERM); 2 could not run.
#include <signal.h>

#include <iostream>
#include <string>

#include "asio.hpp"
#include "common/io_thread.h"
#include "common/log.h"
#include "store/slot.h"
#include "transport/auth.h"
#include "syncclient/common_flags.h"
#include "syncclient/sync_server.h"

namespace {

constexpr char kUsage[] = R"(usage: sync_server --slot DIR --listen ADDR:PORT --secret-file FILE [options]

Serves the replica slot in DIR to the master's sync_client.

Options:
  --meta DIR, --spool DIR   where the slot keeps its index and bodies (default DIR/meta, DIR/spool)
  -v                        verbose
  SIGTERM finishes the batch being applied, then exits 0.
)";

int Usage(const std::string& error) {
  std::cerr << "sync_server: " << error << "\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  mailrepl::sync::SyncServerOptions options;
  mailrepl::sync::CommonFlags common;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) {
        Usage(std::string(name) + " needs a value");
        std::exit(2);
      }
      return argv[++i];
    };
    absl::StatusOr<bool> taken = common.Consume(argc, argv, &i);
    if (!taken.ok()) return Usage(std::string(taken.status().message()));
    if (*taken) continue;
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (a == "--listen") {
      options.listen = value("--listen");
    } else if (a == "-v") {
      options.verbose = true;
    } else {
      return Usage("unknown argument '" + a + "'");
    }
  }
  if (!common.Check().ok() || options.listen.empty()) {
    return Usage("--slot, --listen and --secret-file are required");
  }
  auto secret = mailrepl::transport::LoadSecret(common.secret_file);
  if (!secret.ok()) {
    std::cerr << "sync_server: " << secret.status().message() << "\n";
    return 2;
  }
  options.secret = *secret;
  const mailrepl::SlotPaths paths = common.Paths();
  auto slot = mailrepl::Slot::Open(paths, {});
  if (!slot.ok()) {
    std::cerr << "sync_server: cannot open slot " << common.slot << ": " << slot.status().message()
              << "\n";
    return 2;
  }
  asio::io_context io;
  mailrepl::sync::SyncServer server(io, **slot, options);
  if (absl::Status s = server.Listen(); !s.ok()) {
    std::cerr << "sync_server: " << s.message() << "\n";
    return 2;
  }
  mailrepl::LogLine(mailrepl::Severity::kWarning, "sync_server listening",
                    mailrepl::Kv("listen", options.listen) + mailrepl::Kv("port", server.port()) +
                        mailrepl::Kv("slot", common.slot));
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const asio::error_code& ec, int) {
    if (ec) return;
    server.Stop();
    // Let open sessions finish the batch in flight, then stop.
    asio::post(io, [&] { io.stop(); });
  });
  asio::co_spawn(io, server.Run(), asio::detached);
  mailrepl::IoThreadScope io_thread;  // nothing may block this thread (common/io_thread.h)
  io.run();
  return 0;
}
