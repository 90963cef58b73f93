#include "coordinator/coordinator_service.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace mailrepl::coord {
namespace {

const char* OpName(coordpb::Request::OpCase op) {
  switch (op) {
    case coordpb::Request::kRegisterHost: return "register_host";
    case coordpb::Request::kHeartbeat: return "heartbeat";
    case coordpb::Request::kLookupUser: return "lookup_user";
    case coordpb::Request::kCreateStore: return "create_store";
    case coordpb::Request::kAssignUsers: return "assign_users";
    case coordpb::Request::kSetDurability: return "set_durability";
    case coordpb::Request::kSetServiceAddress: return "set_service_address";
    case coordpb::Request::kRemoveStore: return "remove_store";
    case coordpb::Request::kRemoveSlot: return "remove_slot";
    case coordpb::Request::kRemoveHost: return "remove_host";
    case coordpb::Request::kGetStatus: return "get_status";
    case coordpb::Request::kGetHistory: return "get_history";
    case coordpb::Request::kFailover: return "failover";
    case coordpb::Request::kPromote: return "promote";
    case coordpb::Request::kRecordCheck: return "record_check";
    case coordpb::Request::kRecordSalvage: return "record_salvage";
    case coordpb::Request::OP_NOT_SET: break;
  }
  return "none";
}

// Calls that change the topology or the directory, and recorded checks:
// logged.
bool IsAdminChange(coordpb::Request::OpCase op) {
  return op == coordpb::Request::kRegisterHost || op == coordpb::Request::kCreateStore ||
         op == coordpb::Request::kAssignUsers || op == coordpb::Request::kSetDurability ||
         op == coordpb::Request::kFailover || op == coordpb::Request::kPromote ||
         op == coordpb::Request::kRecordCheck || op == coordpb::Request::kSetServiceAddress ||
         op == coordpb::Request::kRemoveStore || op == coordpb::Request::kRemoveSlot ||
         op == coordpb::Request::kRemoveHost || op == coordpb::Request::kRecordSalvage;
}

// Moves a typed reply into the Response's matching field.
template <typename Reply>
absl::StatusOr<std::string> Wrap(absl::StatusOr<Reply> reply, Reply* (coordpb::Response::*field)()) {
  if (!reply.ok()) return reply.status();
  coordpb::Response response;
  *(response.*field)() = std::move(reply).value();
  return response.SerializeAsString();
}

}  // namespace

CoordinatorService::CoordinatorService(asio::io_context& io, Coordinator& coordinator)
    : io_(io),
      coordinator_(coordinator),
      report_waiter_(io, coordinator),
      failovers_(report_waiter_, coordinator),
      promotions_(report_waiter_, coordinator) {
  coordinator_.SetChangeListener([this] { WakeAll(); });
  coordinator_.SetReportListener([this] { report_waiter_.Wake(); });
}

CoordinatorService::~CoordinatorService() {
  coordinator_.SetChangeListener(nullptr);
  coordinator_.SetReportListener(nullptr);
}

rpc::RpcHandler CoordinatorService::Handler() {
  return [this](std::string request,
                const rpc::RpcPeer& peer) -> asio::awaitable<absl::StatusOr<std::string>> {
    // Not a coroutine: Handle() copies peer into its own frame.
    return Handle(std::move(request), peer);
  };
}

void CoordinatorService::WakeAll() {
  for (asio::steady_timer* t : waiters_) t->cancel();
}

void CoordinatorService::Shutdown() {
  shutting_down_ = true;
  WakeAll();
  report_waiter_.Shutdown();
}

asio::awaitable<absl::StatusOr<coordpb::HeartbeatReply>> CoordinatorService::Heartbeat(
    const coordpb::Heartbeat& request) {
  absl::StatusOr<coordpb::HeartbeatReply> first = coordinator_.Heartbeat(request);
  if (!first.ok()) co_return first;
  const bool current = !first->changed() && !first->assignments().users_included();
  const absl::Duration wait =
      std::min({absl::Milliseconds(request.wait_ms()), kMaxWait,
                absl::Milliseconds(coordinator_.lease_ms() / 2)});
  if (!current || wait <= absl::ZeroDuration() || shutting_down_) co_return first;

  // Nothing new for this host: wait for a change (WakeAll cancels the
  // timer) or the end of the wait.
  asio::steady_timer timer(io_, absl::ToChronoNanoseconds(wait));
  waiters_.insert(&timer);
  ++stats_.heartbeats_waited;
  asio::error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  waiters_.erase(&timer);
  const Versions now = coordinator_.versions();
  if (now.topology == request.known_version() &&
      now.directory == request.known_directory_version()) {
    co_return first;  // timed out (or shutting down): still nothing new
  }
  ++stats_.heartbeats_woken;
  co_return coordinator_.HeartbeatAnswer(request.host(), request.known_version(),
                                         request.known_directory_version());
}

