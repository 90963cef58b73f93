#include "store/slot.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "common/io_thread.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "proto/log.pb.h"
#include "store/mailbox_name.h"
#include "store/snapshot.h"

namespace mailrepl {

// One caller's records on their way through group commit.
struct Slot::Writer {
  std::vector<LogRecord> records;
  std::string encoded;
  // New bodies (GUID, bytes) to write to the spool once the records are durable.
  std::vector<std::pair<std::string, std::shared_ptr<const std::string>>> bodies;
  bool replicated = false;  // records from a master, applied with quarantine
  // done and status are guarded by Slot::mu_ (which the analysis cannot
  // name from here), like the queue that holds the writer.
  bool done = false;
  absl::Status status;
  CondVar cv;  // waited on with Slot::mu_
};

namespace {
constexpr size_t kMaxBatchBytes = 16u << 20;
constexpr size_t kReplayBatch = 512;
// How long CheckFreeSpace may trust a statvfs reading far from the reserve.
constexpr absl::Duration kFreeSpaceRecheck = absl::Milliseconds(50);
// The longest a commit leader waits for appends in progress to queue.
constexpr int64_t kMaxGatherMicros = 300;
// Index commits between WAL checkpoints (besides one every 250 ms).
constexpr uint64_t kWalCheckpointCommits = 256;

std::vector<uint32_t> UniqueSorted(std::vector<uint32_t> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

absl::Status NoMailbox(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("mailbox '", name, "' does not exist"));
}
}  // namespace

Slot::Slot(SlotPaths paths, SlotOptions options)
    : paths_(std::move(paths)),
      options_(std::move(options)),
      spool_(paths_.spool),
      bodies_(std::make_unique<BodyWriter>(
          spool_,
          [this](const std::vector<StoredBody>& stored) -> absl::Status {
            HandoffLock il(index_mu_);
            if (index_ == nullptr) return absl::FailedPreconditionError("slot is not open");
            return index_->SetBlobLocations(stored);
          },
          256u << 20, 8u << 20)) {}

Slot::~Slot() {
  {
    MutexLock l(apply_mu_);
    closing_ = true;
  }
  maintenance_cv_.SignalAll();
  if (maintenance_.joinable()) maintenance_.join();
  {
    MutexLock al(apply_mu_);
    apply_closing_ = true;
  }
  apply_cv_.SignalAll();
  if (applier_.joinable()) applier_.join();  // applies the jobs still queued
  bodies_.reset();  // writes the bodies still queued
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

void Slot::MaintenanceLoop() {
  MutexLock l(apply_mu_);
  for (;;) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(250);
    while (!closing_ && !checkpoint_wanted_ && index_commits_ < kWalCheckpointCommits) {
      if (!maintenance_cv_.WaitUntil(l, deadline)) break;
    }
    if (closing_) return;
    const bool spool = std::exchange(checkpoint_wanted_, false);
    const bool wal = std::exchange(index_commits_, 0) > 0;
    l.Unlock();
    if (spool) {
      absl::Status c = Checkpoint();
      if (!c.ok()) {
        LogLine(Severity::kWarning, "spool checkpoint failed",
                Kv("slot", paths_.root) + Kv("error", c.message()));
      }
    }
    if (wal) {
      // The index's WAL is copied back here, not by the commit that fills it.
      absl::Status c = Index::CheckpointWal(paths_.index_file());
      if (!c.ok()) {
        LogLine(Severity::kWarning, "index WAL checkpoint failed",
                Kv("slot", paths_.root) + Kv("error", c.message()));
      }
    }
    l.Lock();
  }
}

void Slot::ApplyLoop() {
  for (;;) {
    ApplyJob job;
    {
      MutexLock al(apply_mu_);
      while (!apply_closing_ && apply_queue_.empty()) apply_cv_.Wait(al);
      if (apply_queue_.empty()) return;  // closing, and every job is done
      job = std::move(apply_queue_.front());
      apply_queue_.pop_front();
    }
    // The job's leader locked index_mu_ for it (LockForHandoff in
    // CommitLocked); it is unlocked here. Hand-off: the analysis cannot see
    // a lock taken on another thread, so it is told (ReceiveHandoff).
    index_mu_.ReceiveHandoff();
    const absl::Time t0 = absl::Now();
    const absl::Status apply = index_->Apply(job.records, /*quarantine_misfits=*/job.replicated);
    const absl::Time t1 = absl::Now();
    index_mu_.unlock();
    if (apply.ok() && options_.on_commit) options_.on_commit(job.records.back().lsn);

    // Never mu_ here: its holder may be waiting for index_mu_, which the
    // leader of the next job in the queue holds for it.
    MutexLock l(apply_mu_);
    apply_time_ += t1 - t0;
    if (!apply.ok()) {
      // The records are durable (the writers got OK), but the index is
      // behind: stop writing until the slot is reopened (it replays them).
      if (apply_failed_.ok()) apply_failed_ = apply;
      LogLine(Severity::kError, "index apply failed; slot needs reopening",
              Kv("slot", paths_.root) + Kv("error", apply.message()));
      continue;
    }
    if (++index_commits_ == kWalCheckpointCommits) maintenance_cv_.Signal();
    bytes_since_checkpoint_ += job.bytes;
    if (bytes_since_checkpoint_ >= options_.checkpoint_bytes) {
      // The checkpoint (an fdatasync of the packs) runs on the maintenance
      // thread, never on the commit path.
      bytes_since_checkpoint_ = 0;
      checkpoint_wanted_ = true;
      maintenance_cv_.Signal();
    }
  }
}

absl::Status Slot::Init(const SlotPaths& paths, const SlotIdentity& identity) {
  RETURN_IF_ERROR(ValidateClusterId(identity.cluster_id));
  struct stat st;
  if (::stat(paths.identity_file().c_str(), &st) == 0) {
    return absl::AlreadyExistsError(
        absl::StrCat(paths.root, " already holds a slot (", paths.identity_file(), " exists)"));
  }
  RETURN_IF_ERROR(MakeDirs(paths.root));
  RETURN_IF_ERROR(MakeDirs(paths.log_dir()));
  RETURN_IF_ERROR(MakeDirs(paths.meta));
  RETURN_IF_ERROR(Spool(paths.spool).Init());
  // An empty index, so readers (a sync client) can open it before any writer.
  RETURN_IF_ERROR(Index::Open(paths.index_file()).status());
  // The identity file goes last: a slot without one is not a slot yet.
  return WriteIdentity(paths.identity_file(), identity);
}

absl::StatusOr<std::unique_ptr<Slot>> Slot::Open(const SlotPaths& paths,
                                                 const SlotOptions& options) {
  CheckMayBlock("Slot::Open");
  std::unique_ptr<Slot> slot(new Slot(paths, options));
  ASSIGN_OR_RETURN(slot->identity_, ReadIdentity(paths.identity_file()));
  slot->lock_fd_ = ::open(paths.lock_file().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (slot->lock_fd_ < 0) return ErrnoStatus(errno, "open lock file", paths.lock_file());
  if (::flock(slot->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return absl::UnavailableError(absl::StrCat(
        "slot ", paths.root, " is open in another process (", paths.lock_file(),
        " is locked); stop that process first"));
  }
  if (options.expect) {
    const SlotIdentity& want = *options.expect;
    const SlotIdentity& have = slot->identity_;
    if (want.cluster_id != have.cluster_id || want.store_id != have.store_id ||
        (want.slot_id != 0 && want.slot_id != have.slot_id)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "slot ", paths.root, " belongs to cluster ", have.cluster_id, " store ", have.store_id,
          " slot ", have.slot_id, ", not to cluster ", want.cluster_id, " store ", want.store_id,
          " slot ", want.slot_id, "; check the configured path"));
    }
  }
  if (options.discard_index) {
    for (const char* suffix : {"", "-wal", "-shm"}) {
      const std::string file = paths.index_file() + suffix;
      if (::unlink(file.c_str()) != 0 && errno != ENOENT) {
        return ErrnoStatus(errno, "delete the index to rebuild it", file);
      }
    }
  }
  slot->applier_ = std::thread([s = slot.get()] { s->ApplyLoop(); });
  RETURN_IF_ERROR(slot->Recover());
  slot->maintenance_ = std::thread([s = slot.get()] { s->MaintenanceLoop(); });
  return slot;
}

absl::Status Slot::Recover() {
  HandoffLock il(index_mu_);
  ASSIGN_OR_RETURN(index_, Index::Open(paths_.index_file(), /*autocheckpoint=*/false));
  // The spool first: a torn pack tail goes before anything is appended.
  ASSIGN_OR_RETURN(recovery_.pack_torn_tail, spool_.OpenForAppend());
  if (index_->applied_lsn() == 0) {
    // A new or rebuilt index: find the bodies the spool already holds.
    std::vector<StoredBody> found;
    RETURN_IF_ERROR(spool_.Scan(
        [&](const std::string& guid, uint64_t size, const BodyLocation& loc) {
          found.push_back({guid, size, loc});
          return absl::OkStatus();
        },
        [&](const std::string& path, uint64_t offset) {
          LogLine(Severity::kError, "spool pack damaged; skipped to the next valid entry",
                  Kv("file", path) + Kv("offset", offset));
        }));
    if (!found.empty()) RETURN_IF_ERROR(index_->SetBlobLocations(found));
    recovery_.bodies_located = found.size();
  }
  struct stat st;
  if (index_->applied_lsn() == 0 && ::stat(paths_.base_snapshot().c_str(), &st) == 0) {
    // A rebuilt index starts from the base snapshot left by log retention.
    RETURN_IF_ERROR(mailrepl::ImportSnapshot(paths_.base_snapshot(), *index_, spool_));
  }
  const uint64_t applied = index_->applied_lsn();
  const uint64_t applied_local = index_->applied_local();
  uint64_t locals_at_applied = 0;  // local records seen at LSN == applied
  const uint64_t checkpoint = index_->spool_checkpoint_lsn();
  ASSIGN_OR_RETURN(LogReader reader, LogReader::Open(paths_.log_dir(), 1, /*recovery=*/true));
  std::vector<LogRecord> batch;
  uint64_t last_lsn = 0;
  uint64_t last_epoch = index_->applied_epoch();
  for (;;) {
    LogRecord r;
    ASSIGN_OR_RETURN(bool more, reader.Next(&r));
    if (!more) break;
    last_lsn = r.lsn;
    last_epoch = r.epoch;
    if (r.lsn > checkpoint && r.type == RecordType::kAppend) {
      logpb::Append p;
      if (p.ParseFromString(r.payload) && p.has_body()) {
        if (Sha1(p.body()) != p.guid()) {
          return absl::DataLossError(absl::StrCat("change log ", reader.current_path(),
                                                  ": body of LSN ", r.lsn,
                                                  " does not hash to its GUID"));
        }
        ASSIGN_OR_RETURN(std::optional<BodyLocation> loc, index_->BlobLocation(p.guid()));
        absl::Status found = loc ? spool_.Read(p.guid(), *loc).status()
                                 : absl::NotFoundError("not in the spool");
        if (!found.ok()) {
          if (loc) {  // written, then lost or damaged (not merely unwritten at a crash)
            LogLine(Severity::kWarning, "spool body restored from the log",
                    Kv("slot", paths_.root) + Kv("guid", GuidHex(p.guid())) +
                        Kv("lsn", r.lsn) + Kv("reason", found.message()));
          }
          absl::StatusOr<BodyLocation> w = spool_.Append(p.guid(), p.body());
          if (w.status().code() == absl::StatusCode::kResourceExhausted) {
            // A full disk must not keep the slot closed: serve the body from
            // memory and let the background writer retry.
            LogLine(Severity::kWarning, "spool full; body kept in memory",
                    Kv("slot", paths_.root) + Kv("guid", GuidHex(p.guid())));
            bodies_->Enqueue(p.guid(), std::make_shared<const std::string>(p.body()), r.lsn);
          } else {
            RETURN_IF_ERROR(w.status());
            RETURN_IF_ERROR(index_->SetBlobLocation({p.guid(), p.body().size(), *w}));
          }
          ++recovery_.bodies_restored;
        }
      }
    }
    bool needed = r.lsn > applied;
    if (r.lsn == applied && IsLocalRecordType(r.type)) {
      needed = ++locals_at_applied > applied_local;
    }
    if (needed) {
      batch.push_back(std::move(r));
      if (batch.size() >= kReplayBatch) {
        RETURN_IF_ERROR(index_->Apply(batch, /*quarantine_misfits=*/true));
        recovery_.records_replayed += batch.size();
        batch.clear();
      }
    }
  }
  if (!batch.empty()) {
    RETURN_IF_ERROR(index_->Apply(batch, /*quarantine_misfits=*/true));
    recovery_.records_replayed += batch.size();
  }
  if (last_lsn == 0) last_lsn = index_->applied_lsn();  // empty log after retention or import
  if (index_->applied_lsn() > last_lsn) {
    // Checked before truncating anything, so the evidence stays on disk.
    return absl::DataLossError(absl::StrCat(
        "index ", paths_.index_file(), " is at LSN ", index_->applied_lsn(),
        " but the change log in ", paths_.log_dir(), " ends at LSN ", last_lsn,
        "; the log lost acknowledged records: restore the slot from a replica"));
  }
  if (reader.torn_tail()) {
    const TornTail& t = *reader.torn_tail();
    if (::truncate(t.path.c_str(), static_cast<off_t>(t.offset)) != 0) {
      return ErrnoStatus(errno, "truncate torn tail of", t.path);
    }
    RETURN_IF_ERROR(SyncFile(t.path));
    LogLine(Severity::kWarning, "change log torn tail truncated",
            Kv("file", t.path) + Kv("offset", t.offset) + Kv("bytes_dropped", t.bytes_dropped));
    recovery_.torn_tail = t;
  }
  recovery_.last_lsn = last_lsn;
  // Appends go right after the last record, over the zeros kept ahead of it.
  std::optional<LogWriter::AppendAt> append_at;
  if (!reader.torn_tail() && !reader.current_path().empty()) {
    append_at = LogWriter::AppendAt{reader.current_path(), reader.end_offset()};
  }
  ASSIGN_OR_RETURN(LogWriter w, LogWriter::Open(paths_.log_dir(), last_lsn + 1,
                                                options_.segment_bytes, append_at));
  log_.emplace(std::move(w));
  MutexLock l(mu_);
  next_lsn_ = last_lsn + 1;
  epoch_ = last_epoch;
  LoadAssignedStateLocked();
  return absl::OkStatus();
}

void Slot::LoadAssignedStateLocked() {
  // REQUIRES: index_mu_ held by the caller too, or no concurrent user.
  mailboxes_.clear();
  names_.clear();
  usage_.clear();
  limits_.clear();
  for (const auto& [id, mb] : index_->mailboxes()) {
    MailboxState s{mb.id, mb.name, mb.uidvalidity, mb.last_uid, mb.highest_modseq};
    names_[mb.name] = id;
    mailboxes_[id] = std::move(s);
    Usage& u = usage_[mb.owner];
    u.bytes += mb.bytes;
    u.messages += mb.messages;
    last_uidvalidity_ = std::max(last_uidvalidity_, mb.uidvalidity);
  }
  for (const auto& [user, q] : index_->Quotas()) {
    if (q.storage_limit || q.message_limit) limits_[user] = {q.storage_limit, q.message_limit};
  }
}

std::string Slot::NewMailboxId() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string raw(16, '\0');
  for (int i = 0; i < 16; i += 8) {
    uint64_t v = rng();
    std::memcpy(raw.data() + i, &v, 8);
  }
  return absl::BytesToHexString(raw);
}

