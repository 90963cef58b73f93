// Writes new message bodies to the spool's packs in the background, after
// the records that carry them are durable in the change log. An append
// therefore costs one log write and one fdatasync; until it is in a pack and
// its location is recorded (through the sink), a body is served from
// memory. Bodies are appended in bursts, once flush_bytes are pending (or on
// WaitWritten()); each burst ends by starting the packs' writeback, so that
// the checkpoint's fdatasync later finds little left to flush. The queue is
// bounded: when it is full, Enqueue() refuses and the caller stores the body
// itself. Thread-safe.
#ifndef MAILREPL_STORE_BODY_WRITER_H_
#define MAILREPL_STORE_BODY_WRITER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "common/mutex.h"
#include "store/spool.h"

namespace mailrepl {

class BodyWriter {
 public:
  // Records where bodies went (the slot writes them to the index). Called on
  // the writer's thread, before those bodies stop being served from memory.
  using LocationSink = std::function<absl::Status(const std::vector<StoredBody>&)>;

  // spool must outlive the writer.
  BodyWriter(Spool& spool, LocationSink sink, size_t max_pending_bytes, size_t flush_bytes);
  // Writes everything still queued, then stops the thread.
  ~BodyWriter();
  BodyWriter(const BodyWriter&) = delete;
  BodyWriter& operator=(const BodyWriter&) = delete;

  // Queues the body of a record with this LSN. false: the queue is full.
  bool Enqueue(const std::string& guid, std::shared_ptr<const std::string> body, uint64_t lsn);
  // Bytes queued and not yet written.
  size_t pending_bytes();
  // The body while it is queued or being written; nullptr otherwise.
  std::shared_ptr<const std::string> Pending(const std::string& guid);
  // Waits until every body queued with an LSN <= lsn is in a pack and
  // located (not yet synced). Returns the error that keeps one from it.
  absl::Status WaitWritten(uint64_t lsn);

 private:
  struct Item {
    std::string guid;
    std::shared_ptr<const std::string> body;
    uint64_t lsn;
  };
  void Run();

  Spool& spool_;
  const LocationSink sink_;
  const size_t max_pending_bytes_;
  const size_t flush_bytes_;
  uint64_t wanted_lsn_ ABSL_GUARDED_BY(mu_) = 0;  // WaitWritten() callers need up to here
  Mutex mu_;
  CondVar work_cv_;
  CondVar done_cv_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<const std::string>> pending_
      ABSL_GUARDED_BY(mu_);
  size_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace mailrepl

#endif  // MAILREPL_STORE_BODY_WRITER_H_
