// Faults around the sync_client and sync_server binaries: processes killed
// mid-stream, a replica that diverged, wrong or exposed secrets, and bad
// input on the server's port (spoken from the test with a blocking socket).
// Every case checks what reached the replica's disk.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "proto/log.pb.h"
#include "proto/sync.pb.h"
#include "transport/auth.h"
#include "transport/frame_codec.h"
#include "transport/framed_connection.h"
#include "syncclient/protocol.h"
#include "test/sync_harness.h"

namespace mailrepl {
namespace {

using testing::AppendMessages;
using testing::ClientRun;
using testing::IndexState;
using testing::ParseClientOutput;
using testing::Process;
using testing::ServerProcess;
using testing::SyncFixture;
using testing::WaitFor;

// Generous: waits end as soon as their condition holds, and a busy disk can
// stall syncfs (snapshot import) for seconds.
constexpr absl::Duration kSyncTimeout = absl::Seconds(60);

// Appends to user/a from a second thread until stopped (or `cap` messages),
// as mail keeps arriving during a fault.
class BackgroundWriter {
 public:
  BackgroundWriter(Slot& slot, int cap)
      : thread_([this, &slot, cap] {
          for (int i = 0; i < cap && !stop_; ++i) {
            auto r =
                slot.Append({.mailbox = "user/a", .body = testing::TestMessage(1000 + i, 600)});
            (r.ok() ? appended_ : failed_)++;
          }
        }) {}
  ~BackgroundWriter() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int appended() const { return appended_; }
  int failed() const { return failed_; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> appended_{0};
  std::atomic<int> failed_{0};
  std::thread thread_;
};

TEST_CASE(
    "a rolling client reconnects by itself after its sync_server is killed or stopped "
    "mid-stream, and nothing acknowledged is lost",
    "[sync]") {
  const int sig = GENERATE(SIGKILL, SIGTERM);
  INFO("signal " << sig);
  SyncFixture f;
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  auto server = std::make_unique<ServerProcess>(f.replica_dir, f.secret_file);
  const uint16_t port = server->port();
  // Bootstrapped first, so that the rolling client streams records from its
  // first connection on (the fault hits the stream, not the snapshot).
  REQUIRE(f.RunClient(*server).code == 0);
  auto client = f.StartClient(*server, {"-r", "--stats", "-v"});
  BackgroundWriter writer(*f.master, 3000);
  {
    auto w = testing::WaitWatching([&] { return f.Replica().lsn >= 40; }, kSyncTimeout,
                                   {client.get(), &server->process()});
    INFO(w.processes);
    REQUIRE(w.ok);
  }
  server->process().Signal(sig);
  REQUIRE(server->process().Wait(absl::Seconds(10)) == (sig == SIGKILL ? 128 + SIGKILL : 0));
  const int appended_at_kill = writer.appended();
  // Whatever the replica had applied (and so could have acknowledged) when
  // it died is still there when it comes back.
  const uint64_t applied_at_kill = f.Replica().lsn;
  server = std::make_unique<ServerProcess>(f.replica_dir, f.secret_file, port);
  CHECK(f.Replica().lsn >= applied_at_kill);
  {
    auto w = testing::WaitWatching([&] { return f.Replica().lsn >= applied_at_kill + 40; },
                                   kSyncTimeout, {client.get(), &server->process()});
    INFO(w.processes);
    REQUIRE(w.ok);
  }
  writer.Stop();
  INFO("appended at kill " << appended_at_kill << ", in all " << writer.appended());
  REQUIRE(writer.failed() == 0);
  {
    auto w = testing::WaitWatching([&] { return f.InSync(); }, kSyncTimeout,
                                   {client.get(), &server->process()});
    INFO(w.processes);
    REQUIRE(w.ok);
  }
  CHECK(f.Replica().messages["user/a"] == static_cast<uint64_t>(writer.appended()));
  CHECK(client->Running());
  client->Signal(SIGTERM);
  REQUIRE(client->Wait(absl::Seconds(10)) == 0);
  ClientRun run = ParseClientOutput(*client);
  INFO(run.description);
  CHECK(run.stats["connects"] >= 2);
  CHECK(run.stats["replica_acked_lsn"] == f.master->last_lsn());
  CHECK(server->Stop() == 0);
}

TEST_CASE("after a sync_client is killed mid-stream, a new one completes the catch-up", "[sync]") {
  SyncFixture f;
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  ServerProcess server(f.replica_dir, f.secret_file);
  REQUIRE(f.RunClient(server).code == 0);  // bootstrapped: the kill hits the stream
  auto client = f.StartClient(server, {"-r"});
  BackgroundWriter writer(*f.master, 3000);
  {
    auto w = testing::WaitWatching([&] { return f.Replica().lsn >= 40; }, kSyncTimeout,
                                   {client.get(), &server.process()});
    INFO(w.processes);
    REQUIRE(w.ok);
  }
  client->Signal(SIGKILL);
  REQUIRE(client->Wait(absl::Seconds(5)) == 128 + SIGKILL);
  const uint64_t applied_at_kill = f.Replica().lsn;
  const int appended_at_kill = writer.appended();
  // Mail keeps arriving while no client runs.
  REQUIRE(WaitFor([&] { return writer.appended() >= appended_at_kill + 20; }, kSyncTimeout));
  writer.Stop();
  REQUIRE(writer.failed() == 0);
  CHECK(f.Replica().lsn >= applied_at_kill);

  ClientRun run = f.RunClient(server, {"--stats"});
  INFO(run.description);
  REQUIRE(run.code == 0);
  CHECK(run.stats["snapshots"] == 0);
  CHECK(f.InSync());
  CHECK(f.Replica().messages["user/a"] == static_cast<uint64_t>(writer.appended()));
  CHECK(server.Stop() == 0);
}

TEST_CASE(
    "a state-based resync while a rolling client streams leaves both working and the "
    "replica equal to the master",
    "[sync]") {
  SyncFixture f;
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  REQUIRE(f.master->CreateMailbox("user/b").ok());
  AppendMessages(*f.master, "user/b", 0, 5);
  ServerProcess server(f.replica_dir, f.secret_file);
  auto rolling = f.StartClient(server, {"-r", "--stats"});
  BackgroundWriter writer(*f.master, 3000);
  {
    auto w = testing::WaitWatching([&] { return f.Replica().lsn >= 20; }, kSyncTimeout,
                                   {rolling.get(), &server.process()});
    INFO(w.processes);
    REQUIRE(w.ok);
  }
  std::vector<ClientRun> resyncs;
  for (const char* mode : {"-u", "-A", "-m"}) {
    std::vector<std::string> args = {mode};
    if (std::string(mode) == "-u") args.push_back("a");
    if (std::string(mode) == "-m") args.push_back("user/a");
    args.push_back("--stats");
    resyncs.push_back(f.RunClient(server, args));
  }
  writer.Stop();
  REQUIRE(writer.failed() == 0);
  for (const ClientRun& run : resyncs) {
    INFO(run.description);
    CHECK(run.code == 0);
    // Master and replica were compared at the same LSN: nothing differed.
    CHECK(run.repaired.empty());
  }
  auto w = testing::WaitWatching([&] { return f.InSync(); }, kSyncTimeout,
                                 {rolling.get(), &server.process()});
  INFO(w.processes);
  CHECK(w.ok);
  CHECK(rolling->Running());
  CHECK(f.Replica().quarantined.empty());
  CHECK(f.Replica().messages["user/a"] == static_cast<uint64_t>(writer.appended()));
  rolling->Signal(SIGTERM);
  CHECK(rolling->Wait(absl::Seconds(10)) == 0);
  CHECK(server.Stop() == 0);
}

TEST_CASE("a replica that wrote records of its own is refused, not overwritten", "[sync]") {
  SyncFixture f;
  REQUIRE(f.master->BeginEpoch(1).ok());
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  AppendMessages(*f.master, "user/a", 0, 5);
  const uint64_t fork = f.master->last_lsn();
  {
    ServerProcess server(f.replica_dir, f.secret_file);
    REQUIRE(f.RunClient(server).code == 0);
    REQUIRE(f.InSync());
    REQUIRE(server.Stop() == 0);
  }
  {
    // The replica acts as master of epoch 2 for a while.
    auto replica = testing::ReopenSlot(f.replica_dir);
    REQUIRE(replica->BeginEpoch(2).ok());
    AppendMessages(*replica, "user/a", 500, 2);
  }
  const IndexState diverged = f.Replica();
  REQUIRE(diverged.lsn == fork + 3);

  SECTION("the old master, still at epoch 1, is refused as stale") {
    AppendMessages(*f.master, "user/a", 100, 3);
    ServerProcess server(f.replica_dir, f.secret_file);
    ClientRun run = f.RunClient(server);
    INFO(run.description);
    CHECK(run.code == 2);
    CHECK(absl::StrContains(run.err, "master epoch 1 is older than epoch 2"));
    CHECK(server.Stop() == 0);
  }
  SECTION("a master of a newer epoch finds the fork point and refuses to overwrite") {
    REQUIRE(f.master->BeginEpoch(3).ok());
    AppendMessages(*f.master, "user/a", 100, 3);
    ServerProcess server(f.replica_dir, f.secret_file);
    ClientRun run = f.RunClient(server);
    INFO(run.description);
    CHECK(run.code == 2);
    CHECK(absl::StrContains(run.err, absl::StrCat("diverged after LSN ", fork, " ")));
    // A rolling client gives up too: retrying cannot help.
    ClientRun rolling = f.RunClient(server, {"-r"});
    INFO(rolling.description);
    CHECK(rolling.code == 2);
    CHECK(absl::StrContains(rolling.err, absl::StrCat("diverged after LSN ", fork, " ")));
    CHECK(server.Stop() == 0);
  }
  const IndexState after = f.Replica();
  CHECK(after.lsn == diverged.lsn);
  CHECK(after.digest == diverged.digest);
  CHECK(after.dump == diverged.dump);
}

TEST_CASE("a client with the wrong secret is refused and logged, and the server keeps serving",
          "[sync]") {
  SyncFixture f;
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  AppendMessages(*f.master, "user/a", 0, 5);
  ServerProcess server(f.replica_dir, f.secret_file);
  const std::string wrong = f.dir.Sub("wrong-secret");
  testing::WriteSecret(wrong, "not the secret the server has");
  const std::vector<std::string> args = {testing::Bin("sync_client"),
                                         "--slot",
                                         f.master_dir,
                                         "--server",
                                         server.address(),
                                         "--secret-file",
                                         wrong};
  for (bool rolling : {false, true}) {
    INFO("rolling " << rolling);
    std::vector<std::string> a = args;
    if (rolling) a.push_back("-r");  // retrying cannot help: it gives up too
    Process client(a);
    CHECK(client.Wait(absl::Seconds(10)) == 2);
    INFO(client.Describe());
    CHECK(absl::StrContains(client.Stderr(), "authentication failed"));
  }
  CHECK(
      absl::StrContains(server.process().Stderr(), "sync authentication failed peer=<127.0.0.1:"));
  CHECK(f.Replica().lsn == 0);

  ClientRun good = f.RunClient(server);
  INFO(good.description);
  CHECK(good.code == 0);
  CHECK(f.InSync());
  CHECK(server.Stop() == 0);
}

TEST_CASE("a secret file readable by group or others makes both binaries refuse to start",
          "[sync]") {
  SyncFixture f;
  const mode_t mode = GENERATE(0640, 0604, 0644);
  INFO("mode " << std::oct << mode);
  const std::string exposed = f.dir.Sub("exposed-secret");
  testing::WriteSecret(exposed, testing::kTestSecret, mode);
  Process server({testing::Bin("sync_server"), "--slot", f.replica_dir, "--listen", "127.0.0.1:0",
                  "--secret-file", exposed});
  Process client({testing::Bin("sync_client"), "--slot", f.master_dir, "--server", "127.0.0.1:1",
                  "--secret-file", exposed});
  for (Process* p : {&server, &client}) {
    CHECK(p->Wait(absl::Seconds(10)) == 2);
    INFO(p->Describe());
    CHECK(absl::StrContains(p->Stderr(), "chmod 600"));
    CHECK(!absl::StrContains(p->Stderr(), "listening"));
  }
}

// A peer that speaks the protocol from the test, with a blocking socket.
class RawPeer {
 public:
  explicit RawPeer(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    sockaddr_in local{};
    socklen_t len = sizeof local;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &len) == 0);
    address_ = absl::StrCat("127.0.0.1:", ntohs(local.sin_port));
  }
  ~RawPeer() { ::close(fd_); }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  // Our address as the server names it in its log.
  const std::string& address() const { return address_; }