absl::Status Slot::WritableLocked() {
  {
    MutexLock al(apply_mu_);
    if (failed_.ok() && !apply_failed_.ok()) failed_ = apply_failed_;
  }
  if (!failed_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("slot ", paths_.root, " stopped taking writes after an error (",
                     failed_.message(), "); reopen it"));
  }
  return absl::OkStatus();
}

absl::Status Slot::BeginExclusiveLocked(MutexLock& lock) {
  ++exclusive_;
  while (!queue_.empty()) idle_cv_.Wait(lock);
  if (assigned_stale_) {
    HandoffLock il(index_mu_);
    LoadAssignedStateLocked();
    assigned_stale_ = false;
  }
  absl::Status s = WritableLocked();
  if (!s.ok()) EndExclusiveLocked();
  return s;
}

void Slot::EndExclusiveLocked() {
  --exclusive_;
  idle_cv_.SignalAll();
}

auto Slot::EndExclusiveAtExit() {
  // The analysis checks the lambda on its own, not knowing that it runs
  // from a destructor inside the caller's MutexLock scope: it is told.
  return absl::Cleanup([this] {
    mu_.AssertHeld();
    EndExclusiveLocked();
  });
}

void Slot::AddRecordLocked(Writer& w, RecordType type, const std::string& payload) {
  LogRecord r;
  r.lsn = IsLocalRecordType(type) ? next_lsn_ - 1 : next_lsn_++;
  r.epoch = epoch_;
  r.type = type;
  r.payload = payload;
  EncodeRecord(r, &w.encoded);
  w.records.push_back(std::move(r));
}

