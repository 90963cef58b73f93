#include "store/body_writer.h"

#include "common/log.h"

namespace mailrepl {

BodyWriter::BodyWriter(Spool& spool, size_t max_pending_bytes, size_t flush_bytes)
    : spool_(spool),
      max_pending_bytes_(max_pending_bytes),
      flush_bytes_(flush_bytes),
      thread_([this] { Run(); }) {}

BodyWriter::~BodyWriter() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

bool BodyWriter::Enqueue(const std::string& guid, std::shared_ptr<const std::string> body,
                         uint64_t lsn) {
  std::lock_guard<std::mutex> l(mu_);
  if (pending_.contains(guid)) return true;  // already on its way
  if (pending_bytes_ + body->size() > max_pending_bytes_) return false;
  pending_bytes_ += body->size();
  pending_[guid] = body;
  queue_.push_back({guid, std::move(body), lsn});
  if (pending_bytes_ >= flush_bytes_) work_cv_.notify_one();
  return true;
}

size_t BodyWriter::pending_bytes() {
  std::lock_guard<std::mutex> l(mu_);
  return pending_bytes_;
}

std::shared_ptr<const std::string> BodyWriter::Pending(const std::string& guid) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = pending_.find(guid);
  return it == pending_.end() ? nullptr : it->second;
}

absl::Status BodyWriter::WaitWritten(uint64_t lsn) {
  std::unique_lock<std::mutex> l(mu_);
  wanted_lsn_ = std::max(wanted_lsn_, lsn);
  work_cv_.notify_one();
  done_cv_.wait(l, [&] { return queue_.empty() || queue_.front().lsn > lsn || !error_.ok(); });
  if (!queue_.empty() && queue_.front().lsn <= lsn) return error_;
  return absl::OkStatus();
}

void BodyWriter::Run() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    // Wait for a burst's worth of bodies, a waiter, or the end.
    work_cv_.wait(l, [&] {
      return stopping_ || pending_bytes_ >= flush_bytes_ ||
             (!queue_.empty() && queue_.front().lsn <= wanted_lsn_);
    });
    if (queue_.empty()) {
      if (stopping_) return;
      continue;
    }
    Item item = queue_.front();  // stays queued (and served) until written
    l.unlock();
    absl::Status s = spool_.Write(item.guid, *item.body);
    l.lock();
    if (!s.ok()) {
      // The body is safe in the log; recovery restores it if we never manage.
      if (error_.ok()) {
        LogLine(Severity::kError, "spool write failed; retrying",
                Kv("guid", GuidHex(item.guid)) + Kv("error", s.message()));
      }
      error_ = s;
      done_cv_.notify_all();
      if (stopping_) return;
      work_cv_.wait_for(l, std::chrono::milliseconds(200));
      continue;
    }
    error_ = absl::OkStatus();
    queue_.pop_front();
    pending_.erase(item.guid);
    pending_bytes_ -= item.body->size();
    done_cv_.notify_all();
    if (queue_.empty()) {
      // End of a burst: flush it now, a few MiB at a time, so that the
      // checkpoint's syncfs later finds little to do and never stalls the
      // log's fdatasyncs for long.
      l.unlock();
      absl::Status synced = spool_.SyncAll();
      l.lock();
      if (!synced.ok()) {
        LogLine(Severity::kWarning, "spool syncfs failed", Kv("error", synced.message()));
      }
    }
  }
}

}  // namespace mailrepl
