// File: test/sync_harness.h
//
// Shared by the tests that run the real sync_client and sync_server
// binaries (sync_test.cc, sync_faults_test.cc): a master slot written by the
// test itself, a replica slot served by a sync_server process, client runs
// with their --stats parsed, and read-only looks at either slot's index.
//
// Example:
//   SyncFixture f;                       // master slot open, replica slot made
//   f.master->CreateMailbox("user/a");
//   ServerProcess server(f.replica_dir, f.secret_file);
//   ClientRun run = f.RunClient(server, {"--stats"});
//   REQUIRE(run.code == 0);
//   CHECK(ReadIndex(f.replica_index()).digest == f.master->SlotDigest());
//
// Thread-compatible.
#ifndef MAILREPL_TEST_SYNC_HARNESS_H_
#define MAILREPL_TEST_SYNC_HARNESS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "store/index.h"
#include "store/slot.h"
#include "test/process_util.h"
#include "test/test_util.h"

namespace mailrepl::testing {

// The secret SyncFixture writes to its secret file.
inline constexpr char kTestSecret[] = "correct horse battery staple 42";

// $MAILREPL_BIN/name (the build's bin directory).
std::string Bin(const std::string& name);

// Writes a secret file with the given mode.
void WriteSecret(const std::string& path, const std::string& secret, mode_t mode = 0600);

// A sync_server process on a replica slot, bound to 127.0.0.1.
class ServerProcess {
 public:
  // port 0: any free port. Waits until the server listens (throws if it
  // exits or does not listen within 30 s).
  ServerProcess(const std::string& replica_dir, const std::string& secret_file, uint16_t port = 0,
                std::vector<std::string> env = {});
  uint16_t port() const { return port_; }
  std::string address() const;
  Process& process() { return *process_; }
  // SIGTERM; returns the exit code (nullopt: did not exit within 10 s).
  std::optional<int> Stop();
  // SIGKILL and reap.
  void Kill();

 private:
  std::unique_ptr<Process> process_;
  uint16_t port_ = 0;
};

// The outcome of a sync_client run that was waited for.
struct ClientRun {
  int code = -1;
  std::string out;
  std::string err;
  std::map<std::string, uint64_t> stats;  // "key value" lines of --stats
  std::vector<std::string> quarantined;   // "  quarantined X" lines
  std::vector<std::string> repaired;      // "  repaired X" lines
  std::string description;                // for failure messages
};
ClientRun ParseClientOutput(Process& p);

// The state of a slot's index, read through Index::OpenReadOnly (any
// process may be writing it).
struct IndexState {
  uint64_t lsn = 0;
  uint64_t epoch = 0;
  uint64_t seen_epoch = 0;
  uint64_t log_start_lsn = 0;
  Digest digest;                                  // from the running sums
  Digest row_digest;                              // recomputed from the message rows
  std::map<std::string, Quarantine> quarantined;  // by mailbox id
  std::map<std::string, uint64_t> messages;       // mailbox name -> messages (not expunged)
  std::string dump;                               // every mailbox and message row, in order
};
IndexState ReadIndex(const std::string& index_file);

// WaitFor(condition, timeout); when it times out, also the description of
// every watched process (taken then, for the failure message):
//   auto w = WaitWatching([&] { return f.InSync(); }, timeout, {client.get()});
//   INFO(w.processes);
//   REQUIRE(w.ok);
struct Waited {
  bool ok = false;
  std::string processes;
};
Waited WaitWatching(const std::function<bool()>& condition, absl::Duration timeout,
                    const std::vector<Process*>& watch);

// Runs SQL on a database with the SQLite C API (behind the engine's back).
void SqlExec(const std::string& db_file, const std::string& sql);

// n messages TestMessage(first..first+n-1, size) appended to mailbox.
void AppendMessages(Slot& slot, const std::string& mailbox, int first, int n, size_t size = 1000);

// A master slot (open in this process), a replica slot (closed, for a
// sync_server) and a secret file, in one temporary directory.
struct SyncFixture {
  explicit SyncFixture(SlotOptions master_options = {});
  TempDir dir;
  std::string master_dir;
  std::string replica_dir;
  std::string secret_file;
  std::unique_ptr<Slot> master;

  std::string master_index() const { return SlotPaths::Under(master_dir).index_file(); }
  std::string replica_index() const { return SlotPaths::Under(replica_dir).index_file(); }
  // The master's index file, once every acknowledged write is in it.
  IndexState Master() const {
    if (master) master->WaitApplied();
    return ReadIndex(master_index());
  }
  IndexState Replica() const { return ReadIndex(replica_index()); }
  // Whether the replica has the master's LSN and digest (and same rows).
  bool InSync() const;

  std::vector<std::string> ClientArgs(const ServerProcess& server,
                                      std::vector<std::string> extra = {}) const;
  // Starts a sync_client (for rolling mode or to kill it).
  std::unique_ptr<Process> StartClient(const ServerProcess& server,
                                       std::vector<std::string> extra = {},
                                       std::vector<std::string> env = {}) const;
  // Runs a sync_client to its end (SIGKILLed and failed after timeout).
  ClientRun RunClient(const ServerProcess& server, std::vector<std::string> extra = {},
                      std::vector<std::string> env = {},
                      absl::Duration timeout = absl::Seconds(60)) const;
};

}  // namespace mailrepl::testing

#endif  // MAILREPL_TEST_SYNC_HARNESS_H_
