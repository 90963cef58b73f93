#include "replicad/salvager.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/offload.h"
#include "proto/api.pb.h"
#include "rpc/rpc_client.h"

namespace mailrepl::replicad {

using asio::awaitable;

namespace {

constexpr absl::Duration kApiTimeout = absl::Seconds(30);

// Runs fn (file I/O) on `blocking` when given, else here.
template <typename Fn>
awaitable<std::invoke_result_t<Fn&>> OnDisk(const std::optional<asio::any_io_executor>& blocking,
                                            Fn fn) {
  if (!blocking) co_return fn();
  co_return co_await Offload(*blocking, std::move(fn));
}

// The master's client API.
class ApiTarget : public SalvageTarget {
 public:
  ApiTarget(asio::io_context& io, const SalvageMaster& master, const std::string& secret,
            uint64_t slot_id)
      : master_(master),
        client_(io, {.address = master.api_address,
                     .service = "api",
                     .secret = secret,
                     .client = absl::StrCat("salvager slot", slot_id)}) {}

  awaitable<absl::StatusOr<bool>> AppendUnlessPresent(const salvagepb::SalvageMessage& m,
                                                      uint32_t count) override {
    apipb::Request r;
    r.set_epoch(master_.epoch);
    apipb::Append* a = r.mutable_append();
    a->set_mailbox(m.mailbox());
    a->set_message(m.body());
    for (const std::string& f : m.flags()) a->add_flags(f);
    a->set_internal_date(m.internal_date());
    a->mutable_unless_present()->set_above_uid(m.fork_uid());
    a->mutable_unless_present()->set_count(count);
    absl::StatusOr<apipb::Response> reply = co_await client_.Call<apipb::Response>(r, kApiTimeout);
    if (reply.status().code() == absl::StatusCode::kNotFound) {
      // The mailbox is missing on the master (created past the fork point).
      apipb::Request c;
      c.set_epoch(master_.epoch);
      c.mutable_create_mailbox()->set_name(m.mailbox());
      absl::StatusOr<apipb::Response> created =
          co_await client_.Call<apipb::Response>(c, kApiTimeout);
      if (!created.ok() && created.status().code() != absl::StatusCode::kAlreadyExists) {
        co_return Named(created.status(), "create mailbox", m.mailbox());
      }
      reply = co_await client_.Call<apipb::Response>(r, kApiTimeout);
    }
    if (!reply.ok()) co_return Named(reply.status(), "append to", m.mailbox());
    co_return !reply->already_present();
  }

 private:
  absl::Status Named(const absl::Status& s, absl::string_view what, const std::string& mailbox) {
    return absl::Status(s.code(), absl::StrCat("salvage: ", what, " ", mailbox, " on master slot ",
                                               master_.slot_id, " (", master_.api_address,
                                               "): ", s.message()));
  }