absl::StatusOr<std::string> CoordinatorService::Dispatch(const coordpb::Request& request) {
  using R = coordpb::Response;
  switch (request.op_case()) {
    case coordpb::Request::kRegisterHost:
      return Wrap(coordinator_.RegisterHost(request.register_host()), &R::mutable_register_host);
    case coordpb::Request::kLookupUser:
      return Wrap(coordinator_.LookupUser(request.lookup_user()), &R::mutable_lookup_user);
    case coordpb::Request::kCreateStore:
      return Wrap(coordinator_.CreateStore(request.create_store()), &R::mutable_create_store);
    case coordpb::Request::kAssignUsers:
      return Wrap(coordinator_.AssignUsers(request.assign_users()), &R::mutable_assign_users);
    case coordpb::Request::kSetDurability:
      return Wrap(coordinator_.SetDurability(request.set_durability()),
                  &R::mutable_set_durability);
    case coordpb::Request::kSetServiceAddress:
      return Wrap(coordinator_.SetServiceAddress(request.set_service_address()),
                  &R::mutable_set_service_address);
    case coordpb::Request::kRemoveStore:
      return Wrap(coordinator_.RemoveStore(request.remove_store()), &R::mutable_remove_store);
    case coordpb::Request::kRemoveSlot:
      return Wrap(coordinator_.RemoveSlot(request.remove_slot()), &R::mutable_remove_slot);
    case coordpb::Request::kRemoveHost:
      return Wrap(coordinator_.RemoveHost(request.remove_host()), &R::mutable_remove_host);
    case coordpb::Request::kGetStatus:
      return Wrap(coordinator_.GetStatus(request.get_status()), &R::mutable_get_status);
    case coordpb::Request::kGetHistory:
      return Wrap(coordinator_.GetHistory(request.get_history()), &R::mutable_get_history);
    case coordpb::Request::kRecordCheck:
      return Wrap(coordinator_.RecordCheck(request.record_check()), &R::mutable_record_check);
    case coordpb::Request::kRecordSalvage:
      return Wrap(coordinator_.RecordSalvage(request.record_salvage()),
                  &R::mutable_record_salvage);
    case coordpb::Request::kHeartbeat:  // Handle() answers these three (they wait)
    case coordpb::Request::kFailover:
    case coordpb::Request::kPromote:
    case coordpb::Request::OP_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      "the coordinator request names no operation (unknown to this coordinatord?)");
}

asio::awaitable<absl::StatusOr<std::string>> CoordinatorService::Handle(std::string bytes,
                                                                        rpc::RpcPeer peer) {
  ++stats_.requests;
  coordpb::Request request;
  if (!request.ParseFromString(bytes)) {
    ++stats_.errors;
    LogLine(Severity::kWarning, "coordinatord request refused",
            Kv("op", "unparsable") + Kv("client", peer.client) + Kv("peer", peer.address));
    co_return absl::InvalidArgumentError(
        "unparsable coordinator request: client and coordinatord disagree on coord.proto");
  }
  absl::StatusOr<std::string> out;
  if (request.op_case() == coordpb::Request::kHeartbeat) {
    // The only call that waits. (Kept out of the switch below: GCC 12
    // miscompiles a co_await inside a switch case.)
    asio::awaitable<absl::StatusOr<coordpb::HeartbeatReply>> pending =
        Heartbeat(request.heartbeat());
    absl::StatusOr<coordpb::HeartbeatReply> reply = co_await std::move(pending);
    out = Wrap(std::move(reply), &coordpb::Response::mutable_heartbeat);
  } else if (request.op_case() == coordpb::Request::kFailover) {
    asio::awaitable<absl::StatusOr<coordpb::FailoverReply>> pending =
        failovers_.Run(request.failover());
    absl::StatusOr<coordpb::FailoverReply> reply = co_await std::move(pending);
    out = Wrap(std::move(reply), &coordpb::Response::mutable_failover);
  } else if (request.op_case() == coordpb::Request::kPromote) {
    asio::awaitable<absl::StatusOr<coordpb::PromoteReply>> pending =
        promotions_.Run(request.promote());
    absl::StatusOr<coordpb::PromoteReply> reply = co_await std::move(pending);
    out = Wrap(std::move(reply), &coordpb::Response::mutable_promote);
  } else {
    out = Dispatch(request);
  }
  const char* op = OpName(request.op_case());
  if (!out.ok()) {
    ++stats_.errors;
    LogLine(Severity::kWarning, "coordinatord request refused",
            Kv("op", op) + Kv("client", peer.client) + Kv("peer", peer.address) +
                Kv("error", out.status().ToString()));
  } else if (IsAdminChange(request.op_case())) {
    const Versions v = coordinator_.versions();
    LogLine(Severity::kInfo, "coordinatord request",
            Kv("op", op) + Kv("client", peer.client) + Kv("peer", peer.address) +
                Kv("version", v.topology) + Kv("directory_version", v.directory));
  }
  co_return out;
}

}  // namespace mailrepl::coord