absl::Status Slot::CommitLocked(Writer& w, MutexLock& lock) {
  queue_.push_back(&w);
  if (leader_gathering_ && queue_.size() >= static_cast<size_t>(appends_active_.load())) {
    queue_.front()->cv.Signal();  // everyone the leader waits for is here
  }
  while (!w.done && &w != queue_.front()) w.cv.Wait(lock);
  if (w.done) return w.status;

  // The writers of the previous batch were woken when this leader was; most
  // come back with their next append within microseconds. With other
  // appends in progress (and no exclusive operation), wait briefly for them
  // to queue, so that batches hold every active writer instead of about
  // half of them (the rest would wait a whole commit for the next batch).
  if (exclusive_ == 0 && queue_.size() < static_cast<size_t>(appends_active_.load())) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::microseconds(kMaxGatherMicros);
    leader_gathering_ = true;
    while (queue_.size() < static_cast<size_t>(appends_active_.load()) &&
           w.cv.WaitUntil(lock, deadline)) {
    }
    leader_gathering_ = false;
  }

  // This writer leads: take a batch from the front of the queue.
  std::vector<Writer*> batch;
  std::string joined;
  std::vector<LogRecord> records;
  size_t bytes = 0;
  for (Writer* x : queue_) {
    if (!batch.empty() && bytes + x->encoded.size() > kMaxBatchBytes) break;
    batch.push_back(x);
    bytes += x->encoded.size();
  }
  const uint64_t first_lsn = batch.front()->records.front().lsn;
  // Released for the write and the fdatasync (mu_, not `lock`: see
  // common/mutex.h); taken again below.
  mu_.unlock();
  joined.reserve(bytes);
  for (Writer* x : batch) {
    joined.append(x->encoded);
    for (LogRecord& r : x->records) records.push_back(std::move(r));  // the writers keep their LSNs
  }
  const absl::Time t0 = absl::Now();
  absl::Status write = log_->Append(first_lsn, joined);
  const absl::Time t1 = absl::Now();
  absl::Status sync = write.ok() ? log_->Sync() : absl::OkStatus();
  const absl::Time t2 = absl::Now();
  const bool durable = write.ok() && sync.ok();
  bool replicated = false;
  for (Writer* x : batch) replicated |= x->replicated;
  if (durable) {
    // The records are durable: their new bodies may go to the spool now, in
    // LSN order, in the background (written here when the queue is full).
    // From here on HasBlob() finds them pending.
    for (Writer* x : batch) {
      const uint64_t lsn = x->records.back().lsn;
      for (auto& [guid, body] : x->bodies) {
        if (!bodies_->Enqueue(guid, body, lsn)) {
          absl::Status b = StoreBody(guid, *body);
          if (!b.ok()) {
            LogLine(Severity::kError, "spool write failed; the body stays in the log",
                    Kv("slot", paths_.root) + Kv("guid", GuidHex(guid)) + Kv("error", b.message()));
          }
        }
      }
    }
    // Lock the index for this batch (once the batch before is applied) and
    // hand the lock to the applier: whoever reads the index after the
    // writers are told OK waits until their records are in it. Hand-off:
    // the applier thread unlocks it (ApplyLoop), which the analysis cannot
    // follow, so the lock is taken with LockForHandoff.
    index_mu_.LockForHandoff();
  }
  mu_.lock();

  absl::Status result = absl::OkStatus();
  if (!write.ok()) {
    // Nothing of the batch is in the log (the writer cut it back). Writers
    // queued behind it were validated against state that now never happens.
    result = write;
    LogLine(Severity::kError, "change log append failed",
            Kv("slot", paths_.root) + Kv("error", write.message()));
  } else if (!sync.ok()) {
    // After a failed fsync the page cache can no longer be trusted
    // (PostgreSQL's lesson): stop writing until the slot is reopened.
    failed_ = sync;
    result = sync;
    LogLine(Severity::kError, "change log fsync failed",
            Kv("slot", paths_.root) + Kv("error", sync.message()));
  } else {
    ++stats_.commits;
    stats_.records += records.size();
    stats_.bytes += joined.size();
    stats_.write_time += t1 - t0;
    stats_.sync_time += t2 - t1;
    {
      // Pushed under mu_, so jobs queue in LSN order.
      MutexLock al(apply_mu_);
      apply_queue_.push_back({std::move(records), replicated, joined.size()});
    }
    apply_cv_.Signal();
    if (options_.on_durable) options_.on_durable(batch.back()->records.back().lsn);
  }
  for (Writer* x : batch) {
    queue_.pop_front();
    x->status = result;
    x->done = true;
    if (x != &w) x->cv.Signal();
  }
  if (!result.ok()) {
    while (!queue_.empty()) {
      Writer* x = queue_.front();
      queue_.pop_front();
      x->status = absl::UnavailableError(
          absl::StrCat("write aborted because an earlier write failed: ", result.message()));
      x->done = true;
      x->cv.Signal();
    }
    HandoffLock il(index_mu_);
    next_lsn_ = index_->applied_lsn() + 1;
    epoch_ = index_->applied_epoch();
    LoadAssignedStateLocked();
  }
  if (!queue_.empty()) queue_.front()->cv.Signal();
  if (queue_.empty()) idle_cv_.SignalAll();
  return w.status;
}