  SalvageMaster master_;
  rpc::RpcClient client_;
};

}  // namespace

awaitable<absl::StatusOr<salvagepb::SalvageProgress>> SalvageInto(
    const std::string& path, const SalvageSet& set, SalvageTarget& target,
    std::optional<asio::any_io_executor> blocking) {
  absl::StatusOr<salvagepb::SalvageProgress> read =
      co_await OnDisk(blocking, [&] { return ReadSalvageProgress(path); });
  if (!read.ok()) co_return read.status();
  salvagepb::SalvageProgress progress = *read;
  // Per mailbox and GUID: how many entries were seen so far. The k-th entry
  // is already there if the master holds k such messages past the fork.
  std::map<std::pair<std::string, std::string>, uint32_t> seen;
  for (uint32_t i = 0; i < set.messages.size(); ++i) {
    const salvagepb::SalvageMessage& m = set.messages[i];
    const uint32_t k = ++seen[{m.mailbox(), m.guid()}];
    if (i < progress.next()) continue;
    absl::StatusOr<bool> appended = co_await target.AppendUnlessPresent(m, k);
    if (!appended.ok()) co_return appended.status();
    if (*appended) {
      progress.set_appended(progress.appended() + 1);
    } else {
      progress.set_already_there(progress.already_there() + 1);
    }
    progress.set_next(i + 1);
    absl::Status w = co_await OnDisk(blocking, [&] { return WriteSalvageProgress(path, progress); });
    if (!w.ok()) co_return w;
  }
  co_return progress;
}

Salvager::Salvager(asio::io_context& io, SalvagerOptions options)
    : io_(io), options_(std::move(options)), wake_(io) {}

void Salvager::Wake() {
  woken_ = true;
  wake_.cancel();
}

void Salvager::Stop() {
  stopping_ = true;
  wake_.cancel();
}

awaitable<void> Salvager::Pause(absl::Duration d) {
  if (woken_ || stopping_) {
    woken_ = false;
    co_return;
  }
  if (d == absl::InfiniteDuration()) {
    wake_.expires_at(asio::steady_timer::time_point::max());
  } else {
    wake_.expires_after(absl::ToChronoNanoseconds(d));
  }
  asio::error_code ec;
  co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  woken_ = false;
}

awaitable<void> Salvager::Run() {
  while (!stopping_) {
    absl::StatusOr<std::vector<std::string>> pending =
        co_await OnDisk(options_.blocking, [&] { return PendingSalvageFiles(options_.dir); });
    if (!pending.ok()) {
      stats_.last_error = std::string(pending.status().message());
      co_await Pause(options_.retry);
      continue;
    }
    if (pending->empty()) {
      co_await Pause(absl::InfiniteDuration());
      continue;
    }
    std::optional<SalvageMaster> master =
        options_.master ? options_.master() : std::optional<SalvageMaster>();
    if (!master) {  // not following a master yet (the snapshot may be on its way)
      co_await Pause(options_.retry);
      continue;
    }
    bool failed = false;
    for (const std::string& path : *pending) {
      if (stopping_) break;
      absl::Status s = co_await SalvageFile(path, *master);
      if (!s.ok()) {
        stats_.last_error = std::string(s.message());
        LogLine(Severity::kWarning, "salvage not finished; retrying",
                Kv("slot", options_.slot_id) + Kv("file", path) + Kv("error", s.message()) +
                    Kv("retry_in", absl::FormatDuration(options_.retry)));
        failed = true;
        break;
      }
    }
    if (failed) co_await Pause(options_.retry);
  }
}

awaitable<absl::Status> Salvager::SalvageFile(const std::string& path,
                                              const SalvageMaster& master) {
  absl::StatusOr<SalvageSet> set =
      co_await OnDisk(options_.blocking, [&] { return ReadSalvageFile(path); });
  if (!set.ok()) co_return set.status();
  const salvagepb::SalvageHeader& h = set->header;
  if (h.store_id() != master.store_id) {
    co_return absl::FailedPreconditionError(absl::StrCat(
        "salvage file ", path, " holds messages of store ", h.store_id(), ", but slot ",
        options_.slot_id, " is in store ", master.store_id,
        " now: append them to store ", h.store_id(), "'s master by hand, then delete the file"));
  }
  absl::StatusOr<salvagepb::SalvageProgress> progress =
      co_await OnDisk(options_.blocking, [&] { return ReadSalvageProgress(path); });
  if (!progress.ok()) co_return progress.status();
  if (!progress->recorded()) {
    if (progress->next() < set->messages.size()) {
      ApiTarget target(io_, master, options_.secret, options_.slot_id);
      absl::StatusOr<salvagepb::SalvageProgress> done =
          co_await SalvageInto(path, *set, target, options_.blocking);
      if (!done.ok()) co_return done.status();
      *progress = *done;
      progress->set_master_slot_id(master.slot_id);
    }
    if (options_.record) {
      coordpb::RecordSalvage r;
      r.set_store_id(h.store_id());
      r.set_slot_id(h.slot_id());
      r.set_from_lsn(h.from_lsn());
      r.set_to_lsn(h.to_lsn());
      r.set_fork_lsn(h.fork_lsn());
      r.set_messages(static_cast<uint32_t>(set->messages.size()));
      r.set_appended(progress->appended());
      r.set_already_there(progress->already_there());
      r.set_master_slot_id(progress->master_slot_id() != 0 ? progress->master_slot_id()
                                                           : master.slot_id);
      absl::Status recorded = co_await options_.record(r);
      if (!recorded.ok()) co_return recorded;
    }
    progress->set_recorded(true);
    absl::Status w =
        co_await OnDisk(options_.blocking, [&] { return WriteSalvageProgress(path, *progress); });
    if (!w.ok()) co_return w;
  }
  absl::Status done = co_await OnDisk(options_.blocking, [&] { return MarkSalvageDone(path); });
  if (!done.ok()) co_return done;
  ++stats_.salvages_done;
  stats_.appended += progress->appended();
  stats_.already_there += progress->already_there();
  LogLine(Severity::kInfo, "salvage done",
          Kv("slot", options_.slot_id) + Kv("store", h.store_id()) +
              Kv("lsns", absl::StrCat(h.from_lsn(), "-", h.to_lsn())) +
              Kv("messages", set->messages.size()) + Kv("appended", progress->appended()) +
              Kv("already_there", progress->already_there()) + Kv("master", master.slot_id));
  co_return absl::OkStatus();
}

}  // namespace mailrepl::replicad
