#include "replicad/coordinator_link.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/log_exceptions.h"
#include "rpc/rpc_client.h"

namespace mailrepl::replicad {

using asio::awaitable;

CoordinatorLink::CoordinatorLink(asio::io_context& io, CoordinatorLinkOptions options)
    : io_(io), options_(std::move(options)), pause_(io) {
  const rpc::RpcClientOptions o{.address = options_.coordinator,
                                .service = "coordinator",
                                .secret = options_.secret,
                                .client = absl::StrCat("replicad ", options_.registration.host()),
                                .connect_timeout = absl::Seconds(1)};
  client_ = std::make_unique<rpc::RpcClient>(io_, o);
  reporter_ = std::make_unique<rpc::RpcClient>(io_, o);
}

CoordinatorLink::~CoordinatorLink() = default;

void CoordinatorLink::Stop() {
  stopping_ = true;
  pause_.cancel();
  client_->Close();
  reporter_->Close();
}

void CoordinatorLink::ReportNow() {
  if (!registered_ || stopping_) return;
  if (reporting_) {
    report_again_ = true;
    return;
  }
  reporting_ = true;
  asio::co_spawn(io_, Report(), LogExceptions("coordinator status report"));
}

awaitable<void> CoordinatorLink::Report() {
  do {
    report_again_ = false;
    const absl::Duration sent = SinceBoot();
    absl::StatusOr<coordpb::Response> r = co_await reporter_->Call<coordpb::Response>(
        HeartbeatRequest(absl::ZeroDuration()), absl::Seconds(3));
    if (stopping_) break;
    if (r.ok() && r->has_heartbeat()) Absorb(r->heartbeat(), sent);
  } while (report_again_ && !stopping_);
  reporting_ = false;
}

coordpb::Request CoordinatorLink::HeartbeatRequest(absl::Duration wait) {
  coordpb::Request request;
  coordpb::Heartbeat* h = request.mutable_heartbeat();
  h->set_host(options_.registration.host());
  h->set_known_version(version_);
  h->set_known_directory_version(directory_version_);
  h->set_wait_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(wait)));
  for (coordpb::SlotStatus& s : options_.status()) *h->add_slots() = std::move(s);
  return request;
}

void CoordinatorLink::Absorb(const coordpb::HeartbeatReply& reply, absl::Duration sent) {
  // Assignments first, then the contact: a reply that fences a slot must
  // not first renew its right to write.
  struct Heard {
    CoordinatorLink* link;
    absl::Duration sent;
    bool counts = true;
    ~Heard() {
      if (!counts) return;
      link->last_heard_ = std::max(link->last_heard_, sent);
      link->options_.on_heard(sent);
    }
  } heard{this, sent};
  coordpb::Assignments a = reply.assignments();
  bool apply = false;
  if (reply.changed() && a.version() < version_) {
    // An answer older than what is applied (a late reply on the other
    // connection), or a coordinator whose topology went back (a database
    // restored from a backup): its epochs may be older than what this
    // host knows, so it renews no lease here.
    heard.counts = false;
    LogLine(Severity::kWarning, "coordinator answered with an older topology; not counted as contact",
            Kv("coordinator", options_.coordinator) + Kv("version", a.version()) +
                Kv("known_version", version_));
  }
  if (reply.changed() && a.version() > version_) {
    version_ = a.version();
    apply = true;
  } else {
    a.clear_slots();  // older than (or equal to) what is applied
  }
  if (a.users_included() && a.directory_version() > directory_version_) {
    directory_version_ = a.directory_version();
    apply = true;
  } else {
    a.set_users_included(false);
    a.clear_users();
  }
  if (apply) options_.on_assignments(a);
}

awaitable<absl::Status> CoordinatorLink::Register() {
  coordpb::Request request;
  *request.mutable_register_host() = options_.registration;
  const absl::Duration sent = SinceBoot();
  absl::StatusOr<coordpb::Response> r =
      co_await client_->Call<coordpb::Response>(request, absl::Seconds(5));
  if (!r.ok()) co_return r.status();
  if (!r->has_register_host()) co_return absl::InternalError("coordinator answered another call");
  const coordpb::Assignments& a = r->register_host().assignments();
  version_ = a.version();
  directory_version_ = a.directory_version();
  registered_ = true;
  options_.on_assignments(a);
  last_heard_ = sent;
  options_.on_heard(sent);
  LogLine(Severity::kInfo, "registered with the coordinator",
          Kv("coordinator", options_.coordinator) + Kv("version", version_) +
              Kv("slots", a.slots_size()));
  co_return absl::OkStatus();
}

awaitable<absl::Status> CoordinatorLink::Beat() {
  const absl::Duration sent = SinceBoot();
  absl::StatusOr<coordpb::Response> r = co_await client_->Call<coordpb::Response>(
      HeartbeatRequest(options_.poll), options_.poll + absl::Seconds(5));
  if (!r.ok()) co_return r.status();
  if (!r->has_heartbeat()) co_return absl::InternalError("coordinator answered another call");
  Absorb(r->heartbeat(), sent);
  co_return absl::OkStatus();
}

awaitable<void> CoordinatorLink::Run() {
  absl::Duration backoff = absl::Milliseconds(200);
  while (!stopping_) {
    // Statements, not ?:, around co_await (GCC 12, see sync_server.cc).
    absl::Status s;
    if (registered_) {
      s = co_await Beat();
    } else {
      s = co_await Register();
    }
    if (stopping_) break;
    connected_ = s.ok();
    if (s.ok()) {
      backoff = absl::Milliseconds(200);
      continue;
    }
    // The coordinator may have lost this host (a new database): register
    // again; after a transport failure the next call reconnects.
    if (absl::IsNotFound(s) || absl::IsFailedPrecondition(s)) registered_ = false;
    LogLine(Severity::kWarning, "coordinator unreachable; going on with known roles",
            Kv("coordinator", options_.coordinator) + Kv("error", s.message()) +
                Kv("retry_in", absl::FormatDuration(backoff)));
    pause_.expires_after(absl::ToChronoNanoseconds(backoff));
    asio::error_code ec;
    co_await pause_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

}  // namespace mailrepl::replicad