absl::Status Slot::CheckFreeSpace(uint64_t need) {
  // A statvfs per file system per append showed in replicad's profile. A
  // reading is reused for kFreeSpaceRecheck while it leaves more than twice
  // the reserve beyond what appends were granted since; near the reserve,
  // every append looks again.
  const uint64_t pending = bodies_->pending_bytes();  // still to be written to the spool
  const absl::Time now = absl::Now();
  MutexLock l(space_mu_);
  const std::string dirs[2] = {paths_.log_dir(), paths_.spool};
  for (int i = 0; i < 2; ++i) {
    FreeSpaceReading& r = space_[i];
    if (now - r.at >= kFreeSpaceRecheck ||
        r.free_bytes < r.granted + need + pending + 2 * options_.reserve_bytes) {
      struct statvfs st;
      if (::statvfs(dirs[i].c_str(), &st) != 0) return ErrnoStatus(errno, "statvfs", dirs[i]);
      r = {.at = now, .free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize};
    }
    if (r.free_bytes < r.granted + need + pending + options_.reserve_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "No space left on device: ", r.free_bytes, " bytes free on the file system of ",
          dirs[i], ", appends stop at a reserve of ", options_.reserve_bytes, " bytes; free space"));
    }
  }
  for (FreeSpaceReading& r : space_) r.granted += need;
  return absl::OkStatus();
}

absl::StatusOr<Slot::MailboxState*> Slot::FindByNameLocked(const std::string& name) {
  auto it = names_.find(name);
  if (it == names_.end()) return NoMailbox(name);
  return &mailboxes_[it->second];
}

absl::Status Slot::CheckQuotaLocked(const std::string& user, uint64_t bytes, uint64_t messages) {
  auto lim = limits_.find(user);
  if (lim == limits_.end()) return absl::OkStatus();
  const Usage& u = usage_[user];
  if (lim->second.bytes && u.bytes + bytes > lim->second.bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("over quota: user ", user, " uses ", u.bytes, " of ", lim->second.bytes,
                     " bytes and this needs ", bytes, " more"));
  }
  if (lim->second.messages && u.messages + messages > lim->second.messages) {
    return absl::ResourceExhaustedError(
        absl::StrCat("over quota: user ", user, " has ", u.messages, " of ",
                     lim->second.messages, " messages"));
  }
  return absl::OkStatus();
}

absl::StatusOr<MailboxInfo> Slot::CreateMailbox(const std::string& name) {
  CheckMayBlock("Slot::CreateMailbox");
  RETURN_IF_ERROR(ValidateMailboxName(name));
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  if (names_.contains(name)) {
    return absl::AlreadyExistsError(absl::StrCat("mailbox '", name, "' already exists"));
  }
  logpb::CreateMailbox p;
  p.set_mailbox_id(NewMailboxId());
  p.set_name(name);
  uint32_t now = static_cast<uint32_t>(absl::ToUnixSeconds(absl::Now()));
  last_uidvalidity_ = std::max(now, last_uidvalidity_ + 1);
  p.set_uidvalidity(last_uidvalidity_);
  Writer w;
  AddRecordLocked(w, RecordType::kCreateMailbox, p.SerializeAsString());
  RETURN_IF_ERROR(CommitLocked(w, lock));
  HandoffLock il(index_mu_);
  const MailboxInfo* mb = index_->FindMailbox(p.mailbox_id());
  if (mb == nullptr) return absl::InternalError("created mailbox missing from the index");
  // An empty mailbox: names and states gain one entry, usage is unchanged
  // (no reload of every mailbox: that made creation O(mailboxes)).
  names_[mb->name] = mb->id;
  mailboxes_[mb->id] = MailboxState{mb->id, mb->name, mb->uidvalidity, mb->last_uid,
                                    mb->highest_modseq};
  last_uidvalidity_ = std::max(last_uidvalidity_, mb->uidvalidity);
  return *mb;
}

absl::Status Slot::RenameMailbox(const std::string& from, const std::string& to) {
  CheckMayBlock("Slot::RenameMailbox");
  RETURN_IF_ERROR(ValidateMailboxName(to));
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  if (!names_.contains(from)) return NoMailbox(from);
  if (IsSameOrBelow(to, from)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot rename '", from, "' to '", to, "': the target is inside it"));
  }
  Writer w;
  // The mailbox and its children, parents first.
  std::vector<std::pair<std::string, std::string>> moves;  // old name, id
  for (const auto& [name, id] : names_) {
    if (IsSameOrBelow(name, from)) moves.push_back({name, id});
  }
  std::sort(moves.begin(), moves.end());
  for (const auto& [name, id] : moves) {
    std::string new_name = to + name.substr(from.size());
    RETURN_IF_ERROR(ValidateMailboxName(new_name));
    if (names_.contains(new_name)) {
      return absl::AlreadyExistsError(absl::StrCat("mailbox '", new_name, "' already exists"));
    }
  }
  for (const auto& [name, id] : moves) {
    logpb::RenameMailbox p;
    p.set_mailbox_id(id);
    p.set_old_name(name);
    p.set_new_name(to + name.substr(from.size()));
    AddRecordLocked(w, RecordType::kRenameMailbox, p.SerializeAsString());
  }
  absl::Status s = CommitLocked(w, lock);
  HandoffLock il(index_mu_);
  LoadAssignedStateLocked();
  return s;
}

absl::Status Slot::DeleteMailbox(const std::string& name) {
  CheckMayBlock("Slot::DeleteMailbox");
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  auto it = names_.find(name);
  if (it == names_.end()) return NoMailbox(name);
  for (const auto& [other, id] : names_) {
    if (other != name && IsSameOrBelow(other, name)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "mailbox '", name, "' has children (", other, "); delete them first"));
    }
  }
  logpb::DeleteMailbox p;
  p.set_mailbox_id(it->second);
  p.set_name(name);
  Writer w;
  AddRecordLocked(w, RecordType::kDeleteMailbox, p.SerializeAsString());
  absl::Status s = CommitLocked(w, lock);
  HandoffLock il(index_mu_);
  LoadAssignedStateLocked();
  return s;
}