  void SendBytes(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;  // the server may close first: that is its right
      off += static_cast<size_t>(n);
    }
  }
  void SendPayload(const std::string& payload) {
    std::string wire;
    REQUIRE(transport::EncodeFrame(payload, /*compress=*/false, &wire).ok());
    SendBytes(wire);
  }
  void Send(const syncpb::Frame& frame) { SendPayload(frame.SerializeAsString()); }
  void CloseWrite() { ::shutdown(fd_, SHUT_WR); }

  // The next frame; nullopt once the server closed the connection (or
  // nothing came within timeout: then closed() stays false).
  std::optional<syncpb::Frame> Read(absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      transport::DecodedFrame frame;
      std::string error;
      const transport::FrameResult r = reader_.Next(&frame, &error);
      if (r == transport::FrameResult::kGood) {
        syncpb::Frame parsed;
        REQUIRE(parsed.ParseFromString(frame.payload));
        return parsed;
      }
      REQUIRE(r == transport::FrameResult::kNeedMore);
      if (closed_) return std::nullopt;
      const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (left <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char buf[1 << 16];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = true;
      } else {
        reader_.Feed(absl::string_view(buf, static_cast<size_t>(n)));
      }
    }
  }
  // Reads until the server closes; true if it did within timeout.
  bool WaitClosed(absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!closed_ && absl::Now() < deadline) Read(deadline - absl::Now());
    return closed_;
  }
  bool closed() const { return closed_; }

  // Reads the server hello and answers with a client hello authenticated
  // with `secret`; returns the server's answer (a welcome or an error).
  struct Hello {
    uint32_t major = sync::kProtocolMajor;
    std::string cluster_id = "test";
    uint64_t store_id = 1;
    uint64_t epoch = 0;
  };
  std::optional<syncpb::Frame> Authenticate(const Hello& h) {
    auto server_hello = Read();
    REQUIRE(server_hello.has_value());
    REQUIRE(server_hello->has_server_hello());
    const std::string mine = transport::NewChallenge();
    syncpb::Frame f;
    auto* ch = f.mutable_client_hello();
    ch->mutable_version()->set_major(h.major);
    ch->mutable_version()->set_minor(0);
    ch->set_challenge(mine);
    ch->set_response(transport::AuthResponse(testing::kTestSecret, transport::kClientRole,
                                        sync::AuthContext(h.cluster_id, h.store_id),
                                        server_hello->server_hello().challenge(), mine));
    ch->set_cluster_id(h.cluster_id);
    ch->set_store_id(h.store_id);
    ch->set_slot_id(7);
    ch->set_epoch(h.epoch);
    ch->set_mode(syncpb::STREAM);
    Send(f);
    return Read();
  }

 private:
  int fd_ = -1;
  std::string address_;
  transport::FrameReader reader_{false};
  bool closed_ = false;
};

