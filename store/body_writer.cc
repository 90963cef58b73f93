#include "store/body_writer.h"

#include "common/log.h"

namespace mailrepl {
namespace {
// Bodies appended between two calls of the sink (one index transaction).
constexpr size_t kChunkBytes = 4u << 20;
constexpr size_t kChunkItems = 512;
}  // namespace

BodyWriter::BodyWriter(Spool& spool, LocationSink sink, size_t max_pending_bytes,
                       size_t flush_bytes)
    : spool_(spool),
      sink_(std::move(sink)),
      max_pending_bytes_(max_pending_bytes),
      flush_bytes_(flush_bytes),
      thread_([this] { Run(); }) {}

BodyWriter::~BodyWriter() {
  {
    MutexLock l(mu_);
    stopping_ = true;
  }
  work_cv_.SignalAll();
  thread_.join();
}

bool BodyWriter::Enqueue(const std::string& guid, std::shared_ptr<const std::string> body,
                         uint64_t lsn) {
  MutexLock l(mu_);
  if (pending_.contains(guid)) return true;  // already on its way
  if (pending_bytes_ + body->size() > max_pending_bytes_) return false;
  pending_bytes_ += body->size();
  pending_[guid] = body;
  queue_.push_back({guid, std::move(body), lsn});
  if (pending_bytes_ >= flush_bytes_) work_cv_.Signal();
  return true;
}

size_t BodyWriter::pending_bytes() {
  MutexLock l(mu_);
  return pending_bytes_;
}

std::shared_ptr<const std::string> BodyWriter::Pending(const std::string& guid) {
  MutexLock l(mu_);
  auto it = pending_.find(guid);
  return it == pending_.end() ? nullptr : it->second;
}

absl::Status BodyWriter::WaitWritten(uint64_t lsn) {
  MutexLock l(mu_);
  wanted_lsn_ = std::max(wanted_lsn_, lsn);
  work_cv_.Signal();
  while (!queue_.empty() && queue_.front().lsn <= lsn && error_.ok()) done_cv_.Wait(l);
  if (!queue_.empty() && queue_.front().lsn <= lsn) return error_;
  return absl::OkStatus();
}

void BodyWriter::Run() {
  MutexLock l(mu_);
  for (;;) {
    // Wait for a burst's worth of bodies, a waiter, or the end.
    while (!stopping_ && pending_bytes_ < flush_bytes_ &&
           (queue_.empty() || queue_.front().lsn > wanted_lsn_)) {
      work_cv_.Wait(l);
    }
    if (queue_.empty()) {
      if (stopping_) return;
      continue;
    }
    // A chunk from the front; it stays queued (and served) until located.
    std::vector<Item> chunk;
    size_t bytes = 0;
    for (const Item& item : queue_) {
      if (chunk.size() >= kChunkItems || (!chunk.empty() && bytes >= kChunkBytes)) break;
      chunk.push_back(item);
      bytes += item.body->size();
    }
    l.Unlock();
    std::vector<StoredBody> stored;
    absl::Status s;
    for (const Item& item : chunk) {
      absl::StatusOr<BodyLocation> loc = spool_.Append(item.guid, *item.body);
      if (!loc.ok()) {
        s = loc.status();
        break;
      }
      stored.push_back({item.guid, item.body->size(), *loc});
    }
    if (!stored.empty()) {
      absl::Status located = sink_(stored);
      if (!located.ok()) {
        s = located;
        stored.clear();  // appended again on the retry: a dead entry, harmless
      }
    }
    l.Lock();
    for (size_t i = 0; i < stored.size(); ++i) {
      const Item& item = queue_.front();
      pending_.erase(item.guid);
      pending_bytes_ -= item.body->size();
      queue_.pop_front();
    }
    if (!s.ok()) {
      // The bodies are safe in the log; recovery restores them if we never manage.
      if (error_.ok()) {
        LogLine(Severity::kError, "spool write failed; retrying",
                Kv("guid", GuidHex(chunk[stored.size()].guid)) + Kv("error", s.message()));
      }
      error_ = s;
      done_cv_.SignalAll();
      if (stopping_) return;
      work_cv_.WaitFor(l, absl::Milliseconds(200));
      continue;
    }
    error_ = absl::OkStatus();
    done_cv_.SignalAll();
    if (queue_.empty()) {
      // End of a burst: start writing it out now, so that the checkpoint's
      // fdatasync later finds little to do and never stalls the log's
      // fdatasyncs for long.
      l.Unlock();
      spool_.StartWriteback();
      l.Lock();
    }
  }
}

}  // namespace mailrepl