absl::StatusOr<AppendResult> Slot::Append(const AppendRequest& req) {
  CheckMayBlock("Slot::Append");
  constexpr uint64_t kRecordOverhead = 64 << 10;  // metadata beside the body in a record
  if (req.body.size() > options_.max_message_bytes ||
      req.body.size() + kRecordOverhead > kMaxRecordPayload) {
    return absl::OutOfRangeError(absl::StrCat("message of ", req.body.size(),
                                              " bytes exceeds the limit of ",
                                              options_.max_message_bytes, " bytes"));
  }
  if (req.body.empty()) return absl::InvalidArgumentError("message is empty");
  for (const auto& f : req.flags) RETURN_IF_ERROR(ValidateFlag(f));
  // Exclusive, so not counted in appends_active_ (commit leaders wait for those).
  if (req.unless_present) return AppendUnlessPresent(req);
  appends_active_.fetch_add(1);
  absl::Cleanup leave = [&] { appends_active_.fetch_sub(1); };
  const std::string guid = Sha1(req.body);
  ASSIGN_OR_RETURN(const bool known, HasBlobNoWait(guid));
  RETURN_IF_ERROR(CheckFreeSpace(req.body.size() * 2));
  {
    // Refuse early an append over quota. An unknown name is left to the
    // check below: the mailbox may be in the middle of its creation (in the
    // index already, not yet in names_), which that check waits out.
    MutexLock l(mu_);
    if (names_.contains(req.mailbox)) {
      RETURN_IF_ERROR(CheckQuotaLocked(MailboxOwner(req.mailbox), req.body.size(), 1));
    }
  }
  // A new body travels in its record (the log is the spool's write-ahead
  // log) and reaches its spool file after the record is durable.

  MutexLock lock(mu_);
  while (exclusive_ != 0 || (assigned_stale_ && !queue_.empty())) idle_cv_.Wait(lock);
  if (assigned_stale_) {
    HandoffLock il(index_mu_);
    LoadAssignedStateLocked();
    assigned_stale_ = false;
  }
  RETURN_IF_ERROR(WritableLocked());
  return AppendLocked(req, guid, known, lock);
}

absl::StatusOr<AppendResult> Slot::AppendUnlessPresent(const AppendRequest& req) {
  if (req.unless_present->count == 0) {
    return absl::InvalidArgumentError("unless_present.count must be at least 1");
  }
  const std::string guid = Sha1(req.body);
  ASSIGN_OR_RETURN(const bool known, HasBlobNoWait(guid));
  RETURN_IF_ERROR(CheckFreeSpace(req.body.size() * 2));
  MutexLock lock(mu_);
  // Exclusive: once the queue is empty and index_mu_ is taken, every append
  // assigned before is in the index, and none comes in until this one is
  // committed, so the check and the append are one step.
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  ASSIGN_OR_RETURN(MailboxState * mb, FindByNameLocked(req.mailbox));
  {
    HandoffLock il(index_mu_);
    ASSIGN_OR_RETURN(std::vector<MessageInfo> messages,
                     index_->ListMessages(mb->id, /*include_expunged=*/false));
    uint32_t found = 0;
    for (const MessageInfo& m : messages) {  // by UID
      if (m.uid > req.unless_present->above_uid && m.guid == guid &&
          ++found == req.unless_present->count) {
        return AppendResult{.uid = m.uid,
                            .uidvalidity = mb->uidvalidity,
                            .guid = guid,
                            .already_present = true};
      }
    }
  }
  return AppendLocked(req, guid, known, lock);
}

absl::StatusOr<AppendResult> Slot::AppendLocked(const AppendRequest& req, const std::string& guid,
                                                bool known, MutexLock& lock) {
  ASSIGN_OR_RETURN(MailboxState * mb, FindByNameLocked(req.mailbox));
  const std::string owner = MailboxOwner(mb->name);
  RETURN_IF_ERROR(CheckQuotaLocked(owner, req.body.size(), 1));
  logpb::Append p;
  p.set_mailbox_id(mb->id);
  p.set_uid(mb->last_uid + 1);
  p.set_guid(guid);
  p.set_size(req.body.size());
  p.set_internal_date(req.internal_date ? req.internal_date : absl::ToUnixSeconds(absl::Now()));
  for (const std::string& f : NormalizeFlags(req.flags)) p.add_flags(f);
  p.set_modseq(mb->highest_modseq + 1);
  if (!known) {
    p.set_body(req.body);
    p.set_has_body(true);
  }
  mb->last_uid = p.uid();
  mb->highest_modseq = p.modseq();
  Usage& u = usage_[owner];
  u.bytes += req.body.size();
  u.messages += 1;
  AppendResult result{
      .uid = p.uid(), .uidvalidity = mb->uidvalidity, .guid = guid, .lsn = next_lsn_,
      .epoch = epoch_};
  Writer w;
  if (!known) w.bodies.push_back({guid, std::make_shared<const std::string>(req.body)});
  AddRecordLocked(w, RecordType::kAppend, p.SerializeAsString());
  RETURN_IF_ERROR(CommitLocked(w, lock));
  return result;
}

absl::StatusOr<std::vector<uint32_t>> Slot::Copy(const std::string& from,
                                                 const std::vector<uint32_t>& uids,
                                                 const std::string& to) {
  CheckMayBlock("Slot::Copy");
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  ASSIGN_OR_RETURN(MailboxState * src, FindByNameLocked(from));
  ASSIGN_OR_RETURN(MailboxState * dst, FindByNameLocked(to));
  std::vector<MessageInfo> msgs;
  {
    HandoffLock il(index_mu_);
    for (uint32_t uid : uids) {
      ASSIGN_OR_RETURN(auto m, index_->GetMessage(src->id, uid));
      if (!m || m->expunged) {
        return absl::NotFoundError(absl::StrCat("no message with UID ", uid, " in '", from, "'"));
      }
      msgs.push_back(std::move(*m));
    }
  }
  uint64_t bytes = 0;
  for (const auto& m : msgs) bytes += m.size;
  const std::string owner = MailboxOwner(to);
  RETURN_IF_ERROR(CheckQuotaLocked(owner, bytes, msgs.size()));
  Writer w;
  std::vector<uint32_t> out;
  for (const auto& m : msgs) {
    logpb::Append p;
    p.set_mailbox_id(dst->id);
    p.set_uid(++dst->last_uid);
    p.set_guid(m.guid);
    p.set_size(m.size);
    p.set_internal_date(m.internal_date);
    for (const auto& f : m.flags) p.add_flags(f);
    p.set_modseq(++dst->highest_modseq);
    out.push_back(p.uid());
    AddRecordLocked(w, RecordType::kAppend, p.SerializeAsString());
  }
  if (w.records.empty()) return out;
  absl::Status s = CommitLocked(w, lock);
  HandoffLock il(index_mu_);
  LoadAssignedStateLocked();
  RETURN_IF_ERROR(s);
  return out;
}

