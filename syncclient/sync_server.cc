#include "syncclient/sync_server.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/offload.h"
#include "common/status_macros.h"
#include "proto/log.pb.h"
#include "store/log_format.h"
#include "store/mailbox_name.h"
#include "store/verify.h"
#include "transport/auth.h"
#include "transport/framed_connection.h"
#include "syncclient/mailbox_compare.h"
#include "syncclient/protocol.h"
#include "syncclient/refusal.h"

namespace mailrepl::sync {

using asio::awaitable;
using asio::use_awaitable;

namespace {

absl::Status BadFrame(const std::string& why) { return Refuse(syncpb::BAD_FRAME, why); }

bool SameQuarantine(const std::vector<Quarantine>& a, const std::vector<Quarantine>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const Quarantine& x, const Quarantine& y) {
                      return x.mailbox_id == y.mailbox_id && x.lsn == y.lsn && x.reason == y.reason;
                    });
}

syncpb::QuarantinedMailbox ToWire(const Quarantine& q) {
  syncpb::QuarantinedMailbox w;
  w.set_mailbox_id(q.mailbox_id);
  w.set_name(q.name);
  w.set_lsn(q.lsn);
  w.set_reason(q.reason);
  return w;
}

// The GUIDs of message entries in a snapshot file.
absl::StatusOr<std::vector<std::string>> SnapshotGuids(const std::string& data) {
  std::vector<std::string> out;
  absl::string_view rest = data;
  while (!rest.empty()) {
    LogRecord r;
    size_t consumed = 0;
    if (DecodeRecord(rest, &r, &consumed) != DecodeStatus::kOk) {
      return absl::DataLossError("received snapshot is damaged");
    }
    rest.remove_prefix(consumed);
    if (r.type != RecordType::kSnapshotMessage) continue;
    logpb::SnapshotMessage m;
    if (!m.ParseFromString(r.payload)) return absl::DataLossError("bad snapshot message entry");
    out.push_back(m.guid());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// Refuses records that could never apply and that no quarantine would
// contain: a payload that does not parse as its type's message, a mailbox
// record naming no mailbox, an epoch record that does not start a newer
// epoch. Once durable in the replica's log, such a record would stop the
// slot, and stop it again at every open, so it must be refused before
// anything is written. epoch: the slot's current epoch.
absl::Status CheckReplicatedRecords(const std::vector<LogRecord>& records, uint64_t epoch) {
  for (const LogRecord& r : records) {
    auto bad = [&](absl::string_view why) {
      return BadFrame(absl::StrCat("record LSN ", r.lsn, " (", RecordTypeName(r.type), ") ", why));
    };
    std::string mailbox_id;
    bool parsed = true;
    switch (r.type) {
      case RecordType::kCreateMailbox: {
        logpb::CreateMailbox p;
        parsed = p.ParseFromString(r.payload);
        mailbox_id = p.mailbox_id();
        break;
      }
      case RecordType::kRenameMailbox: {
        logpb::RenameMailbox p;
        parsed = p.ParseFromString(r.payload);
        mailbox_id = p.mailbox_id();
        break;
      }
      case RecordType::kDeleteMailbox: {
        logpb::DeleteMailbox p;
        parsed = p.ParseFromString(r.payload);
        mailbox_id = p.mailbox_id();
        break;
      }
      case RecordType::kAppend: {
        logpb::Append p;
        parsed = p.ParseFromString(r.payload);
        mailbox_id = p.mailbox_id();
        break;
      }
      case RecordType::kSetFlags: {
        logpb::SetFlags p;
        parsed = p.ParseFromString(r.payload);
        mailbox_id = p.mailbox_id();
        break;
      }
      case RecordType::kExpunge: {
        logpb::Expunge p;
        parsed = p.ParseFromString(r.payload);
        mailbox_id = p.mailbox_id();
        break;
      }
      case RecordType::kSetQuota: {
        logpb::SetQuota p;
        if (!p.ParseFromString(r.payload)) return bad("does not parse");
        continue;
      }
      case RecordType::kBeginEpoch: {
        logpb::BeginEpoch p;
        if (!p.ParseFromString(r.payload)) return bad("does not parse");
        if (p.epoch() != r.epoch) return bad("carries another epoch in its payload");
        if (r.epoch <= epoch) {
          return bad(absl::StrCat("does not start an epoch above epoch ", epoch));
        }
        epoch = r.epoch;
        continue;
      }
      default:
        continue;  // AppendReplicated refuses types that are not replicated
    }
    if (!parsed) return bad("does not parse");
    if (mailbox_id.empty()) return bad("names no mailbox");
  }
  return absl::OkStatus();
}

// The epoch of the record at lsn, by an epoch history.
uint64_t EpochAt(const std::vector<EpochStart>& history, uint64_t lsn) {
  uint64_t epoch = 0;
  for (const EpochStart& e : history) {
    if (e.first_lsn <= lsn) epoch = e.epoch;
  }
  return epoch;
}

// Removes the leading records the slot already holds: another session of
// the same master (a resync next to a rolling client, a client restarted
// while its old connection lingers) sent them first. They must be the same
// records, which their epochs show. last: the slot's last LSN.
absl::Status DropRecordsWeHave(Slot& slot, uint64_t last, std::vector<LogRecord>& records) {
  size_t have = 0;
  while (have < records.size() && records[have].lsn <= last) ++have;
  if (have == 0) return absl::OkStatus();
  const std::vector<EpochStart> history = slot.EpochHistory();
  for (size_t i = 0; i < have; ++i) {
    const uint64_t ours = EpochAt(history, records[i].lsn);
    if (records[i].epoch != ours) {
      return Refuse(syncpb::RECORDS_DIFFER,
                    absl::StrCat("record LSN ", records[i].lsn, " of epoch ", records[i].epoch,
                                 " differs from this replica's record of epoch ", ours));
    }
  }
  records.erase(records.begin(), records.begin() + static_cast<std::ptrdiff_t>(have));
  return absl::OkStatus();
}

// Refuses records that do not continue the slot's log: the first must be
// LSN last + 1 and the rest follow without gaps (GAP), and no record may
// carry an epoch older than the one before it or than the slot's (a stale
// master: STALE_EPOCH naming `seen`, the newest epoch the slot knows).
absl::Status CheckSequence(const std::vector<LogRecord>& records, uint64_t last, uint64_t epoch,
                           uint64_t seen) {
  uint64_t lsn = last + 1;
  for (const LogRecord& r : records) {
    if (r.lsn != lsn) {
      return Refuse(syncpb::GAP,
                    absl::StrCat("this replica holds up to LSN ", lsn - 1, " and needs LSN ", lsn,
                                 " next, not LSN ", r.lsn),
                    0, last);
    }
    if (r.epoch < epoch) {
      return Refuse(syncpb::STALE_EPOCH,
                    absl::StrCat("record LSN ", r.lsn, " carries epoch ", r.epoch,
                                 ", older than epoch ", epoch, " of this replica's records"),
                    std::max(seen, epoch));
    }
    epoch = r.epoch;
    ++lsn;
  }
  return absl::OkStatus();
}

// STALE_EPOCH for a master of `epoch` when this replica knows a newer one.
absl::Status NotStale(uint64_t epoch, uint64_t known) {
  if (epoch >= known) return absl::OkStatus();
  return Refuse(syncpb::STALE_EPOCH,
                absl::StrCat("master epoch ", epoch, " is older than epoch ", known,
                             " known to this replica: the sender is no longer master"),
                known);
}

}  // namespace


struct SyncServer::Position {
  uint64_t seen_epoch = 0;
  uint64_t epoch = 0;
  uint64_t last_lsn = 0;
  std::vector<EpochStart> history;
  std::vector<Quarantine> quarantined;
};

SyncServer::SyncServer(asio::io_context& io, Slot& slot, SyncServerOptions options)
    : slot_(slot),
      options_(std::move(options)),
      server_(
          io, {.name = "sync", .listen = options_.listen},
          [](asio::ip::tcp::socket socket, std::string peer) {
            auto conn = std::make_shared<FramedConnection>(std::move(socket), std::move(peer));
            conn->Start();
            return conn;
          },
          [this](std::shared_ptr<FramedConnection> conn) { return Session(std::move(conn)); }),
      resync_done_(io) {
  if (options_.blocking) {
    blocking_ = *options_.blocking;
  } else {
    own_pool_ = std::make_unique<asio::thread_pool>(2);
    blocking_ = own_pool_->get_executor();
  }
  resync_done_.expires_at(asio::steady_timer::time_point::max());
}

SyncServer::~SyncServer() {
  if (own_pool_) own_pool_->join();
}

absl::Status SyncServer::Listen() { return server_.Listen(); }

uint16_t SyncServer::port() const { return server_.port(); }

SyncServerStats SyncServer::stats() const {
  SyncServerStats s = stats_;
  s.connections = server_.stats().accepted;
  return s;
}

void SyncServer::Stop() {
  server_.Stop([](FramedConnection& c) {
    c.Send(ErrorFrame(syncpb::SHUTTING_DOWN, "sync server shutting down"));
  });
}

void SyncServer::CloseSessions(const std::string& why, uint64_t epoch) {
  NoteKnownEpoch(epoch);
  server_.ForEachSession([&](FramedConnection& c) {
    syncpb::Frame e = ErrorFrame(syncpb::STALE_EPOCH, why);
    e.mutable_error()->set_epoch(epoch);
    c.Send(e);
    c.Close();
  });
}

void SyncServer::NoteKnownEpoch(uint64_t epoch) { known_epoch_ = std::max(known_epoch_, epoch); }

absl::Status SyncServer::CheckNotStale(uint64_t epoch, uint64_t seen) const {
  return NotStale(epoch, std::max(known_epoch_, seen));
}

awaitable<void> SyncServer::Run() { co_await server_.Run(); }

template <typename Fn>
auto SyncServer::OffThread(Fn fn) {
  return Offload(blocking_, std::move(fn));
}

awaitable<void> SyncServer::Session(std::shared_ptr<FramedConnection> conn) {
  // Also if Serve throws: the connection's writer keeps it alive until closed.
  absl::Cleanup close = [conn] { conn->Close(); };
  absl::Status s = co_await Serve(*conn);
  if (!s.ok()) {
    if (std::optional<syncpb::Error> refusal = RefusalFor(s)) {
      syncpb::Frame e;
      *e.mutable_error() = std::move(*refusal);
      conn->Send(e);
    }
    if (s.code() == absl::StatusCode::kInvalidArgument) ++stats_.bad_frames;
    LogLine(s.code() == absl::StatusCode::kUnavailable ? Severity::kInfo : Severity::kWarning,
            "sync connection closed",
            Kv("peer", conn->peer()) + Kv("slot", slot_.paths().root) + Kv("reason", s.message()));
  }
  if (resync_owner_ == conn.get()) {
    resync_owner_ = nullptr;
    resync_done_.cancel();  // wakes every session waiting in WaitForResync
  }
  (co_await conn->Flush(absl::Seconds(2))).IgnoreError();  // the session ends either way
}

awaitable<void> SyncServer::WaitForResync(const FramedConnection& conn) {
  while (resync_owner_ != nullptr && resync_owner_ != &conn) {
    asio::error_code ec;
    co_await resync_done_.async_wait(asio::redirect_error(use_awaitable, ec));
  }
}

awaitable<absl::StatusOr<SyncServer::SessionState>> SyncServer::Handshake(FramedConnection& conn) {
  const std::string challenge = transport::NewChallenge();
  syncpb::Frame hello;
  *hello.mutable_server_hello()->mutable_version() = OurVersion();
  hello.mutable_server_hello()->add_capabilities(kCapabilityZstd);
  hello.mutable_server_hello()->add_capabilities(kCapabilityCheck);
  hello.mutable_server_hello()->set_challenge(challenge);
  conn.Send(hello);

  auto first = co_await conn.Read(kHelloTimeout);
  if (!first.ok()) co_return first.status();
  if (!first->has_client_hello()) co_return BadFrame("expected a client hello");
  const syncpb::ClientHello& h = first->client_hello();
  const SlotIdentity& id = slot_.identity();
  const std::string context = AuthContext(h.cluster_id(), h.store_id());
  if (h.challenge().size() != transport::kChallengeSize ||
      !transport::ResponsesEqual(h.response(), transport::AuthResponse(options_.secret, "client",
                                                                       context, challenge,
                                                                       h.challenge()))) {
    ++stats_.auth_failures;
    LogLine(Severity::kWarning, "sync authentication failed",
            Kv("peer", conn.peer()) + Kv("slot", slot_.paths().root));
    co_return Refuse(syncpb::UNAUTHENTICATED, "authentication failed");
  }
  if (h.version().major() != kProtocolMajor) {
    co_return Refuse(syncpb::PROTOCOL_VERSION,
                     absl::StrCat("protocol ", h.version().major(), ".", h.version().minor(),
                                  " is not supported; this server speaks ", kProtocolMajor, ".x"));
  }
  if (h.cluster_id() != id.cluster_id || h.store_id() != id.store_id) {
    co_return Refuse(syncpb::WRONG_STORE,
                     absl::StrCat("this replica is cluster ", id.cluster_id, " store ",
                                  id.store_id, ", not cluster ", h.cluster_id(), " store ",
                                  h.store_id()));
  }
  if (absl::Status stale = CheckNotStale(h.epoch()); !stale.ok()) co_return stale;
  if (options_.admit) {
    absl::Status admitted = options_.admit();
    if (!admitted.ok()) co_return Refuse(syncpb::NOT_REPLICA, admitted.message());
  }
  // The slot's position, on a worker: these reads wait for the batch the
  // applier holds the index for. A newer master is noted (persisted) first.
  Position pos;
  absl::Status read = co_await OffThread([&]() -> absl::Status {
    pos.seen_epoch = slot_.seen_epoch();
    if (h.epoch() < pos.seen_epoch) return NotStale(h.epoch(), pos.seen_epoch);
    if (h.epoch() > pos.seen_epoch) RETURN_IF_ERROR(slot_.NoteEpochSeen(h.epoch()));
    pos.epoch = slot_.epoch();
    pos.last_lsn = slot_.last_lsn();
    pos.history = slot_.EpochHistory();
    pos.quarantined = slot_.Quarantined();
    return absl::OkStatus();
  });
  NoteKnownEpoch(std::max(pos.seen_epoch, read.ok() ? h.epoch() : 0));
  if (!read.ok()) co_return read;
  last_lsn_ = pos.last_lsn;

  syncpb::Frame welcome;
  syncpb::Welcome* w = welcome.mutable_welcome();
  *w->mutable_version() = OurVersion();
  bool zstd = false;
  for (const auto& c : h.capabilities()) zstd |= c == kCapabilityZstd;
  if (zstd) w->add_capabilities(kCapabilityZstd);
  for (const auto& c : h.capabilities()) {
    if (c == kCapabilityCheck) w->add_capabilities(kCapabilityCheck);
  }
  w->set_response(
      transport::AuthResponse(options_.secret, "server", context, h.challenge(), challenge));
  w->set_slot_id(id.slot_id);
  w->set_epoch(pos.epoch);
  w->set_last_lsn(pos.last_lsn);
  for (const EpochStart& e : pos.history) {
    auto* x = w->add_epoch_history();
    x->set_epoch(e.epoch);
    x->set_first_lsn(e.first_lsn);
  }
  for (const Quarantine& q : pos.quarantined) *w->add_quarantined() = ToWire(q);
  conn.Send(welcome);
  if (zstd) conn.EnableCompression();
  if (options_.verbose) {
    LogLine(Severity::kInfo, "sync session",
            Kv("peer", conn.peer()) + Kv("master_slot", h.slot_id()) + Kv("epoch", h.epoch()) +
                Kv("replica_lsn", w->last_lsn()));
  }
  co_return SessionState{.conn = conn, .epoch = h.epoch(), .reported = std::move(pos.quarantined)};
}

awaitable<absl::Status> SyncServer::Serve(FramedConnection& conn) {
  auto state = co_await Handshake(conn);
  if (!state.ok()) co_return state.status();
  SessionState& s = *state;
  for (;;) {
    // (No co_await inside a conditional expression: GCC 12 miscompiles it.)
    absl::StatusOr<syncpb::Frame> f;
    if (s.held) {
      f = std::move(*s.held);
      s.held.reset();
    } else {
      // A client that owns a resync compares the master's side between its
      // requests (every mailbox's rows, in a deep or --repair check) and
      // sends nothing meanwhile.
      f = co_await conn.Read(resync_owner_ == &conn ? kResyncPeerTimeout : kDeadPeerTimeout);
    }
    if (!f.ok()) co_return f.status();
    // A newer master may have introduced itself since this session began:
    // from then on this one is stale, whatever its records carry.
    if (absl::Status stale = CheckNotStale(s.epoch); !stale.ok()) co_return stale;
    absl::Status handled;
    switch (f->body_case()) {
      case syncpb::Frame::kRecords:
        handled = co_await OnRecords(s, std::move(*f));
        break;
      case syncpb::Frame::kHeartbeat:
        OnHeartbeat(s, f->heartbeat());
        break;
      case syncpb::Frame::kSnapshotBegin:
        handled = co_await ReceiveSnapshot(conn, f->snapshot_begin().lsn());
        if (handled.ok()) ++stats_.snapshots;
        break;
      case syncpb::Frame::kDigestRequest:
        handled = co_await OnDigestRequest(s, f->digest_request());
        break;
      case syncpb::Frame::kContentsRequest:
        handled = co_await OnContentsRequest(s, f->contents_request());
        break;
      case syncpb::Frame::kVerifyRequest:
        handled = co_await OnVerifyRequest(s, f->verify_request());
        break;
      case syncpb::Frame::kRepair:
        handled = co_await OnRepair(s, f->repair());
        break;
      case syncpb::Frame::kDone:
        co_return co_await OnDone(s);
      case syncpb::Frame::kError:
        co_return co_await OnError(s, f->error());
      default:
        co_return BadFrame(
            absl::StrCat("unexpected frame type ", f->body_case(), " from the master"));
    }
    if (!handled.ok()) co_return handled;
  }
}

awaitable<absl::Status> SyncServer::OnRecords(SessionState& s, syncpb::Frame f) {
  FramedConnection& conn = s.conn;
  std::vector<LogRecord> records;
  records.reserve(f.records().records_size());
  for (const auto& r : f.records().records()) records.push_back(FromWire(r));
  if (records.empty()) co_return BadFrame("empty records frame");
  uint64_t frame_epoch = f.records().records().rbegin()->epoch();
  // Records frames that have already arrived join this batch: one fsync
  // and one ack for all of them, so a replica that fell behind catches up
  // in large batches.
  while (records.size() < 16384 && !s.held) {
    auto next = conn.TryRead();
    if (!next) break;
    if (!next->ok()) co_return next->status();
    if (!(*next)->has_records() || (*next)->records().records_size() == 0) {
      s.held = std::move(**next);
      break;
    }
    for (const auto& r : (*next)->records().records()) records.push_back(FromWire(r));
    frame_epoch = (*next)->records().records().rbegin()->epoch();
  }
  const uint64_t last_sent = records.back().lsn;
  // Another session may be running a resync: wait until it ends.
  co_await WaitForResync(conn);
  uint64_t seen = 0;
  absl::Status a = co_await OffThread([&]() -> absl::Status {
    // One session at a time trims and appends, so that what the replica
    // already has stays consistent with what it appends.
    MutexLock l(apply_mu_);
    seen = slot_.seen_epoch();
    RETURN_IF_ERROR(NotStale(s.epoch, seen));
    const uint64_t last = slot_.last_lsn();
    RETURN_IF_ERROR(DropRecordsWeHave(slot_, last, records));
    if (records.empty()) return absl::OkStatus();
    const uint64_t epoch = slot_.epoch();
    RETURN_IF_ERROR(CheckSequence(records, last, epoch, seen));
    RETURN_IF_ERROR(CheckReplicatedRecords(records, epoch));
    absl::Status appended = slot_.AppendReplicated(records);
    // The records continue the log (checked above), so what is left is the
    // slot itself: a disk at its reserve (DISK_FULL, by its code) or a slot
    // that stopped taking writes after an error.
    if (absl::IsFailedPrecondition(appended) || absl::IsDataLoss(appended) ||
        absl::IsInternal(appended)) {
      return Refuse(syncpb::SLOT_FAILED,
                    absl::StrCat(appended.message(), " (replica slot ", slot_.paths().root, ")"));
    }
    return appended;
  });
  NoteKnownEpoch(seen);
  if (!a.ok()) co_return a;
  last_lsn_ = std::max(last_lsn_, last_sent);
  stats_.records_applied += records.size();
  s.epoch = std::max(s.epoch, frame_epoch);
  // The records are durable here: acknowledge them now, while the slot's
  // applier puts them in the index (in sync durability the master's client
  // is waiting for this ack). The ack carries the quarantine as last
  // reported; once the batch is applied, a second ack for the same LSN
  // follows if applying it changed that.
  auto ack_with = [&](const std::vector<Quarantine>& quarantined) {
    syncpb::Frame ack;
    ack.mutable_ack()->set_lsn(last_sent);
    for (const Quarantine& q : quarantined) *ack.mutable_ack()->add_quarantined() = ToWire(q);
    conn.Send(ack);
  };
  ack_with(s.reported);
  std::vector<Quarantine> now = co_await OffThread([&] {
    return slot_.Quarantined();  // waits until the batch is in the index
  });
  if (!SameQuarantine(now, s.reported)) {
    s.reported = std::move(now);
    ack_with(s.reported);
  }
  co_return absl::OkStatus();
}

void SyncServer::OnHeartbeat(SessionState& s, const syncpb::Heartbeat& in) {
  syncpb::Frame hb;
  hb.mutable_heartbeat()->set_last_lsn(last_lsn_);
  if (const uint64_t probe = in.probe(); probe != 0 && options_.vouch) {
    hb.mutable_heartbeat()->set_probe(probe);
    hb.mutable_heartbeat()->set_vouch_ms(static_cast<uint32_t>(std::clamp<int64_t>(
        absl::ToInt64Milliseconds(options_.vouch(s.epoch)), 0, UINT32_MAX)));
  }
  s.conn.Send(hb);
}

awaitable<absl::Status> SyncServer::OnDigestRequest(SessionState& s,
                                                    const syncpb::DigestRequest& req) {
  // From its first digest request until it ends, this session alone changes
  // the replica: the state the client compares and repairs must not move
  // under it (other sessions' records wait).
  co_await WaitForResync(s.conn);
  resync_owner_ = &s.conn;
  syncpb::Frame reply;
  syncpb::DigestReply* dr = reply.mutable_digest_reply();
  // A resync is there to find damage, so by default each mailbox digest is
  // recomputed from its message rows (ROWS): the running sums kept with the
  // mailbox rows do not see rows lost or changed behind the engine's back.
  // A check's fast path asks for the sums (STORED, O(mailboxes)) or for the
  // slot digest alone.
  absl::Status digests = co_await OffThread([&]() -> absl::Status {
    dr->set_lsn(slot_.last_lsn());
    dr->set_slot_digest(slot_.SlotDigest().Bytes());
    if (req.slot_only()) return absl::OkStatus();
    return slot_.WithIndex([&](Index& ix, Spool&) -> absl::Status {
      for (const auto& [id, mb] : ix.mailboxes()) {
        bool in = req.prefixes().empty();
        for (const auto& p : req.prefixes()) in |= IsSameOrBelow(mb.name, p);
        if (!in) continue;
        Digest d = mb.MailboxDigest();
        if (req.source() == syncpb::ROWS) {
          ASSIGN_OR_RETURN(d, RowDigest(ix, mb));
        }
        auto* m = dr->add_mailboxes();
        m->set_mailbox_id(mb.id);
        m->set_name(mb.name);
        m->set_digest(d.Bytes());
      }
      return absl::OkStatus();
    });
  });
  if (!digests.ok()) co_return Refuse(syncpb::APPLY_FAILED, digests.message());
  s.conn.Send(reply);
  co_return absl::OkStatus();
}

awaitable<absl::Status> SyncServer::OnContentsRequest(SessionState& s,
                                                      const syncpb::ContentsRequest& req) {
  syncpb::Frame reply;
  absl::Status read = co_await OffThread([&]() -> absl::Status {
    return slot_.WithIndex([&](Index& ix, Spool&) -> absl::Status {
      for (const std::string& id : req.mailbox_ids()) {
        ASSIGN_OR_RETURN(*reply.mutable_contents()->add_mailboxes(), MailboxState(ix, id));
      }
      return absl::OkStatus();
    });
  });
  if (!read.ok()) co_return Refuse(syncpb::APPLY_FAILED, read.message());
  s.conn.Send(reply);
  co_return absl::OkStatus();
}

awaitable<absl::Status> SyncServer::OnVerifyRequest(SessionState& s,
                                                    const syncpb::VerifyRequest& req) {
  // Runs on the live replica (VerifySlot hashes bodies outside the index
  // lock); the client asks before it holds other sessions back.
  absl::StatusOr<VerifyReport> v = co_await OffThread([&] {
    return VerifySlot(slot_, {.max_bytes_per_second = req.max_bytes_per_second()});
  });
  if (!v.ok()) co_return Refuse(syncpb::APPLY_FAILED, v.status().message());
  syncpb::Frame reply;
  syncpb::VerifyReply* vr = reply.mutable_verify_reply();
  vr->set_records(v->records);
  vr->set_bodies(v->blobs);
  vr->set_bytes(v->bytes);
  for (const VerifyReport::BadBody& b : v->bad_bodies) vr->add_bad_guids(b.guid);
  for (const std::string& p : v->problems) vr->add_problems(p);
  s.conn.Send(reply);
  co_return absl::OkStatus();
}

awaitable<absl::Status> SyncServer::OnRepair(SessionState& s, const syncpb::Repair& repair) {
  const logpb::RepairMailbox& r = repair.repair();
  std::vector<std::string> missing(repair.replace_guids().begin(), repair.replace_guids().end());
  co_await OffThread([&] {
    for (const auto& m : r.messages()) {
      auto has = slot_.HasBlob(m.guid());
      if (!has.ok() || !*has) missing.push_back(m.guid());
    }
  });
  std::sort(missing.begin(), missing.end());
  missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
  std::vector<std::string> bodies;
  absl::Status got = co_await ReceiveBodies(s.conn, missing, &bodies);
  if (!got.ok()) co_return got;
  const std::string payload = r.SerializeAsString();
  absl::Status ap = co_await OffThread([&] { return slot_.RepairMailbox(payload, bodies); });
  syncpb::Frame done;
  done.mutable_repair_done()->set_mailbox_id(r.mailbox_id());
  done.mutable_repair_done()->set_ok(ap.ok());
  done.mutable_repair_done()->set_error(std::string(ap.message()));
  s.conn.Send(done);
  ++stats_.repairs;
  LogLine(ap.ok() ? Severity::kInfo : Severity::kWarning, "mailbox resync",
          Kv("mailbox", r.mailbox().name()) + Kv("reason", r.reason()) +
              Kv("result", ap.ok() ? "repaired" : ap.message()));
  co_return absl::OkStatus();
}

awaitable<absl::Status> SyncServer::OnDone(SessionState& s) {
  // Answer once everything acknowledged is applied too, so the client
  // returns only when a reader of this slot sees it.
  co_await OffThread([&] { slot_.WaitApplied(); });
  syncpb::Frame done;
  done.mutable_done();
  s.conn.Send(done);
  // A client older than this answer has closed already: not an error.
  (co_await s.conn.Flush(absl::Seconds(5))).IgnoreError();
  co_return absl::OkStatus();
}

awaitable<absl::Status> SyncServer::OnError(SessionState& s, const syncpb::Error& e) {
  if (e.code() == syncpb::DIVERGED && options_.on_diverged) {
    absl::Status d = co_await SetAsideDiverged(s.conn, e.lsn(), s.epoch);
    if (!d.ok()) {
      LogLine(Severity::kError, "diverged replica not rewound",
              Kv("peer", s.conn.peer()) + Kv("slot", slot_.paths().root) +
                  Kv("fork_lsn", e.lsn()) + Kv("error", d.message()));
    }
  }
  co_return absl::UnavailableError(absl::StrCat("peer reported: ", e.message()));
}

awaitable<absl::Status> SyncServer::SetAsideDiverged(const FramedConnection& conn,
                                                     uint64_t fork_lsn, uint64_t master_epoch) {
  co_await WaitForResync(conn);
  uint64_t last = 0;
  absl::Status s = co_await OffThread([&]() -> absl::Status {
    // Checked under apply_mu_: another session of the same master may have
    // had the slot rewound (or reseeded) meanwhile. Only a master of a
    // newer epoch than every record here may have it rewound, and only
    // past a fork point below its last LSN.
    MutexLock l(apply_mu_);
    const uint64_t ours = slot_.epoch();
    last = slot_.last_lsn();
    if (master_epoch <= ours || fork_lsn >= last) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a master of epoch ", master_epoch, " says this slot diverged after LSN ", fork_lsn,
          ", but the slot holds LSN ", last, " of epoch ", ours,
          ": only a master of a newer epoch may have records past a fork point set aside"));
    }
    absl::Status rewound = options_.on_diverged(fork_lsn, master_epoch);
    if (rewound.ok()) last = 0;
    return rewound;
  });
  last_lsn_ = last;
  ++(s.ok() ? stats_.divergences : stats_.divergences_refused);
  co_return s;
}