TEST_CASE("bad input on the server port changes nothing and closes only that connection",
          "[sync]") {
  SyncFixture f;
  REQUIRE(f.master->BeginEpoch(3).ok());
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  AppendMessages(*f.master, "user/a", 0, 5);
  ServerProcess server(f.replica_dir, f.secret_file);
  // A good session stays connected through all of it.
  auto rolling = f.StartClient(server, {"-r", "--stats"});
  {
    auto w = testing::WaitWatching([&] { return f.InSync(); }, kSyncTimeout,
                                   {rolling.get(), &server.process()});
    INFO(w.processes);
    REQUIRE(w.ok);
  }
  const IndexState before = f.Replica();
  REQUIRE(before.seen_epoch == 3);

  RawPeer peer(server.port());
  std::optional<syncpb::ErrorCode> expected_error;
  std::string expected_reason;

  SECTION("garbage bytes") {
    REQUIRE(peer.Read().value().has_server_hello());
    peer.SendBytes(std::string("\x20\x00\x00\x00\x00\xde\xad\xbe\xef", 9) +
                   std::string(32, '\x5a'));
    expected_error = syncpb::BAD_FRAME;
    expected_reason = "checksum mismatch";
  }
  SECTION("a truncated frame, then the connection closes") {
    REQUIRE(peer.Read().value().has_server_hello());
    std::string wire;
    REQUIRE(transport::EncodeFrame(std::string(100, 'x'), false, &wire).ok());
    peer.SendBytes(wire.substr(0, 40));
    peer.CloseWrite();
    expected_reason = "closed";
  }
  SECTION("a header declaring a frame over the size limit") {
    REQUIRE(peer.Read().value().has_server_hello());
    std::string header(9, '\0');
    const uint32_t length = transport::kMaxFramePayload + 1;
    for (int i = 0; i < 4; ++i) header[i] = static_cast<char>(length >> (8 * i));
    peer.SendBytes(header);
    expected_error = syncpb::BAD_FRAME;
    expected_reason = "exceeds the limit";
  }
  SECTION("a frame of an unknown message type after an authenticated hello") {
    auto welcome = peer.Authenticate({.epoch = 3});
    REQUIRE(welcome.has_value());
    REQUIRE(welcome->has_welcome());
    CHECK(welcome->welcome().last_lsn() == before.lsn);
    // A Frame holding only field 99 (length-delimited, 1 byte).
    peer.SendPayload(std::string("\x9a\x06\x01x", 4));
    expected_error = syncpb::BAD_FRAME;
    expected_reason = "unknown message type";
  }
  SECTION("a record that could never apply, after an authenticated hello") {
    struct BadRecord {
      uint32_t type;
      std::string payload;
      std::string reason;
    };
    logpb::BeginEpoch same_epoch;
    same_epoch.set_epoch(3);
    same_epoch.set_previous_epoch(3);
    const BadRecord bad = GENERATE_COPY(values<BadRecord>({
        {1, std::string("\xff\xff\xff", 3), "(CREATE) does not parse"},
        {7, std::string("\xff\xff\xff", 3), "(QUOTA) does not parse"},
        {8, std::string("\xff\xff\xff", 3), "(EPOCH) does not parse"},
        {4, "", "(APPEND) names no mailbox"},
        {8, same_epoch.SerializeAsString(), "(EPOCH) does not start an epoch above epoch 3"},
    }));
    INFO("record type " << bad.type);
    auto welcome = peer.Authenticate({.epoch = 3});
    REQUIRE(welcome.has_value());
    REQUIRE(welcome->has_welcome());
    syncpb::Frame records;
    auto* r = records.mutable_records()->add_records();
    r->set_lsn(before.lsn + 1);
    r->set_epoch(3);
    r->set_type(bad.type);
    r->set_payload(bad.payload);
    peer.Send(records);
    expected_error = syncpb::BAD_FRAME;
    expected_reason = bad.reason;
  }
  SECTION("records that do not continue the replica's log are refused by cause") {
    struct Case {
      const char* what;
      uint64_t lsn_after_last;  // 1: the next LSN; 0: one the replica holds
      uint64_t epoch;
      syncpb::ErrorCode code;
      std::string reason;
    };
    const Case c = GENERATE_COPY(values<Case>({
        {"an LSN gap", 2, 3, syncpb::GAP, "needs LSN"},
        {"an epoch older than the replica's records", 1, 2, syncpb::STALE_EPOCH,
         "older than epoch 3 of this replica's records"},
        {"a record the replica holds, of another epoch", 0, 2, syncpb::RECORDS_DIFFER,
         "differs from this replica's record of epoch 3"},
    }));
    INFO(c.what);
    auto welcome = peer.Authenticate({.epoch = 3});
    REQUIRE(welcome.has_value());
    REQUIRE(welcome->has_welcome());
    logpb::CreateMailbox create;
    create.set_mailbox_id("m-gap");
    create.set_name("user/gap");
    syncpb::Frame records;
    auto* r = records.mutable_records()->add_records();
    r->set_lsn(before.lsn + c.lsn_after_last);
    r->set_epoch(c.epoch);
    r->set_type(1);  // CREATE
    r->set_payload(create.SerializeAsString());
    peer.Send(records);
    auto reply = peer.Read();
    REQUIRE(reply.has_value());
    INFO(reply->ShortDebugString());
    REQUIRE(reply->has_error());
    CHECK(reply->error().code() == c.code);
    if (c.code == syncpb::GAP) CHECK(reply->error().lsn() == before.lsn);
    if (c.code == syncpb::STALE_EPOCH) CHECK(reply->error().epoch() == 3);
    expected_reason = c.reason;
  }
  SECTION("a wrong major protocol version") {
    auto reply = peer.Authenticate({.major = sync::kProtocolMajor + 1, .epoch = 9});
    REQUIRE(reply.has_value());
    REQUIRE(reply->has_error());
    CHECK(reply->error().code() == syncpb::PROTOCOL_VERSION);
    expected_reason = "is not supported";
  }
  SECTION("a stale epoch") {
    auto reply = peer.Authenticate({.epoch = 2});
    REQUIRE(reply.has_value());
    REQUIRE(reply->has_error());
    CHECK(reply->error().code() == syncpb::STALE_EPOCH);
    CHECK(reply->error().epoch() == 3);
    expected_reason = "older than epoch 3";
  }
  SECTION("a wrong store id") {
    auto reply = peer.Authenticate({.store_id = 2, .epoch = 9});
    REQUIRE(reply.has_value());
    REQUIRE(reply->has_error());
    CHECK(reply->error().code() == syncpb::WRONG_STORE);
    expected_reason = "not cluster test store 2";
  }
  if (expected_error.has_value()) {
    auto reply = peer.Read();
    REQUIRE(reply.has_value());
    INFO(reply->ShortDebugString());
    INFO(server.process().Describe());
    REQUIRE(reply->has_error());
    CHECK(reply->error().code() == *expected_error);
  }
  CHECK(peer.WaitClosed());
  {
    const std::string line_start = absl::StrCat("peer=<", peer.address(), ">");
    auto w = testing::WaitWatching(
        [&] {
          for (absl::string_view line : absl::StrSplit(server.process().Stderr(), '\n')) {
            if (absl::StrContains(line, line_start) && absl::StrContains(line, expected_reason)) {
              return true;
            }
          }
          return false;
        },
        absl::Seconds(10), {&server.process()});
    INFO(w.processes);
    CHECK(w.ok);
  }
  const IndexState after = f.Replica();
  CHECK(after.lsn == before.lsn);
  CHECK(after.digest == before.digest);
  CHECK(after.dump == before.dump);
  CHECK(after.seen_epoch == before.seen_epoch);

  // The session that was already connected kept working, and new ones work.
  AppendMessages(*f.master, "user/a", 100, 3);
  {
    auto w = testing::WaitWatching([&] { return f.InSync(); }, kSyncTimeout,
                                   {rolling.get(), &server.process()});
    INFO(w.processes);
    REQUIRE(w.ok);
  }
  rolling->Signal(SIGTERM);
  REQUIRE(rolling->Wait(absl::Seconds(10)) == 0);
  ClientRun rolled = ParseClientOutput(*rolling);
  INFO(rolled.description);
  CHECK(rolled.stats["connects"] == 1);
  AppendMessages(*f.master, "user/a", 200, 3);
  ClientRun fresh = f.RunClient(server);
  INFO(fresh.description);
  CHECK(fresh.code == 0);
  CHECK(f.InSync());
  CHECK(server.Stop() == 0);
}

