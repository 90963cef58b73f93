// sync_client: pushes a master slot's changes to a replica's sync_server.
// Flags follow Cyrus's sync_client where they can. Exit codes: 0 done;
// 1 partial (the mailboxes that failed are listed); 2 could not run.
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "asio.hpp"
#include "common/io_thread.h"
#include "common/log.h"
#include "transport/auth.h"
#include "syncclient/common_flags.h"
#include "syncclient/sync_client.h"

namespace {

constexpr char kUsage[] = R"(usage: sync_client --slot DIR --server ADDR:PORT --secret-file FILE [mode] [options]

Pushes the change log of the master slot in DIR to the sync_server at ADDR:PORT.

Modes (default: catch up to the master's current LSN, then exit):
  -r            rolling: follow the log until SIGTERM, reconnecting with backoff
  -u USER       state-based resync of USER's mailboxes (user/USER and below)
  -m MAILBOX    state-based resync of one mailbox (lifts its quarantine)
  -A            state-based resync of every mailbox
  -f FILE       replay the records of a leftover log segment FILE

Options:
  --meta DIR, --spool DIR   where the slot keeps its index and bodies (default DIR/meta, DIR/spool)
  -z            compress frames with zstd (if the server agrees)
  -v            verbose
  --stats       print statistics at the end (records, bytes, bodies skipped by
                GUID, lag in LSNs and seconds, quarantined mailboxes)

Exit codes: 0 done; 1 partial (failed mailboxes listed); 2 could not run.
)";

int Usage(const std::string& error) {
  std::cerr << "sync_client: " << error << "\n" << kUsage;
  return 2;
}

void PrintStats(const mailrepl::sync::SyncStats& s) {
  uint64_t lag = s.master_lsn > s.acked_lsn ? s.master_lsn - s.acked_lsn : 0;
  std::cout << "records_sent " << s.records << "\n"
            << "record_bytes " << s.record_bytes << "\n"
            << "wire_bytes " << s.wire_bytes << "\n"
            << "bodies_sent " << s.bodies_sent << "\n"
            << "bodies_skipped_by_guid " << s.bodies_skipped << "\n"
            << "snapshots " << s.snapshots << "\n"
            << "connects " << s.connects << "\n"
            << "master_lsn " << s.master_lsn << "\n"
            << "replica_acked_lsn " << s.acked_lsn << "\n"
            << "lag_lsns " << lag << "\n"
            << "lag_seconds " << s.lag_seconds << "\n"
            << "quarantined " << s.quarantined.size() << "\n";
  for (const auto& q : s.quarantined) std::cout << "  quarantined " << q << "\n";
  for (const auto& r : s.repaired) std::cout << "  repaired " << r << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  using mailrepl::sync::SyncClientOptions;
  SyncClientOptions options;
  mailrepl::sync::CommonFlags common;
  bool stats = false;
  int modes = 0;
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
    } else if (a == "--server") {
      options.server = value("--server");
    } else if (a == "-r") {
      options.mode = SyncClientOptions::Mode::kRolling, ++modes;
    } else if (a == "-u") {
      options.mode = SyncClientOptions::Mode::kResyncUser, ++modes;
      options.target = value("-u");
    } else if (a == "-m") {
      options.mode = SyncClientOptions::Mode::kResyncMailbox, ++modes;
      options.target = value("-m");
    } else if (a == "-A") {
      options.mode = SyncClientOptions::Mode::kResyncAll, ++modes;
    } else if (a == "-f") {
      options.mode = SyncClientOptions::Mode::kReplayFile, ++modes;
      options.target = value("-f");
    } else if (a == "-z") {
      options.compress = true;
    } else if (a == "-v") {
      options.verbose = true;
    } else if (a == "--stats") {
      stats = true;
    } else {
      return Usage("unknown argument '" + a + "'");
    }
  }
  if (!common.Check().ok() || options.server.empty()) {
    return Usage("--slot, --server and --secret-file are required");
  }
  if (modes > 1) return Usage("give at most one of -r, -u, -m, -A, -f");
  options.slot = common.Paths();
  auto secret = mailrepl::transport::LoadSecret(common.secret_file);
  if (!secret.ok()) {
    std::cerr << "sync_client: " << secret.status().message() << "\n";
    return 2;
  }
  options.secret = *secret;
  mailrepl::SetLogQuiet(!options.verbose);

  asio::io_context io;
  mailrepl::sync::SyncClient client(io, options);
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const asio::error_code& ec, int) {
    if (!ec) client.Stop();
  });
  absl::Status result = absl::UnknownError("did not finish");
  asio::co_spawn(io, client.Run(), [&](std::exception_ptr e, absl::Status s) {
    result = e ? absl::InternalError("unexpected exception") : s;
    signals.cancel();
  });
  {
    mailrepl::IoThreadScope io_thread;  // nothing may block this thread (common/io_thread.h)
    io.run();
  }
  if (stats) PrintStats(client.stats());
  if (result.ok()) return 0;
  if (result.code() == absl::StatusCode::kAborted) {
    std::cerr << "sync_client: partial: " << result.message() << "\n";
    for (const auto& f : client.stats().failed) std::cerr << "  failed " << f << "\n";
    return 1;
  }
  std::cerr << "sync_client: " << result.message() << "\n";
  return 2;
}