absl::Status Slot::SetFlags(const std::string& mailbox, const std::vector<uint32_t>& uid_list,
                            FlagOp op, const std::vector<std::string>& flags) {
  CheckMayBlock("Slot::SetFlags");
  std::vector<uint32_t> uids = UniqueSorted(uid_list);
  for (const auto& f : flags) RETURN_IF_ERROR(ValidateFlag(f));
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  ASSIGN_OR_RETURN(MailboxState * mb, FindByNameLocked(mailbox));
  logpb::SetFlags p;
  p.set_mailbox_id(mb->id);
  {
    HandoffLock il(index_mu_);
    for (uint32_t uid : uids) {
      ASSIGN_OR_RETURN(auto m, index_->GetMessage(mb->id, uid));
      if (!m || m->expunged) {
        return absl::NotFoundError(absl::StrCat("no message with UID ", uid, " in '", mailbox, "'"));
      }
      std::vector<std::string> now = m->flags;
      if (op == FlagOp::kReplace) now = flags;
      if (op == FlagOp::kAdd) now.insert(now.end(), flags.begin(), flags.end());
      if (op == FlagOp::kRemove) {
        std::erase_if(now, [&](const std::string& f) {
          return std::find(flags.begin(), flags.end(), f) != flags.end();
        });
      }
      now = NormalizeFlags(std::move(now));
      if (now == m->flags) continue;
      auto* c = p.add_changes();
      c->set_uid(uid);
      for (const auto& f : now) c->add_flags(f);
    }
  }
  if (p.changes_size() == 0) return absl::OkStatus();
  p.set_modseq(++mb->highest_modseq);
  Writer w;
  AddRecordLocked(w, RecordType::kSetFlags, p.SerializeAsString());
  return CommitLocked(w, lock);
}

absl::Status Slot::Expunge(const std::string& mailbox, const std::vector<uint32_t>& uid_list) {
  CheckMayBlock("Slot::Expunge");
  std::vector<uint32_t> uids = UniqueSorted(uid_list);
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  ASSIGN_OR_RETURN(MailboxState * mb, FindByNameLocked(mailbox));
  logpb::Expunge p;
  p.set_mailbox_id(mb->id);
  uint64_t bytes = 0;
  {
    HandoffLock il(index_mu_);
    for (uint32_t uid : uids) {
      ASSIGN_OR_RETURN(auto m, index_->GetMessage(mb->id, uid));
      if (!m) {
        return absl::NotFoundError(absl::StrCat("no message with UID ", uid, " in '", mailbox, "'"));
      }
      if (m->expunged) continue;
      p.add_uids(uid);
      bytes += m->size;
    }
  }
  if (p.uids_size() == 0) return absl::OkStatus();
  p.set_modseq(++mb->highest_modseq);
  Usage& u = usage_[MailboxOwner(mb->name)];
  u.bytes -= bytes;
  u.messages -= p.uids_size();
  Writer w;
  AddRecordLocked(w, RecordType::kExpunge, p.SerializeAsString());
  return CommitLocked(w, lock);
}

absl::Status Slot::SetQuota(const std::string& user, uint64_t storage_limit,
                            uint64_t message_limit) {
  CheckMayBlock("Slot::SetQuota");
  RETURN_IF_ERROR(ValidateUserName(user));
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  logpb::SetQuota p;
  p.set_user(user);
  p.set_storage_limit(storage_limit);
  p.set_message_limit(message_limit);
  Writer w;
  AddRecordLocked(w, RecordType::kSetQuota, p.SerializeAsString());
  RETURN_IF_ERROR(CommitLocked(w, lock));
  limits_[user] = {storage_limit, message_limit};
  return absl::OkStatus();
}

absl::Status Slot::BeginEpoch(uint64_t epoch) {
  CheckMayBlock("Slot::BeginEpoch");
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  if (epoch <= epoch_) {
    return absl::FailedPreconditionError(
        absl::StrCat("epoch ", epoch, " is not above the slot's epoch ", epoch_));
  }
  logpb::BeginEpoch p;
  p.set_epoch(epoch);
  p.set_previous_epoch(epoch_);
  const uint64_t previous = epoch_;
  epoch_ = epoch;
  Writer w;
  AddRecordLocked(w, RecordType::kBeginEpoch, p.SerializeAsString());
  absl::Status s = CommitLocked(w, lock);
  if (!s.ok()) epoch_ = previous;
  return s;
}

absl::Status Slot::AdminNote(const std::string& operation, const std::string& detail) {
  CheckMayBlock("Slot::AdminNote");
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  logpb::AdminNote p;
  p.set_operation(operation);
  p.set_detail(detail);
  Writer w;
  AddRecordLocked(w, RecordType::kAdminNote, p.SerializeAsString());
  return CommitLocked(w, lock);
}

absl::Status Slot::AppendReplicated(const std::vector<LogRecord>& records) {
  CheckMayBlock("Slot::AppendReplicated");
  if (records.empty()) return absl::OkStatus();
  // Bodies reach the spool after their records are durable, as in Append().
  std::vector<std::pair<std::string, std::shared_ptr<const std::string>>> bodies;
  for (const LogRecord& r : records) {
    if (r.type != RecordType::kAppend) continue;
    logpb::Append p;
    if (!p.ParseFromString(r.payload)) {
      return absl::InvalidArgumentError(absl::StrCat("record LSN ", r.lsn, " is unparsable"));
    }
    if (!p.has_body()) continue;
    if (Sha1(p.body()) != p.guid()) {
      return absl::InvalidArgumentError(
          absl::StrCat("record LSN ", r.lsn, ": body does not hash to its GUID"));
    }
    bodies.push_back({p.guid(), std::make_shared<const std::string>(std::move(*p.mutable_body()))});
  }
  // A replica stops at the same reserve as Append: refused here, the batch
  // comes again once space is freed; past it, a failed index commit would
  // stop the slot until it is reopened.
  uint64_t need = 0;
  for (const LogRecord& r : records) need += r.payload.size();
  RETURN_IF_ERROR(CheckFreeSpace(2 * need));
  MutexLock lock(mu_);
  while (exclusive_ != 0) idle_cv_.Wait(lock);
  RETURN_IF_ERROR(WritableLocked());
  uint64_t lsn = next_lsn_;
  uint64_t epoch = epoch_;
  for (const LogRecord& r : records) {
    if (!IsLogRecordType(static_cast<uint8_t>(r.type)) || IsLocalRecordType(r.type)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "record LSN ", r.lsn, " has type ", static_cast<int>(r.type),
          ", which is not a replicated record type"));
    }
    if (r.lsn != lsn) {
      return absl::FailedPreconditionError(absl::StrCat(
          "slot ", paths_.root, " expects LSN ", lsn, " next, got LSN ", r.lsn));
    }
    if (r.epoch < epoch) {
      return absl::FailedPreconditionError(absl::StrCat(
          "record LSN ", r.lsn, " carries epoch ", r.epoch, ", older than epoch ", epoch,
          " of slot ", paths_.root, " (stale master?)"));
    }
    ++lsn;
    epoch = r.epoch;
  }
  Writer w;
  w.replicated = true;
  w.bodies = std::move(bodies);
  for (const LogRecord& r : records) {
    EncodeRecord(r, &w.encoded);
    w.records.push_back(r);
  }
  next_lsn_ = lsn;
  epoch_ = epoch;
  assigned_stale_ = true;
  return CommitLocked(w, lock);
}

