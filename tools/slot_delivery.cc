#include "tools/slot_delivery.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "store/mailbox_name.h"

namespace mailrepl {
namespace {

// The most threads a run may use.
constexpr int kMaxThreads = 1024;

class SlotSink : public DeliverySink {
 public:
  explicit SlotSink(Slot& slot) : slot_(slot) {}
  absl::Status Deliver(const WorkloadMessage& m) override {
    AppendRequest req;
    req.mailbox = InboxName(m.user);
    req.body = m.bytes;
    absl::StatusOr<AppendResult> r = slot_.Append(req);
    if (!r.ok()) {
      return absl::Status(r.status().code(),
                          absl::StrCat("message ", m.index, " to ", req.mailbox,
                                       ": ", r.status().message()));
    }
    return absl::OkStatus();
  }

 private:
  Slot& slot_;
};

}  // namespace

std::string DeliveryStats::ToJson() const {
  return absl::StrFormat(
      "{\"count\": %d, \"bytes\": %d, \"seconds\": %.3f, \"msgs_per_s\": %.1f, "
      "\"mb_per_s\": %.2f, \"threads\": %d, \"last_lsn\": %d}",
      count, bytes, seconds, msgs_per_s(), mb_per_s(), threads, last_lsn);
}

std::string DeliveryOptionsError(const DeliveryOptions& options) {
  if (std::string e = Workload::OptionsError(options.workload); !e.empty())
    return e;
  if (options.threads < 1 || options.threads > kMaxThreads) {
    return absl::StrCat("threads must be 1..", kMaxThreads);
  }
  if (options.count < 1) return "count must be >= 1";
  if (options.start + options.count < options.start)
    return "start + count overflows";
  return "";
}

absl::StatusOr<DeliveryStats> RunDelivery(const DeliveryOptions& options,
                                          const SinkFactory& make_sink) {
  std::vector<std::unique_ptr<DeliverySink>> sinks;
  for (int t = 0; t < options.threads; ++t) {
    ASSIGN_OR_RETURN(std::unique_ptr<DeliverySink> sink, make_sink());
    sinks.push_back(std::move(sink));
  }
  const uint64_t end = options.start + options.count;
  std::atomic<uint64_t> next{options.start};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> delivered{0}, bytes{0};
  std::mutex error_mu;
  absl::Status error;  // the first error, guarded by error_mu

  // Each thread has its own Workload (not thread-safe); drawing its plan up
  // to the last index happens here, before the clock starts.
  std::vector<std::unique_ptr<Workload>> workloads;
  for (int t = 0; t < options.threads; ++t) {
    workloads.push_back(std::make_unique<Workload>(options.workload));
    workloads.back()->Size(end - 1);
  }
  auto work = [&](int t) {
    for (;;) {
      if (stop.load(std::memory_order_relaxed)) return;
      const uint64_t i = next.fetch_add(1);
      if (i >= end) return;
      const WorkloadMessage m = workloads[t]->Message(i);
      absl::Status s = sinks[t]->Deliver(m);
      if (!s.ok()) {
        std::lock_guard<std::mutex> l(error_mu);
        if (error.ok()) error = s;
        stop = true;
        return;
      }
      delivered.fetch_add(1, std::memory_order_relaxed);
      bytes.fetch_add(m.bytes.size(), std::memory_order_relaxed);
    }
  };
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 1; t < options.threads; ++t) threads.emplace_back(work, t);
  work(0);
  for (std::thread& th : threads) th.join();
  const auto finished = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> l(error_mu);
    RETURN_IF_ERROR(error);
  }
  DeliveryStats st;
  st.count = delivered.load();
  st.bytes = bytes.load();
  st.seconds = std::chrono::duration<double>(finished - started).count();
  st.threads = options.threads;
  return st;
}

absl::StatusOr<int> CreateWorkloadInboxes(Slot& slot, int users) {
  int created = 0;
  for (int u = 0; u < users; ++u) {
    const std::string name = InboxName(absl::StrCat("user", u));
    if (slot.GetMailbox(name).ok()) continue;
    absl::StatusOr<MailboxInfo> mb = slot.CreateMailbox(name);
    if (!mb.ok()) {
      return absl::Status(
          mb.status().code(),
          absl::StrCat("create ", name, ": ", mb.status().message()));
    }
    ++created;
  }
  return created;
}

std::unique_ptr<DeliverySink> NewSlotSink(Slot& slot) {
  return std::make_unique<SlotSink>(slot);
}

absl::StatusOr<DeliveryStats> DeliverToSlot(Slot& slot,
                                            const DeliveryOptions& options) {
  RETURN_IF_ERROR(CreateWorkloadInboxes(slot, options.workload.users).status());
  ASSIGN_OR_RETURN(
      DeliveryStats st,
      RunDelivery(options,
                  [&]() -> absl::StatusOr<std::unique_ptr<DeliverySink>> {
                    return NewSlotSink(slot);
                  }));
  st.last_lsn = slot.last_lsn();
  return st;
}

}  // namespace mailrepl
