#include "syncclient/sync_client.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <deque>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "asio/experimental/awaitable_operators.hpp"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/offload.h"
#include "common/status_macros.h"
#include "proto/log.pb.h"
#include "store/mailbox_name.h"
#include "store/snapshot.h"
#include "transport/auth.h"
#include "syncclient/fork_point.h"
#include "transport/framed_connection.h"
#include "syncclient/mailbox_compare.h"
#include "syncclient/master_source.h"
#include "syncclient/protocol.h"
#include "syncclient/refusal.h"
#include "syncclient/sync_session.h"

namespace mailrepl::sync {

using asio::awaitable;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;

namespace {

// Permanent failures end a rolling client too; others are retried.
bool Retryable(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kDeadlineExceeded ||
         s.code() == absl::StatusCode::kResourceExhausted;
}

std::string QuarantineText(const syncpb::QuarantinedMailbox& q) {
  return absl::StrCat(q.name(), " (LSN ", q.lsn(), ": ", q.reason(), ")");
}

}  // namespace

absl::Status Unexpected(const syncpb::Frame& f, const std::string& what, const std::string& peer,
                        SyncStats* stats) {
  if (f.has_error() && f.error().code() == syncpb::STALE_EPOCH) {
    stats->newer_epoch = std::max(stats->newer_epoch, f.error().epoch());
  }
  if (f.has_error()) return FromErrorFrame(f.error(), peer);
  return absl::UnavailableError(absl::StrCat("sync server ", peer, " sent frame type ",
                                             f.body_case(), " where ", what, " was expected"));
}


SyncClient::SyncClient(asio::io_context& io, SyncClientOptions options)
    : io_(io), options_(std::move(options)), stop_timer_(io) {
  if (options_.blocking) {
    blocking_ = *options_.blocking;
  } else {
    own_pool_ = std::make_unique<asio::thread_pool>(1);
    blocking_ = own_pool_->get_executor();
  }
}

SyncClient::~SyncClient() {
  // The slot's files are closed on a worker too (a view's read transaction,
  // the log reader), before the pool goes.
  if (source_) {
    asio::post(blocking_, [source = std::move(source_)]() mutable { source.reset(); });
  }
  if (own_pool_) own_pool_->join();
}

uint64_t SyncClient::wire_bytes_now() const {
  return stats_.wire_bytes + (current_ ? current_->bytes_sent() : 0);
}

void SyncClient::Poke(uint64_t durable_lsn) {
  poked_ = true;
  poked_lsn_ = std::max(poked_lsn_, durable_lsn);
  if (wake_ != nullptr) wake_->cancel();
}

void SyncClient::Heard() {
  stats_.last_heard = absl::Now();
  stats_.connected = true;
  if (options_.on_progress) options_.on_progress();
}

void SyncClient::Stop() {
  stopping_ = true;
  stop_timer_.cancel();
  if (current_) {
    // The sender notices at its next wake-up; poke it.
    current_->Send([] {
      syncpb::Frame f;
      f.mutable_heartbeat();
      return f;
    }());
  }
}

awaitable<absl::Status> SyncClient::Run() {
  auto source = co_await Offload(blocking_, [&] {
    return MasterSource::Open(options_.slot, io_.get_executor(), !options_.poked_on_commit);
  });
  if (!source.ok()) co_return source.status();
  source_ = std::move(*source);
  auto target = co_await Offload(blocking_, [&] { return source_->DurableLsn(); });
  if (!target.ok()) co_return target.status();
  catch_up_target_ = *target;
  absl::Duration backoff = options_.backoff_min;
  for (;;) {
    const uint64_t connects_before = stats_.connects;
    absl::Status s = co_await RunOnce();
    if (stats_.connects > connects_before) backoff = options_.backoff_min;
    if (current_) {
      stats_.wire_bytes += current_->bytes_sent();  // every mode, every connection
      current_->Close();
    }
    current_.reset();
    stats_.connected = false;
    if (s.ok() || stopping_) co_return s;
    const bool rolling = options_.mode == SyncClientOptions::Mode::kRolling;
    if (!rolling || !Retryable(s)) co_return s;
    LogLine(Severity::kWarning, "sync connection lost; retrying",
            Kv("server", options_.server) + Kv("error", s.message()) +
                Kv("retry_in", absl::FormatDuration(backoff)));
    stop_timer_.expires_after(absl::ToChronoNanoseconds(backoff));
    asio::error_code ec;
    co_await stop_timer_.async_wait(asio::redirect_error(use_awaitable, ec));
    if (stopping_) co_return absl::OkStatus();
    backoff = std::min(backoff * 2, options_.backoff_max);
  }
}

awaitable<absl::StatusOr<SyncClient::MasterPosition>> SyncClient::Position() {
  co_return co_await Offload(blocking_, [&]() -> absl::StatusOr<MasterPosition> {
    ASSIGN_OR_RETURN(std::unique_ptr<Index> view, source_->View(Index::ViewScope::kPosition));
    return MasterPosition{.applied_lsn = view->applied_lsn(),
                          .applied_epoch = view->applied_epoch(),
                          .log_start_lsn = view->log_start_lsn(),
                          .epoch_history = view->epoch_history()};
  });
}

awaitable<absl::Status> SyncClient::RunOnce() {
  Session s;
  s.wake = std::make_unique<asio::steady_timer>(io_);
  absl::Status hs = co_await Handshake(s);
  if (!hs.ok()) co_return hs;
  ++stats_.connects;
  switch (options_.mode) {
    case SyncClientOptions::Mode::kCatchUp:
      co_return co_await Stream(s, catch_up_target_, /*follow=*/false);
    case SyncClientOptions::Mode::kRolling:
      co_return co_await Stream(s, 0, /*follow=*/true);
    case SyncClientOptions::Mode::kReplayFile:
      co_return co_await ReplayFile(s);
    case SyncClientOptions::Mode::kCheck:
      co_return co_await Check(s);
    default:
      co_return co_await Resync(s);
  }
}

awaitable<absl::Status> SyncClient::Handshake(Session& s) {
  auto endpoint = transport::ParseEndpoint(options_.server);
  if (!endpoint.ok()) co_return endpoint.status();
  asio::ip::tcp::socket socket(io_);
  asio::steady_timer deadline(io_, std::chrono::seconds(5));
  asio::error_code ec, timer_ec;  // a cancelled wait must not throw
  auto connected = co_await (socket.async_connect(*endpoint, asio::redirect_error(use_awaitable, ec)) ||
                             deadline.async_wait(asio::redirect_error(use_awaitable, timer_ec)));
  if (connected.index() == 1 || ec) {
    co_return absl::UnavailableError(absl::StrCat(
        "cannot connect to sync server ", options_.server, ": ",
        connected.index() == 1 ? "timed out" : ec.message()));
  }
  s.conn = std::make_shared<FramedConnection>(std::move(socket), options_.server);
  s.conn->Start();
  current_ = s.conn;

  auto hello = co_await s.conn->Read(kHelloTimeout);
  if (!hello.ok()) co_return hello.status();
  if (!hello->has_server_hello()) co_return Unexpected(*hello, "a server hello", options_.server, &stats_);
  const syncpb::ServerHello& sh = hello->server_hello();
  if (sh.version().major() != kProtocolMajor) {
    co_return absl::FailedPreconditionError(
        absl::StrCat("sync server ", options_.server, " speaks protocol ", sh.version().major(),
                     ".", sh.version().minor(), "; this client speaks ", kProtocolMajor, ".x"));
  }
  // The handshake needs the master's position only (not its mailboxes).
  auto view = co_await Position();
  if (!view.ok()) co_return view.status();
  const SlotIdentity& id = source_->identity();
  const std::string context = AuthContext(id.cluster_id, id.store_id);
  syncpb::Frame ch;
  syncpb::ClientHello* h = ch.mutable_client_hello();
  *h->mutable_version() = OurVersion();
  bool server_zstd = false;
  for (const auto& c : sh.capabilities()) server_zstd |= c == kCapabilityZstd;
  if (options_.compress && server_zstd) h->add_capabilities(kCapabilityZstd);
  for (const auto& c : sh.capabilities()) {
    if (c == kCapabilityCheck && options_.mode == SyncClientOptions::Mode::kCheck) {
      h->add_capabilities(kCapabilityCheck);
    }
  }
  const std::string challenge = transport::NewChallenge();
  h->set_challenge(challenge);
  h->set_response(transport::AuthResponse(options_.secret, "client", context, sh.challenge(), challenge));
  h->set_cluster_id(id.cluster_id);
  h->set_store_id(id.store_id);
  h->set_slot_id(id.slot_id);
  h->set_epoch(view->applied_epoch);
  h->set_mode(options_.mode == SyncClientOptions::Mode::kCatchUp ||
                      options_.mode == SyncClientOptions::Mode::kRolling ||
                      options_.mode == SyncClientOptions::Mode::kReplayFile
                  ? syncpb::STREAM
                  : syncpb::RESYNC);
  s.conn->Send(ch);

  auto reply = co_await s.conn->Read(kHelloTimeout);
  if (!reply.ok()) co_return reply.status();
  if (!reply->has_welcome()) co_return Unexpected(*reply, "a welcome", options_.server, &stats_);
  const syncpb::Welcome& w = reply->welcome();
  if (!transport::ResponsesEqual(w.response(),
                      transport::AuthResponse(options_.secret, "server", context, challenge, sh.challenge()))) {
    co_return absl::PermissionDeniedError(absl::StrCat(
        "sync server ", options_.server, " failed to prove it knows the shared secret"));
  }
  for (const auto& c : w.capabilities()) {
    if (c == kCapabilityZstd) s.conn->EnableCompression();
    if (c == kCapabilityCheck) s.check_capable = true;
  }
  s.replica_slot = w.slot_id();
  s.replica_last = w.last_lsn();
  Heard();
  for (const auto& e : w.epoch_history()) s.replica_history.push_back({e.epoch(), e.first_lsn()});
  stats_.quarantined.clear();
  for (const auto& q : w.quarantined()) stats_.quarantined.push_back(QuarantineText(q));

  // Where do the two logs part? A replica holding records past that point
  // was a master once: never overwrite them silently. The master's view is
  // taken again now: another client of this master (a rolling one next to a
  // resync) may have brought the replica past the view of the hello, and a
  // replica ahead of a stale view is not one that diverged.
  // In replicad, records ship once durable, before the master's index has
  // them: a replica that holds everything the view holds and more may be
  // ahead of the view, not diverged, so the view is taken again (for up to
  // 2 s) until the index catches up. A diverged replica is only told 2 s
  // later.
  LogPosition replica{s.replica_last, s.replica_history};
  uint64_t fork = 0;
  for (absl::Time give_up = absl::Now() + absl::Seconds(2);;) {
    view = co_await Position();
    if (!view.ok()) co_return view.status();
    fork = ForkPoint(LogPosition{view->applied_lsn, view->epoch_history}, replica);
    const bool index_behind = view->applied_lsn < s.replica_last && fork == view->applied_lsn;
    if (s.replica_last <= fork || !index_behind || absl::Now() > give_up) break;
    asio::steady_timer pause(io_, std::chrono::milliseconds(10));
    co_await pause.async_wait(use_awaitable);
  }
  if (s.replica_last > fork) {
    std::string msg = absl::StrCat("replica ", options_.server, " diverged after LSN ", fork,
                                   " (it holds up to LSN ", s.replica_last,
                                   " from another history); salvage it before it can follow");
    syncpb::Frame e = ErrorFrame(syncpb::DIVERGED, msg);
    e.mutable_error()->set_lsn(fork);
    s.conn->Send(e);
    (co_await s.conn->Flush(absl::Seconds(2))).IgnoreError();  // the session ends either way
    co_return absl::FailedPreconditionError(msg);
  }
  s.next = s.replica_last + 1;
  s.acked = s.replica_last;
  stats_.acked_lsn = s.acked;
  const bool needs_snapshot = s.next < view->log_start_lsn ||
                              (s.replica_last == 0 && view->applied_lsn > 0);
  if (needs_snapshot && options_.mode != SyncClientOptions::Mode::kReplayFile) {
    absl::Status snap = co_await SendSnapshot(s);
    if (!snap.ok()) co_return snap;
  }
  if (options_.verbose) {
    LogLine(Severity::kInfo, "sync connected",
            Kv("server", options_.server) + Kv("replica_lsn", s.replica_last) +
                Kv("next_lsn", s.next));
  }
  co_return absl::OkStatus();
}

awaitable<absl::Status> SyncClient::SendSnapshot(Session& s) {
  // Built on a worker: the view reads every mailbox and message row.
  uint64_t lsn = 0;
  auto contents = co_await Offload(blocking_, [&]() -> absl::StatusOr<std::string> {
    ASSIGN_OR_RETURN(std::unique_ptr<Index> view, source_->View());
    const char* tmpdir = getenv("TMPDIR");
    std::string path = absl::StrCat(tmpdir ? tmpdir : "/tmp", "/mailrepl-snapshot-XXXXXX");
    int fd = ::mkstemp(path.data());
    if (fd < 0) return ErrnoStatus(errno, "mkstemp", path);
    ::close(fd);
    absl::Status w = WriteSnapshot(*view, nullptr, source_->identity(), path);
    lsn = view->applied_lsn();
    view.reset();
    auto read = w.ok() ? ReadFile(path) : absl::StatusOr<std::string>(w);
    ::unlink(path.c_str());
    return read;
  });
  if (!contents.ok()) co_return contents.status();

  syncpb::Frame begin;
  begin.mutable_snapshot_begin()->set_lsn(lsn);
  begin.mutable_snapshot_begin()->set_bytes(contents->size());
  s.conn->Send(begin);
  constexpr size_t kChunk = 1 << 20;
  for (size_t off = 0; off < contents->size(); off += kChunk) {
    syncpb::Frame c;
    c.mutable_snapshot_chunk()->set_data(contents->substr(off, kChunk));
    s.conn->Send(c);
    if (s.conn->queued_bytes() > options_.window_bytes) {
      absl::Status f = co_await s.conn->Flush(kDeadPeerTimeout);
      if (!f.ok()) co_return f;
    }
  }
  syncpb::Frame end;
  end.mutable_snapshot_end();
  s.conn->Send(end);
  // The replica asks for the bodies it lacks, then acknowledges the snapshot.
  for (;;) {
    auto f = co_await s.conn->Read(absl::Seconds(120));
    if (!f.ok()) co_return f.status();
    if (f->has_body_request()) {
      std::vector<std::string> guids(f->body_request().guids().begin(),
                                     f->body_request().guids().end());
      absl::Status b = co_await SendBodies(s, guids);
      if (!b.ok()) co_return b;
      continue;
    }
    if (f->has_heartbeat()) continue;
    if (!f->has_ack()) co_return Unexpected(*f, "a snapshot acknowledgement", options_.server, &stats_);
    if (f->ack().lsn() != lsn) {
      co_return absl::UnavailableError(absl::StrCat("replica acknowledged LSN ", f->ack().lsn(),
                                                    " for a snapshot at LSN ", lsn));
    }
    break;
  }
  ++stats_.snapshots;
  s.replica_last = s.acked = lsn;
  s.next = lsn + 1;
  stats_.acked_lsn = lsn;
  LogLine(Severity::kInfo, "sync snapshot installed",
          Kv("server", options_.server) + Kv("lsn", lsn) + Kv("bytes", contents->size()));
  co_return absl::OkStatus();
}

awaitable<absl::Status> SyncClient::SendBodies(Session& s, const std::vector<std::string>& guids) {
  // Bodies are read on a worker, one frame's worth (4 MiB) at a time.
  constexpr size_t kFrameBytes = 4u << 20;
  std::vector<std::string> not_in_spool;  // recent bodies: still only in the log
  size_t next = 0;
  auto send = [&](syncpb::Frame& f) -> awaitable<absl::Status> {
    stats_.bodies_sent += f.bodies().bodies_size();
    s.conn->Send(f);
    if (s.conn->queued_bytes() > options_.window_bytes) {
      co_return co_await s.conn->Flush(kDeadPeerTimeout);
    }
    co_return absl::OkStatus();
  };
  while (next < guids.size()) {
    syncpb::Frame f;
    absl::Status read = co_await Offload(blocking_, [&]() -> absl::Status {
      size_t bytes = 0;
      for (; next < guids.size() && bytes < kFrameBytes; ++next) {
        auto body = source_->ReadBody(guids[next]);
        if (absl::IsNotFound(body.status())) {
          not_in_spool.push_back(guids[next]);
          continue;
        }
        if (!body.ok()) return body.status();
        bytes += body->size();
        f.mutable_bodies()->add_bodies(std::move(*body));
      }
      return absl::OkStatus();
    });
    if (!read.ok()) co_return read;
    if (f.bodies().bodies_size() == 0) continue;
    if (absl::Status sent = co_await send(f); !sent.ok()) co_return sent;
  }
  syncpb::Frame last;
  if (!not_in_spool.empty()) {
    auto bodies = co_await Offload(blocking_, [&] { return source_->ReadBodiesFromLog(not_in_spool); });
    if (!bodies.ok()) co_return bodies.status();
    size_t bytes = 0;
    for (std::string& body : *bodies) {
      bytes += body.size();
      last.mutable_bodies()->add_bodies(std::move(body));
      if (bytes >= kFrameBytes) {
        if (absl::Status sent = co_await send(last); !sent.ok()) co_return sent;
        last.Clear();
        bytes = 0;
      }
    }
  }
  last.mutable_bodies()->set_last(true);
  stats_.bodies_sent += last.bodies().bodies_size();
  s.conn->Send(last);
  co_return absl::OkStatus();
}

awaitable<absl::Status> SyncClient::Stream(Session& s, uint64_t target, bool follow) {
  bool dead = false;
  bool finishing = false;  // Done was sent: the server closing is the expected end
  if (auto d = co_await Offload(blocking_, [&] { return source_->DurableLsn(); }); d.ok()) {
    stats_.master_lsn = *d;
  }
  // Receives acknowledgements; ends the session on any error.
  auto receiver = [&]() -> awaitable<absl::Status> {
    for (;;) {
      auto f = co_await s.conn->Read(kDeadPeerTimeout);
      // After Done, the server closing is the end an older server gives;
      // silence is not a confirmation.
      if (!f.ok() && finishing && !absl::IsDeadlineExceeded(f.status())) {
        co_return absl::OkStatus();
      }
      if (!f.ok()) {
        dead = true;
        co_return f.status();
      }
      if (f->has_done() && finishing) {
        co_return absl::OkStatus();  // everything sent is applied on the replica
      }
      if (f->has_ack()) {
        // A repeated ack (the quarantine changed) may name an older LSN.
        s.acked = std::max(s.acked, f->ack().lsn());
        stats_.acked_lsn = s.acked;
        while (!s.in_flight.empty() && s.in_flight.front().last_lsn <= s.acked) {
          s.in_flight_bytes -= s.in_flight.front().bytes;
          s.in_flight.pop_front();
        }
        stats_.quarantined.clear();
        for (const auto& q : f->ack().quarantined()) {
          stats_.quarantined.push_back(QuarantineText(q));
        }
        s.wake->cancel();
        Heard();
      } else if (f->has_heartbeat()) {
        const syncpb::Heartbeat& hb = f->heartbeat();
        // Only a probe this client sent (none is newer than the last).
        if (hb.probe() != 0 && hb.vouch_ms() > 0 &&
            static_cast<int64_t>(hb.probe()) <= s.last_heartbeat_ns) {
          // The replica read our heartbeat no earlier than its probe, and
          // vouches from then on: counting from the probe is safe whatever
          // the answer's delay.
          stats_.vouched_until_ns =
              std::max(stats_.vouched_until_ns, static_cast<int64_t>(hb.probe()) +
                                                    int64_t{hb.vouch_ms()} * 1'000'000);
        }
        Heard();
        continue;
      } else {
        dead = true;
        co_return Unexpected(*f, "an acknowledgement", options_.server, &stats_);
      }
    }
  };
  // Sends records in batches within the flow-control window.
  auto sender = [&]() -> awaitable<absl::Status> {
    bool read_index = true;
    uint64_t index_durable = 0;
    for (;;) {
      if (dead) co_return absl::UnavailableError("connection lost");
      const bool finished = !follow && s.acked >= target;
      if ((stopping_ || finished) && s.in_flight.empty()) {
        syncpb::Frame done;
        done.mutable_done();
        finishing = true;
        s.conn->Send(done);
        absl::Status flushed = co_await s.conn->Flush(absl::Seconds(5));
        if (!flushed.ok()) co_return flushed;
        // The receiver ends the session when the replica answers Done
        // (or closes: an older server); only the deadline ends it here.
        asio::steady_timer deadline(io_, absl::ToChronoNanoseconds(kDeadPeerTimeout));
        asio::error_code ec;
        co_await deadline.async_wait(asio::redirect_error(use_awaitable, ec));
        co_return absl::DeadlineExceededError(absl::StrCat(
            "replica ", options_.server, " did not confirm within ",
            absl::FormatDuration(kDeadPeerTimeout), " that it applied what was sent"));
      }
      // The index's applied LSN is read at the start and after quiet
      // spells; in between, pokes tell of every commit once it is durable
      // (before the index has it), so no read of the index is needed.
      if (read_index || !options_.poked_on_commit) {
        auto applied = co_await Offload(blocking_, [&] { return source_->DurableLsn(); });
        if (!applied.ok()) co_return applied.status();
        index_durable = *applied;
        read_index = false;
      }
      const uint64_t durable =
          options_.poked_on_commit ? std::max(index_durable, poked_lsn_) : index_durable;
      stats_.master_lsn = durable;
      const uint64_t limit = follow ? durable : std::min(durable, target);
      // The batch is read from the log files on a worker.
      syncpb::Frame batch;
      size_t bytes = 0;
      if (!stopping_ && s.next <= limit && s.in_flight_bytes < options_.window_bytes) {
        uint64_t next = s.next, with_body = 0, without_body = 0;
        const size_t room = options_.window_bytes - s.in_flight_bytes;
        absl::Status read = co_await Offload(blocking_, [&]() -> absl::Status {
          while (next <= limit &&
                 batch.records().records_size() < static_cast<int>(options_.batch_records) &&
                 bytes < options_.batch_bytes && bytes < room) {
            ASSIGN_OR_RETURN(std::optional<LogRecord> rec, source_->ReadRecord(next, limit));
            if (!rec.has_value()) break;
            if (rec->type == RecordType::kAppend) {
              logpb::Append a;
              if (a.ParseFromString(rec->payload)) ++(a.has_body() ? with_body : without_body);
            }
            bytes += rec->payload.size();
            *batch.mutable_records()->add_records() = ToWire(*rec);
            ++next;
          }
          return absl::OkStatus();
        });
        if (!read.ok()) co_return read;
        s.next = next;
        stats_.bodies_sent += with_body;
        stats_.bodies_skipped += without_body;
      }
      // A heartbeat every interval, also while records stream: its answer
      // is how the replica vouches for this master's lease.
      if (BootNanos() - s.last_heartbeat_ns >= absl::ToInt64Nanoseconds(kHeartbeatInterval)) {
        syncpb::Frame hb;
        hb.mutable_heartbeat()->set_last_lsn(durable);
        s.last_heartbeat_ns = BootNanos();
        hb.mutable_heartbeat()->set_probe(s.last_heartbeat_ns);
        s.conn->Send(hb);
      }
      if (bytes > 0 || batch.records().records_size() > 0) {
        const auto& recs = batch.records().records();
        stats_.records += recs.size();
        stats_.record_bytes += bytes;
        s.in_flight.push_back({recs[recs.size() - 1].lsn(), bytes, absl::Now()});
        s.in_flight_bytes += bytes;
        s.conn->Send(batch);
        continue;
      }
      // Nothing to send now: wait for an ack, new records, or heartbeat time.
      stats_.lag_seconds =
          s.in_flight.empty() ? 0 : absl::ToDoubleSeconds(absl::Now() - s.in_flight.front().sent);
      if (poked_) {  // a commit happened since the durable LSN was read
        poked_ = false;
        continue;
      }
      // Until the next heartbeat is due, at the latest.
      s.wake->expires_after(std::chrono::nanoseconds(std::max<int64_t>(
          1'000'000, s.last_heartbeat_ns + absl::ToInt64Nanoseconds(kHeartbeatInterval) -
                         BootNanos())));
      asio::error_code ec;
      if (s.next <= limit) {
        // Window full: only an ack helps.
        co_await s.wake->async_wait(asio::redirect_error(use_awaitable, ec));
        read_index = !ec;  // the timer ran out (not woken by a poke or an ack)
      } else {
        auto woke = co_await (s.wake->async_wait(asio::redirect_error(use_awaitable, ec)) ||
                              source_->WaitForChange(kHeartbeatInterval));
        read_index = woke.index() == 1 || !ec;
      }
    }
  };
  wake_ = s.wake.get();
  auto result = co_await (sender() || receiver());
  wake_ = nullptr;
  absl::Status s1 = std::visit([](auto&& st) { return absl::Status(st); }, result);
  co_return s1;
}

awaitable<absl::StatusOr<SyncClient::CommonPoint>> SyncClient::MeetAtCommonLsn(
    Session& s, const syncpb::DigestRequest& request, Index::ViewScope scope) {
  auto request_digests = [&]() -> awaitable<absl::StatusOr<syncpb::DigestReply>> {
    syncpb::Frame req;
    *req.mutable_digest_request() = request;
    s.conn->Send(req);
    auto reply = co_await s.conn->Read(absl::Seconds(120));
    if (!reply.ok()) co_return reply.status();
    if (!reply->has_digest_reply()) co_return Unexpected(*reply, "digests", options_.server, &stats_);
    co_return reply->digest_reply();
  };
  // From the first digest request on, the server lets no other session
  // (a rolling client) change the replica until this one ends, so the
  // replica's LSN in the reply holds still.
  auto first = co_await request_digests();
  if (!first.ok()) co_return first.status();
  const uint64_t replica_lsn = first->lsn();
  // Compare at a common LSN: the master's view holds still while it is
  // open; bring the replica to exactly its LSN (one batch at a time;
  // resyncs and checks are not the bulk path).
  auto view = co_await Offload(blocking_, [&] { return source_->View(scope); });
  if (!view.ok()) co_return view.status();
  const uint64_t at = (*view)->applied_lsn();
  stats_.master_lsn = at;
  if (replica_lsn > at) {
    co_return absl::UnavailableError(absl::StrCat("replica ", options_.server, " is at LSN ",
                                                  replica_lsn, ", ahead of the master's LSN ",
                                                  at, "; retry"));
  }
  s.next = replica_lsn + 1;
  s.acked = replica_lsn;
  while (s.acked < at) {
    syncpb::Frame batch;
    absl::Status read = co_await Offload(blocking_, [&]() -> absl::Status {
      size_t bytes = 0;
      while (s.next <= at && bytes < options_.batch_bytes) {
        ASSIGN_OR_RETURN(std::optional<LogRecord> rec, source_->ReadRecord(s.next, at));
        if (!rec.has_value()) break;
        bytes += rec->payload.size();
        *batch.mutable_records()->add_records() = ToWire(*rec);
        ++s.next;
      }
      return absl::OkStatus();
    });
    if (!read.ok()) co_return read;
    if (batch.records().records_size() == 0) {
      co_return absl::DataLossError(absl::StrCat("master log ends before LSN ", at));
    }
    stats_.records += batch.records().records_size();
    s.conn->Send(batch);
    absl::Status acked = co_await AwaitAck(s, s.next - 1, kDeadPeerTimeout * 4);
    if (!acked.ok()) co_return acked;
  }
  stats_.acked_lsn = s.acked;
  syncpb::DigestReply dr = std::move(*first);
  if (replica_lsn != at) {
    auto again = co_await request_digests();
    if (!again.ok()) co_return again.status();
    dr = std::move(*again);
  }
  if (dr.lsn() != at) {
    co_return absl::UnavailableError(absl::StrCat("replica ", options_.server, " moved to LSN ",
                                                  dr.lsn(), " during a comparison at LSN ", at,
                                                  "; retry"));
  }
  co_return CommonPoint{std::move(*view), std::move(dr)};
}

awaitable<absl::StatusOr<syncpb::RepairDone>> SyncClient::SendRepair(
    Session& s, const logpb::RepairMailbox& repair, const std::vector<std::string>& replace) {
  syncpb::Frame f;
  *f.mutable_repair()->mutable_repair() = repair;
  for (const std::string& g : replace) f.mutable_repair()->add_replace_guids(g);
  s.conn->Send(f);
  auto br = co_await s.conn->Read(absl::Seconds(60));
  if (!br.ok()) co_return br.status();
  if (!br->has_body_request()) co_return Unexpected(*br, "a body request", options_.server, &stats_);
  std::vector<std::string> guids(br->body_request().guids().begin(),
                                 br->body_request().guids().end());
  absl::Status sb = co_await SendBodies(s, guids);
  if (!sb.ok()) co_return sb;
  auto done = co_await s.conn->Read(absl::Seconds(120));
  if (!done.ok()) co_return done.status();
  if (!done->has_repair_done()) co_return Unexpected(*done, "a repair result", options_.server, &stats_);
  co_return done->repair_done();
}

awaitable<absl::Status> SyncClient::Resync(Session& s) {
  std::vector<std::string> prefixes;
  if (options_.mode == SyncClientOptions::Mode::kResyncUser) {
    prefixes.push_back(InboxName(options_.target));
  } else if (options_.mode == SyncClientOptions::Mode::kResyncMailbox) {
    prefixes.push_back(options_.target);
  }
  syncpb::DigestRequest request;
  for (const auto& p : prefixes) request.add_prefixes(p);
  auto met = co_await MeetAtCommonLsn(s, request);
  if (!met.ok()) co_return met.status();
  std::unique_ptr<Index>* view = &met->view;
  syncpb::DigestReply& dr = met->replica;
  Index& ix = **view;
  auto in_scope = [&](const std::string& name) {
    if (options_.mode == SyncClientOptions::Mode::kResyncMailbox) return name == options_.target;
    for (const auto& p : prefixes) {
      if (IsSameOrBelow(name, p)) return true;
    }
    return prefixes.empty();
  };
  std::map<std::string, std::pair<std::string, Digest>> replica;  // id -> name, digest
  for (const auto& m : dr.mailboxes()) {
    Digest d;
    Digest::FromBytes(m.digest(), &d);
    replica[m.mailbox_id()] = {m.name(), d};
  }
  // Which mailboxes differ, and the master's state of each: index reads,
  // on a worker, which also closes the view.
  std::vector<logpb::RepairMailbox> repairs;
  absl::Status listed = co_await Offload(blocking_, [&]() -> absl::Status {
    absl::Cleanup close = [&] { view->reset(); };
    for (const auto& [id, mb] : ix.mailboxes()) {
      if (!in_scope(mb.name)) continue;
      auto it = replica.find(id);
      if (it != replica.end() && it->second.first == mb.name &&
          it->second.second == mb.MailboxDigest()) {
        continue;
      }
      ASSIGN_OR_RETURN(logpb::RepairMailbox r, MailboxState(ix, id));
      r.set_reason(it == replica.end() ? "missing on replica" : "digest differs");
      repairs.push_back(std::move(r));
    }
    for (const auto& [id, nd] : replica) {
      if (ix.FindMailbox(id) != nullptr || !in_scope(nd.first)) continue;
      logpb::RepairMailbox r;
      r.set_mailbox_id(id);
      r.set_deleted(true);
      r.set_reason("not on master");
      r.mutable_mailbox()->set_name(nd.first);
      repairs.push_back(std::move(r));
    }
    return absl::OkStatus();
  });
  if (!listed.ok()) co_return listed;
  for (const auto& r : repairs) {
    const std::string name = r.mailbox().name();
    auto done = co_await SendRepair(s, r, {});
    if (!done.ok()) co_return done.status();
    if (done->ok()) {
      stats_.repaired.push_back(absl::StrCat(name, " (", r.reason(), ")"));
    } else {
      stats_.failed.push_back(absl::StrCat(name, ": ", done->error()));
    }
  }
  if (absl::Status finished = co_await Finish(s); !finished.ok()) co_return finished;
  if (!stats_.failed.empty()) {
    co_return absl::AbortedError(absl::StrCat(stats_.failed.size(), " mailbox(es) not repaired"));
  }
  co_return absl::OkStatus();
}

awaitable<absl::Status> SyncClient::Finish(Session& s) {
  syncpb::Frame done;
  done.mutable_done();
  s.conn->Send(done);
  if (absl::Status f = co_await s.conn->Flush(absl::Seconds(5)); !f.ok()) co_return f;
  for (;;) {
    auto f = co_await s.conn->Read(kDeadPeerTimeout);
    // A server older than the Done answer closes instead.
    if (!f.ok()) co_return absl::IsDeadlineExceeded(f.status()) ? f.status() : absl::OkStatus();
    if (f->has_done()) co_return absl::OkStatus();
    if (f->has_ack()) {
      s.acked = std::max(s.acked, f->ack().lsn());
      stats_.acked_lsn = s.acked;
    } else if (!f->has_heartbeat()) {
      co_return Unexpected(*f, "Done", options_.server, &stats_);
    }
  }
}

awaitable<absl::Status> SyncClient::AwaitAck(Session& s, uint64_t lsn, absl::Duration timeout) {
  while (s.acked < lsn) {
    auto f = co_await s.conn->Read(timeout);
    if (!f.ok()) co_return f.status();
    if (!f->has_ack()) co_return Unexpected(*f, "an acknowledgement", options_.server, &stats_);
    s.acked = std::max(s.acked, f->ack().lsn());
    stats_.acked_lsn = s.acked;
  }
  co_return absl::OkStatus();
}

awaitable<absl::Status> SyncClient::ReplayFile(Session& s) {
  auto contents = co_await Offload(blocking_, [&] { return ReadFile(options_.target); });
  if (!contents.ok()) co_return contents.status();
  absl::string_view data = *contents;
  size_t offset = 0;
  // Sends a batch and waits for its acknowledgement. Batches stay within
  // batch_bytes: a whole segment (64 MiB and more) does not fit in a frame.
  syncpb::Frame batch;
  size_t batch_bytes = 0;
  auto send_batch = [&]() -> awaitable<absl::Status> {
    const auto& recs = batch.records().records();
    const uint64_t last = recs[recs.size() - 1].lsn();
    stats_.records += recs.size();
    stats_.record_bytes += batch_bytes;
    s.conn->Send(batch);
    batch.Clear();
    batch_bytes = 0;
    absl::Status acked = co_await AwaitAck(s, last, absl::Seconds(120));
    if (!acked.ok()) co_return acked;
    if (s.acked != last) co_return absl::UnavailableError("replica did not acknowledge the replay");
    co_return absl::OkStatus();
  };
  while (offset < data.size()) {
    // Zeros to the end: what the writer kept written ahead of its records.
    if (data.find_first_not_of('\0', offset) == absl::string_view::npos) break;
    LogRecord r;
    size_t consumed = 0;
    if (DecodeRecord(data.substr(offset), &r, &consumed) != DecodeStatus::kOk) {
      co_return absl::DataLossError(absl::StrCat("log file ", options_.target,
                                                 ": bad record at offset ", offset));
    }
    offset += consumed;
    if (IsLocalRecordType(r.type) || r.lsn < s.next) continue;
    if (r.lsn != s.next) {
      co_return absl::FailedPreconditionError(absl::StrCat(
          "log file ", options_.target, " jumps to LSN ", r.lsn, "; the replica needs LSN ",
          s.next, " next"));
    }
    batch_bytes += r.payload.size();
    *batch.mutable_records()->add_records() = ToWire(r);
    ++s.next;
    if (batch_bytes >= options_.batch_bytes ||
        batch.records().records_size() >= static_cast<int>(options_.batch_records)) {
      absl::Status sent = co_await send_batch();
      if (!sent.ok()) co_return sent;
    }
  }
  if (batch.records().records_size() > 0) {
    absl::Status sent = co_await send_batch();
    if (!sent.ok()) co_return sent;
  }
  co_return co_await Finish(s);
}

}  // namespace mailrepl::sync