awaitable<absl::Status> SyncServer::ReceiveBodies(FramedConnection& conn,
                                                  const std::vector<std::string>& guids,
                                                  std::vector<std::string>* bodies) {
  syncpb::Frame req;
  req.mutable_body_request();
  for (const auto& g : guids) req.mutable_body_request()->add_guids(g);
  conn.Send(req);
  for (;;) {
    auto f = co_await conn.Read(kDeadPeerTimeout * 5);
    if (!f.ok()) co_return f.status();
    if (!f->has_bodies()) co_return BadFrame("expected bodies");
    for (auto& b : *f->mutable_bodies()->mutable_bodies()) bodies->push_back(std::move(b));
    if (f->bodies().last()) break;
  }
  co_return absl::OkStatus();
}

awaitable<absl::Status> SyncServer::ReceiveSnapshot(FramedConnection& conn, uint64_t lsn) {
  std::string data;
  for (;;) {
    auto f = co_await conn.Read(kDeadPeerTimeout * 5);
    if (!f.ok()) co_return f.status();
    if (f->has_snapshot_end()) break;
    if (!f->has_snapshot_chunk()) co_return BadFrame("expected a snapshot chunk");
    data.append(f->snapshot_chunk().data());
  }
  // Which bodies the spool lacks: a parse of the whole snapshot and one
  // index lookup per message, on a worker.
  std::vector<std::string> missing;
  absl::Status listed = co_await OffThread([&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::vector<std::string> guids, SnapshotGuids(data));
    for (const auto& g : guids) {
      auto has = slot_.HasBlob(g);
      if (!has.ok() || !*has) missing.push_back(g);
    }
    return absl::OkStatus();
  });
  if (!listed.ok()) co_return Refuse(syncpb::APPLY_FAILED, listed.message());
  // Bodies are written to the spool as the frames arrive, not kept in memory.
  syncpb::Frame req;
  for (const auto& g : missing) req.mutable_body_request()->add_guids(g);
  req.mutable_body_request();
  conn.Send(req);
  for (;;) {
    auto f = co_await conn.Read(kDeadPeerTimeout * 5);
    if (!f.ok()) co_return f.status();
    if (!f->has_bodies()) co_return BadFrame("expected bodies");
    std::vector<std::string> bodies(f->bodies().bodies().begin(), f->bodies().bodies().end());
    absl::Status w = co_await OffThread([&] { return slot_.StoreBodies(bodies); });
    if (!w.ok()) co_return Refuse(syncpb::APPLY_FAILED, w.message());
    if (f->bodies().last()) break;
  }
  const std::string path = slot_.paths().incoming_snapshot();
  uint64_t installed = 0;
  absl::Status st = co_await OffThread([&]() -> absl::Status {
    RETURN_IF_ERROR(WriteFileAtomically(path, data));
    absl::Status imported = slot_.ImportSnapshot(path, /*replace=*/true);
    ::unlink(path.c_str());
    installed = slot_.last_lsn();
    return imported;
  });
  if (!st.ok()) co_return Refuse(syncpb::APPLY_FAILED, st.message());
  last_lsn_ = installed;
  if (installed != lsn) {
    co_return Refuse(syncpb::APPLY_FAILED, absl::StrCat("snapshot announced LSN ", lsn,
                                                        " but holds LSN ", installed));
  }
  syncpb::Frame ack;
  ack.mutable_ack()->set_lsn(lsn);
  conn.Send(ack);
  co_return absl::OkStatus();
}

}  // namespace mailrepl::sync