absl::Status Slot::RepairMailbox(const std::string& repair_payload,
                                 const std::vector<std::string>& bodies) {
  CheckMayBlock("Slot::RepairMailbox");
  logpb::RepairMailbox p;
  if (!p.ParseFromString(repair_payload) || p.mailbox_id().empty()) {
    return absl::InvalidArgumentError("unparsable mailbox repair");
  }
  if (!p.deleted()) RETURN_IF_ERROR(ValidateMailboxName(p.mailbox().name()));
  RETURN_IF_ERROR(StoreBodies(bodies));
  for (const auto& m : p.messages()) {
    ASSIGN_OR_RETURN(bool has, HasBlob(m.guid()));
    if (!has) {
      return absl::FailedPreconditionError(absl::StrCat(
          "repair of mailbox ", p.mailbox().name(), " needs body ", GuidHex(m.guid()),
          " which this slot lacks"));
    }
  }
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  Writer w;
  AddRecordLocked(w, RecordType::kRepairMailbox, repair_payload);
  absl::Status s = CommitLocked(w, lock);
  assigned_stale_ = true;
  return s;
}

std::vector<Quarantine> Slot::Quarantined() {
  CheckMayBlock("Slot::Quarantined");
  HandoffLock il(index_mu_);
  std::vector<Quarantine> out;
  for (const auto& [id, q] : index_->quarantined()) out.push_back(q);
  return out;
}

uint64_t Slot::seen_epoch() {
  CheckMayBlock("Slot::seen_epoch");
  HandoffLock il(index_mu_);
  return std::max(index_->seen_epoch(), index_->applied_epoch());
}

absl::Status Slot::NoteEpochSeen(uint64_t epoch) {
  CheckMayBlock("Slot::NoteEpochSeen");
  HandoffLock il(index_mu_);
  return index_->SetSeenEpoch(epoch);
}

// --- reads ---

std::vector<MailboxInfo> Slot::ListMailboxes() {
  CheckMayBlock("Slot::ListMailboxes");
  HandoffLock il(index_mu_);
  std::vector<MailboxInfo> out;
  for (const auto& [id, mb] : index_->mailboxes()) out.push_back(mb);
  std::sort(out.begin(), out.end(),
            [](const MailboxInfo& a, const MailboxInfo& b) { return a.name < b.name; });
  return out;
}

absl::StatusOr<MailboxInfo> Slot::GetMailbox(const std::string& name) {
  CheckMayBlock("Slot::GetMailbox");
  HandoffLock il(index_mu_);
  const MailboxInfo* mb = index_->FindMailboxByName(name);
  if (mb == nullptr) return NoMailbox(name);
  return *mb;
}

absl::StatusOr<std::vector<MessageInfo>> Slot::ListMessages(const std::string& mailbox,
                                                            bool include_expunged) {
  CheckMayBlock("Slot::ListMessages");
  HandoffLock il(index_mu_);
  const MailboxInfo* mb = index_->FindMailboxByName(mailbox);
  if (mb == nullptr) return NoMailbox(mailbox);
  return index_->ListMessages(mb->id, include_expunged);
}

absl::StatusOr<std::string> Slot::FetchBody(const std::string& mailbox, uint32_t uid) {
  CheckMayBlock("Slot::FetchBody");
  std::string guid;
  {
    HandoffLock il(index_mu_);
    const MailboxInfo* mb = index_->FindMailboxByName(mailbox);
    if (mb == nullptr) return NoMailbox(mailbox);
    ASSIGN_OR_RETURN(auto m, index_->GetMessage(mb->id, uid));
    if (!m || m->expunged) {
      return absl::NotFoundError(absl::StrCat("no message with UID ", uid, " in '", mailbox, "'"));
    }
    guid = m->guid;
  }
  return ReadBlob(guid);
}

absl::StatusOr<std::string> Slot::ReadBlob(const std::string& guid) {
  CheckMayBlock("Slot::ReadBlob");
  // Pending first: the writer records a body's location before it stops
  // serving it from memory.
  if (auto pending = bodies_->Pending(guid)) return *pending;
  std::optional<BodyLocation> loc;
  {
    HandoffLock il(index_mu_);
    ASSIGN_OR_RETURN(loc, index_->BlobLocation(guid));
  }
  if (!loc) {
    return absl::NotFoundError(absl::StrCat("body ", GuidHex(guid), " is not in the spool of ",
                                            paths_.root, "; run 'mailctl verify'"));
  }
  ASSIGN_OR_RETURN(std::string body, spool_.Read(guid, *loc));
  if (Sha1(body) != guid) {
    return absl::DataLossError(absl::StrCat(
        "body ", GuidHex(guid), " in pack ", spool_.PackPath(loc->pack), " offset ", loc->offset,
        " does not hash to its GUID (damaged); run 'mailctl verify' and resync from a replica"));
  }
  return body;
}

absl::Status Slot::StoreBody(const std::string& guid, absl::string_view body) {
  ASSIGN_OR_RETURN(BodyLocation loc, spool_.Append(guid, body));
  HandoffLock il(index_mu_);
  return index_->SetBlobLocation({guid, body.size(), loc});
}

absl::Status Slot::StoreBodies(const std::vector<std::string>& bodies) {
  CheckMayBlock("Slot::StoreBodies");
  if (bodies.empty()) return absl::OkStatus();
  std::vector<StoredBody> stored;
  for (const std::string& body : bodies) {
    std::string guid = Sha1(body);
    ASSIGN_OR_RETURN(BodyLocation loc, spool_.Append(guid, body));
    stored.push_back({std::move(guid), body.size(), loc});
  }
  // No log record carries these bodies: they are durable before they count.
  RETURN_IF_ERROR(spool_.Sync());
  HandoffLock il(index_mu_);
  return index_->SetBlobLocations(stored);
}

absl::Status Slot::FlushBodies() {
  CheckMayBlock("Slot::FlushBodies");
  return bodies_->WaitWritten(last_lsn());
}

absl::StatusOr<bool> Slot::HasBlob(const std::string& guid) {
  CheckMayBlock("Slot::FlushBodies");
  // The BodyWriter first: it records a body's location (its blobs row)
  // before it lets go of the body.
  if (bodies_->Pending(guid) != nullptr) return true;
  HandoffLock il(index_mu_);
  return index_->HasBlob(guid);
}

absl::StatusOr<bool> Slot::HasBlobNoWait(const std::string& guid) {
  if (bodies_->Pending(guid) != nullptr) return true;
  // While the applier holds the index, a body stored long ago looks new: it
  // travels in the record again and is stored twice, which is harmless. A
  // body of a batch not yet applied is still pending, so found above.
  if (!index_mu_.try_lock()) return false;
  absl::StatusOr<bool> has = index_->HasBlob(guid);
  index_mu_.unlock();
  return has;
}

QuotaInfo Slot::Quota(const std::string& user) {
  CheckMayBlock("Slot::Quota");
  HandoffLock il(index_mu_);
  return index_->Quota(user);
}