TEST_CASE("a master superseded by a newer epoch during its session is refused mid-stream",
          "[sync]") {
  SyncFixture f;
  REQUIRE(f.master->BeginEpoch(3).ok());
  REQUIRE(f.master->CreateMailbox("user/a").ok());
  AppendMessages(*f.master, "user/a", 0, 3);
  ServerProcess server(f.replica_dir, f.secret_file);
  auto old_master = f.StartClient(server, {"-r"});
  {
    auto w = testing::WaitWatching([&] { return f.InSync(); }, kSyncTimeout,
                                   {old_master.get(), &server.process()});
    INFO(w.processes);
    REQUIRE(w.ok);
  }
  // A master that begins an epoch itself keeps its session.
  REQUIRE(f.master->BeginEpoch(4).ok());
  AppendMessages(*f.master, "user/a", 50, 2);
  {
    auto w = testing::WaitWatching([&] { return f.InSync(); }, kSyncTimeout,
                                   {old_master.get(), &server.process()});
    INFO(w.processes);
    REQUIRE(w.ok);
    REQUIRE(old_master->Running());
  }
  const IndexState before = f.Replica();
  REQUIRE(before.epoch == 4);
  {
    // A new master (epoch 5) introduces itself to the replica.
    RawPeer new_master(server.port());
    auto welcome = new_master.Authenticate({.epoch = 5});
    REQUIRE(welcome.has_value());
    REQUIRE(welcome->has_welcome());
  }
  REQUIRE(WaitFor([&] { return f.Replica().seen_epoch == 5; }, kSyncTimeout));
  // The old master, its session still open, goes on writing at epoch 4.
  AppendMessages(*f.master, "user/a", 100, 3);
  const std::optional<int> code = old_master->Wait(kSyncTimeout);
  INFO(old_master->Describe());
  CHECK(code == 2);
  CHECK(absl::StrContains(old_master->Stderr(), "older than epoch 5"));
  const IndexState after = f.Replica();
  CHECK(after.lsn == before.lsn);
  CHECK(after.digest == before.digest);
  CHECK(server.Stop() == 0);
}

TEST_CASE("a frame over the size limit fails the connection instead of vanishing", "[sync]") {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io,
                                   asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  asio::ip::tcp::socket ours(io);
  asio::ip::tcp::socket theirs(io);
  ours.connect(acceptor.local_endpoint());
  acceptor.accept(theirs);
  auto conn = std::make_shared<transport::FramedConnection>(std::move(ours), "peer");
  conn->Start();
  syncpb::Frame huge;
  huge.mutable_snapshot_chunk()->set_data(std::string(transport::kMaxFramePayload + 1, 'x'));
  conn->Send(huge);
  absl::Status read = absl::UnknownError("not run");
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> { read = (co_await conn->Read(absl::Seconds(5))).status(); },
      asio::detached);
  io.run_for(std::chrono::seconds(10));
  CHECK(conn->closed());
  CHECK(read.code() == absl::StatusCode::kInternal);
  CHECK(absl::StrContains(read.message(), "exceeds the frame limit"));
}

}  // namespace
}  // namespace mailrepl
