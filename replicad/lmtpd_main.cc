// lmtpd: a standalone LMTP server delivering into the slot in DIR (tests,
// benchmarks, trying things by hand; replicad embeds the same server for
// each master slot).
// Exit codes: 0 stopped cleanly (SIGTERM/SIGINT); 2 could not run.
#include <signal.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "asio.hpp"
#include "common/log.h"
#include "replicad/lmtp_server.h"
#include "replicad/slot_backend.h"
#include "store/slot.h"

namespace {

constexpr char kUsage[] = R"(usage: lmtpd --slot DIR --listen ADDR:PORT [options]

Accepts LMTP (RFC 2033) on ADDR:PORT (port 0: any free port) and delivers into
the slot in DIR: user@domain to user/USER, user+folder@domain to
user/USER/folder when it exists.

Options:
  --max-message-bytes N   largest message accepted (default 52428800)
  --create-users N        first create the INBOXes user/user0 .. user/user{N-1} if missing
  --hostname NAME         name in the greeting (default localhost)
  --threads N             appends in flight at once (default 16)
  --max-connections N     more connections get 421 4.3.2 (default 1000)
  --meta DIR, --spool DIR where the slot keeps its index and bodies (default DIR/meta, DIR/spool)
  SIGTERM stops accepting, finishes the deliveries in flight, then exits 0.
Prints "lmtpd listening ... port=<N>" on stderr once it accepts connections.
)";

// Room for the Return-Path line the server adds (the address is at most a
// command line long).
constexpr uint64_t kReturnPathRoom = 2048;
constexpr uint64_t kMaxMessageLimit = 60ull << 20;  // the slot's record limit is 64 MiB

int Usage(const std::string& error) {
  std::cerr << "lmtpd: " << error << "\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mailrepl;
  lmtp::LmtpServerOptions options;
  std::string slot_dir, meta, spool;
  uint64_t create_users = 0;
  int threads = 16;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        Usage(a + " needs a value");
        std::exit(2);
      }
      return argv[++i];
    };
    auto number = [&](uint64_t* out) {
      const std::string v = value();
      if (!absl::SimpleAtoi(v, out)) {
        Usage(absl::StrCat(a, ": '", v, "' is not a number"));
        std::exit(2);
      }
    };
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (a == "--slot") {
      slot_dir = value();
    } else if (a == "--meta") {
      meta = value();
    } else if (a == "--spool") {
      spool = value();
    } else if (a == "--listen") {
      options.listen = value();
    } else if (a == "--hostname") {
      options.hostname = value();
    } else if (a == "--max-message-bytes") {
      number(&options.max_message_bytes);
    } else if (a == "--create-users") {
      number(&create_users);
    } else if (a == "--max-connections") {
      uint64_t n = 0;
      number(&n);
      if (n < 1) return Usage("--max-connections must be at least 1");
      options.max_connections = n;
    } else if (a == "--threads") {
      uint64_t n = 0;
      number(&n);
      if (n < 1 || n > 1024) return Usage("--threads must be 1..1024");
      threads = static_cast<int>(n);
    } else {
      return Usage("unknown argument '" + a + "'");
    }
  }
  if (slot_dir.empty() || options.listen.empty()) return Usage("--slot and --listen are required");
  if (options.max_message_bytes < 1 || options.max_message_bytes > kMaxMessageLimit) {
    return Usage(absl::StrCat("--max-message-bytes must be 1..", kMaxMessageLimit));
  }

  SlotPaths paths = SlotPaths::Under(slot_dir);
  if (!meta.empty()) paths.meta = meta;
  if (!spool.empty()) paths.spool = spool;
  SlotOptions slot_options;
  slot_options.max_message_bytes = options.max_message_bytes + kReturnPathRoom;
  auto slot = Slot::Open(paths, slot_options);
  if (!slot.ok()) {
    std::cerr << "lmtpd: cannot open slot " << slot_dir << ": " << slot.status().message() << "\n";
    return 2;
  }
  for (uint64_t u = 0; u < create_users; ++u) {
    const std::string inbox = absl::StrCat("user/user", u);
    if ((*slot)->GetMailbox(inbox).ok()) continue;
    if (auto made = (*slot)->CreateMailbox(inbox); !made.ok()) {
      std::cerr << "lmtpd: cannot create " << inbox << ": " << made.status().message() << "\n";
      return 2;
    }
  }

  asio::io_context io;
  lmtp::SlotBackend backend(**slot, {.threads = threads});
  lmtp::LmtpServer server(io, backend, options);
  if (absl::Status s = server.Listen(); !s.ok()) {
    std::cerr << "lmtpd: " << s.message() << "\n";
    return 2;
  }
  LogLine(Severity::kWarning, "lmtpd listening",
          Kv("listen", options.listen) + Kv("port", server.port()) + Kv("slot", slot_dir));
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const asio::error_code& ec, int) {
    if (!ec) server.Stop();
  });
  // Run() returns once the server stopped and every connection ended; then
  // nothing is left to run and io.run() returns.
  asio::co_spawn(io, server.Run(), [&](std::exception_ptr) { signals.cancel(); });
  io.run();
  const lmtp::LmtpServerStats st = server.stats();
  const lmtp::SlotBackendStats bs = backend.stats();
  LogLine(Severity::kWarning, "lmtpd stopped",
          Kv("connections", st.connections_accepted) + Kv("messages", st.messages) +
              Kv("delivered", st.recipients_delivered) + Kv("refused", st.recipients_refused) +
              Kv("appended", bs.appended) + Kv("append_errors", bs.failed) +
              Kv("commits", (*slot)->stats().commits) + Kv("records", (*slot)->stats().records));
  return 0;
}