Digest Slot::SlotDigest() {
  CheckMayBlock("Slot::SlotDigest");
  HandoffLock il(index_mu_);
  return index_->slot_digest();
}

uint64_t Slot::last_lsn() {
  CheckMayBlock("Slot::last_lsn");
  HandoffLock il(index_mu_);
  return index_->applied_lsn();
}

SlotStats Slot::stats() {
  CheckMayBlock("Slot::stats");
  SlotStats out;
  {
    MutexLock l(mu_);
    out = stats_;
  }
  MutexLock al(apply_mu_);
  out.apply_time = apply_time_;
  return out;
}

uint64_t Slot::epoch() {
  CheckMayBlock("Slot::epoch");
  MutexLock l(mu_);
  return epoch_;
}

std::vector<EpochStart> Slot::EpochHistory() {
  CheckMayBlock("Slot::EpochHistory");
  HandoffLock il(index_mu_);
  return index_->epoch_history();
}

uint64_t Slot::log_start_lsn() {
  CheckMayBlock("Slot::log_start_lsn");
  HandoffLock il(index_mu_);
  return index_->log_start_lsn();
}

// --- maintenance ---

absl::Status Slot::Checkpoint() {
  CheckMayBlock("Slot::Checkpoint");
  uint64_t lsn;
  {
    HandoffLock il(index_mu_);
    lsn = index_->applied_lsn();
  }
  RETURN_IF_ERROR(bodies_->WaitWritten(lsn));
  RETURN_IF_ERROR(spool_.Sync());
  HandoffLock il(index_mu_);
  if (lsn > index_->spool_checkpoint_lsn()) RETURN_IF_ERROR(index_->SetSpoolCheckpoint(lsn));
  return absl::OkStatus();
}

absl::StatusOr<int> Slot::DropLogBelow(uint64_t lsn) {
  CheckMayBlock("Slot::DropLogBelow");
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  lock.Unlock();
  absl::Status s = Checkpoint();
  lock.Lock();
  RETURN_IF_ERROR(s);
  HandoffLock il(index_mu_);
  lsn = std::min(lsn, index_->applied_lsn() + 1);
  if (lsn <= index_->log_start_lsn()) return 0;
  // The base snapshot summarizes everything the dropped segments held.
  RETURN_IF_ERROR(WriteSnapshot(*index_, nullptr, identity_, paths_.base_snapshot()));
  ASSIGN_OR_RETURN(int dropped, log_->DropSegmentsBelow(lsn));
  ASSIGN_OR_RETURN(auto segments, ListSegments(paths_.log_dir()));
  uint64_t start = segments.empty() ? index_->applied_lsn() + 1 : segments.front().first_lsn;
  RETURN_IF_ERROR(index_->SetLogStart(std::max(start, index_->log_start_lsn())));
  LogLine(Severity::kInfo, "log retention",
          Kv("slot", paths_.root) + Kv("segments_dropped", dropped) +
              Kv("log_start_lsn", index_->log_start_lsn()));
  return dropped;
}

absl::Status Slot::ImportSnapshot(const std::string& path, bool replace) {
  CheckMayBlock("Slot::ImportSnapshot");
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  if (replace) {
    // The log goes: every body it carries must be durable in the spool first.
    RETURN_IF_ERROR(bodies_->WaitWritten(next_lsn_));
    RETURN_IF_ERROR(spool_.Sync());
  }
  HandoffLock il(index_mu_);
  if (replace && (next_lsn_ != 1 || !index_->mailboxes().empty())) {
    RETURN_IF_ERROR(DiscardLocked());
    LogLine(Severity::kWarning, "slot state replaced by a snapshot",
            Kv("slot", paths_.root) + Kv("snapshot", path));
  }
  if (next_lsn_ != 1 || !index_->mailboxes().empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "slot ", paths_.root, " is not empty (last LSN ", next_lsn_ - 1,
        "); a snapshot can only be imported into a freshly initialized slot"));
  }
  RETURN_IF_ERROR(mailrepl::ImportSnapshot(path, *index_, spool_, &identity_));
  RETURN_IF_ERROR(WriteSnapshot(*index_, nullptr, identity_, paths_.base_snapshot()));
  // The empty first segment was named for LSN 1; start over at the next LSN.
  log_.reset();
  RETURN_IF_ERROR(SyncDir(paths_.log_dir()));
  ASSIGN_OR_RETURN(auto segments, ListSegments(paths_.log_dir()));
  for (const SegmentInfo& seg : segments) {
    if (::unlink(seg.path.c_str()) != 0) return ErrnoStatus(errno, "remove", seg.path);
  }
  const uint64_t next = index_->applied_lsn() + 1;
  ASSIGN_OR_RETURN(LogWriter w, LogWriter::Open(paths_.log_dir(), next, options_.segment_bytes));
  log_.emplace(std::move(w));
  next_lsn_ = next;
  epoch_ = index_->applied_epoch();
  LoadAssignedStateLocked();
  return absl::OkStatus();
}

absl::Status Slot::DiscardLocked() {
  const uint64_t seen = std::max(index_->seen_epoch(), index_->applied_epoch());
  RETURN_IF_ERROR(index_->Clear());
  RETURN_IF_ERROR(index_->SetSeenEpoch(seen));
  ::unlink(paths_.base_snapshot().c_str());
  log_.reset();
  ASSIGN_OR_RETURN(auto old_segments, ListSegments(paths_.log_dir()));
  for (const SegmentInfo& seg : old_segments) {
    if (::unlink(seg.path.c_str()) != 0) return ErrnoStatus(errno, "remove", seg.path);
  }
  RETURN_IF_ERROR(SyncDir(paths_.log_dir()));
  next_lsn_ = 1;
  return absl::OkStatus();
}

absl::Status Slot::DiscardState() {
  CheckMayBlock("Slot::DiscardState");
  MutexLock lock(mu_);
  RETURN_IF_ERROR(BeginExclusiveLocked(lock));
  auto end = EndExclusiveAtExit();
  // The log goes: every body it carries must be durable in the spool first.
  RETURN_IF_ERROR(bodies_->WaitWritten(next_lsn_));
  RETURN_IF_ERROR(spool_.Sync());
  HandoffLock il(index_mu_);
  const uint64_t last = next_lsn_ - 1;
  RETURN_IF_ERROR(DiscardLocked());
  ASSIGN_OR_RETURN(LogWriter w, LogWriter::Open(paths_.log_dir(), 1, options_.segment_bytes));
  log_.emplace(std::move(w));
  epoch_ = 0;
  LoadAssignedStateLocked();
  LogLine(Severity::kWarning, "slot state discarded (rewound to empty)",
          Kv("slot", paths_.root) + Kv("last_lsn", last) + Kv("seen_epoch", index_->seen_epoch()));
  return absl::OkStatus();
}

absl::Status Slot::ExportSnapshot(const std::string& path) {
  CheckMayBlock("Slot::ExportSnapshot");
  RETURN_IF_ERROR(FlushBodies());
  HandoffLock il(index_mu_);
  return WriteSnapshot(*index_, &spool_, identity_, path);
}

}  // namespace mailrepl
