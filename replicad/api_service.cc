#include "replicad/api_service.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "replicad/work_pool.h"
#include "store/mailbox_name.h"
#include "store/verify.h"
#include "store/types.h"

namespace mailrepl::api {

using asio::awaitable;
using asio::use_awaitable;

namespace {

// The status with "field: " in front of its message, same code.
absl::Status InField(absl::string_view field, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(field, ": ", status.message()));
}

absl::Status CheckMailbox(absl::string_view field, const std::string& name) {
  return InField(field, ValidateMailboxName(name));
}

absl::Status CheckFlags(absl::string_view field,
                        const google::protobuf::RepeatedPtrField<std::string>& flags) {
  for (const std::string& flag : flags) {
    absl::Status s = ValidateFlag(flag);
    if (!s.ok()) return InField(field, s);
  }
  return absl::OkStatus();
}

void ToProto(const MailboxInfo& info, apipb::Mailbox* out) {
  out->set_id(info.id);
  out->set_name(info.name);
  out->set_uidvalidity(info.uidvalidity);
  out->set_last_uid(info.last_uid);
  out->set_highest_modseq(info.highest_modseq);
  out->set_messages(static_cast<uint32_t>(std::min<uint64_t>(info.messages, UINT32_MAX)));
  out->set_digest(info.MailboxDigest().Hex());
  out->set_bytes(info.bytes);
}

void ToProto(const MessageInfo& info, apipb::Message* out) {
  out->set_uid(info.uid);
  out->set_guid(absl::BytesToHexString(info.guid));
  out->set_size(info.size);
  out->set_internal_date(info.internal_date);
  for (const std::string& flag : info.flags) out->add_flags(flag);
  out->set_modseq(info.modseq);
}

void ToProto(const QuotaInfo& info, apipb::Quota* out) {
  out->set_user(info.user);
  out->set_storage_used(info.storage_used);
  out->set_storage_limit(info.storage_limit);
  out->set_messages_used(info.messages_used);
  out->set_message_limit(info.message_limit);
}

std::vector<std::string> ToVector(const google::protobuf::RepeatedPtrField<std::string>& in) {
  return {in.begin(), in.end()};
}

std::vector<uint32_t> ToVector(const google::protobuf::RepeatedField<uint32_t>& in) {
  return {in.begin(), in.end()};
}

}  // namespace

bool ApiService::IsWrite(const apipb::Request& request) {
  switch (request.op_case()) {
    case apipb::Request::kCreateMailbox:
    case apipb::Request::kRenameMailbox:
    case apipb::Request::kDeleteMailbox:
    case apipb::Request::kSetFlags:
    case apipb::Request::kExpunge:
    case apipb::Request::kSetQuota:
    case apipb::Request::kAppend:
      return true;
    case apipb::Request::kListMailboxes:
    case apipb::Request::kListMessages:
    case apipb::Request::kFetchBody:
    case apipb::Request::kGetQuota:
    case apipb::Request::kGetSlot:
    case apipb::Request::kCheckStore:  // writes only to replicas, via sync
    case apipb::Request::OP_NOT_SET:
      return false;
  }
  return false;
}

absl::Status ValidateRequest(const apipb::Request& r) {
  switch (r.op_case()) {
    case apipb::Request::kCreateMailbox:
      return CheckMailbox("create_mailbox.name", r.create_mailbox().name());
    case apipb::Request::kRenameMailbox: {
      absl::Status s = CheckMailbox("rename_mailbox.from", r.rename_mailbox().from());
      if (!s.ok()) return s;
      return CheckMailbox("rename_mailbox.to", r.rename_mailbox().to());
    }
    case apipb::Request::kDeleteMailbox:
      return CheckMailbox("delete_mailbox.name", r.delete_mailbox().name());
    case apipb::Request::kListMailboxes:
      return absl::OkStatus();  // any prefix; "" lists all
    case apipb::Request::kListMessages:
      return CheckMailbox("list_messages.mailbox", r.list_messages().mailbox());
    case apipb::Request::kFetchBody:
      return CheckMailbox("fetch_body.mailbox", r.fetch_body().mailbox());
    case apipb::Request::kSetFlags: {
      const apipb::SetFlags& f = r.set_flags();
      absl::Status s = CheckMailbox("set_flags.mailbox", f.mailbox());
      if (!s.ok()) return s;
      if (!apipb::SetFlags::Op_IsValid(f.op())) {
        return absl::InvalidArgumentError(
            absl::StrCat("set_flags.op: unknown operation ", static_cast<int>(f.op()),
                         " (ADD = 0, REMOVE = 1, REPLACE = 2)"));
      }
      return CheckFlags("set_flags.flags", f.flags());
    }
    case apipb::Request::kExpunge:
      return CheckMailbox("expunge.mailbox", r.expunge().mailbox());
    case apipb::Request::kGetQuota:
      return InField("get_quota.user", ValidateUserName(r.get_quota().user()));
    case apipb::Request::kSetQuota:
      return InField("set_quota.user", ValidateUserName(r.set_quota().user()));
    case apipb::Request::kAppend: {
      absl::Status s = CheckMailbox("append.mailbox", r.append().mailbox());
      if (!s.ok()) return s;
      if (r.append().has_unless_present() && r.append().unless_present().count() == 0) {
        return absl::InvalidArgumentError("append.unless_present.count must be at least 1");
      }
      return CheckFlags("append.flags", r.append().flags());
    }
    case apipb::Request::kGetSlot:
      return absl::OkStatus();
    case apipb::Request::kCheckStore:
      if (r.check_store().max_bytes_per_second() < 0) {
        return absl::InvalidArgumentError("check_store.max_bytes_per_second must not be negative");
      }
      return absl::OkStatus();
    case apipb::Request::OP_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      "the request has no operation set (or one this server does not know)");
}

ApiService::ApiService(Slot& slot, ApiServiceOptions options)
    : slot_(slot), options_(std::move(options)), work_(options_.work) {
  if (work_ == nullptr) {
    own_pool_ = std::make_unique<replicad::HostPool>(std::max(1, options_.threads));
    own_work_ = std::make_unique<replicad::WorkGate>(own_pool_->executor(), options_.threads);
    work_ = own_work_.get();
  }
}

ApiService::~ApiService() {
  if (own_pool_) {
    own_work_->Close();
    own_pool_.reset();  // joins
  }
}

ApiServiceStats ApiService::stats() const {
  return {reads_.load(), writes_.load(), refused_writes_.load(), errors_.load()};
}

awaitable<absl::StatusOr<apipb::Response>> ApiService::CheckStore(apipb::Request request) {
  if (!options_.check_store) {
    ++errors_;
    co_return absl::UnimplementedError("this server does not run consistency checks");
  }
  const absl::Time start = absl::Now();
  const apipb::CheckStore params = request.check_store();
  absl::StatusOr<checkpb::StoreCheck> check = co_await options_.check_store(params);
  if (!check.ok()) {
    ++errors_;
    co_return check.status();
  }
  if (params.deep()) {
    // The master's own damage: bodies against their GUIDs, index against log.
    auto work = [this, rate = params.max_bytes_per_second()] {
      return VerifySlot(slot_, {.max_bytes_per_second = rate});
    };
    awaitable<absl::StatusOr<VerifyReport>> done = work_->Run(std::move(work));
    absl::StatusOr<VerifyReport> mine = co_await std::move(done);
    if (!mine.ok()) {
      check->add_master_problems(absl::StrCat("verify could not run: ", mine.status().message()));
    } else {
      check->set_bodies_hashed(mine->blobs);
      check->set_bytes_hashed(mine->bytes);
      for (const std::string& p : mine->problems) check->add_master_problems(p);
      for (const VerifyReport::BadBody& b : mine->bad_bodies) {
        check->add_master_problems(b.problem);
      }
    }
  }
  check->set_seconds(absl::ToDoubleSeconds(absl::Now() - start));
  ++reads_;
  apipb::Response response;
  *response.mutable_check() = std::move(*check);
  co_return response;
}

rpc::RpcHandler ApiService::Handler() {
  return [this](std::string request,
                const rpc::RpcPeer& peer) -> awaitable<absl::StatusOr<std::string>> {
    return Handle(std::move(request));
  };
}

awaitable<absl::StatusOr<std::string>> ApiService::Handle(std::string bytes) {
  apipb::Request request;
  if (!request.ParseFromString(bytes)) {
    ++errors_;
    co_return absl::InvalidArgumentError("unparsable api request");
  }
  absl::StatusOr<apipb::Response> response = co_await Call(std::move(request));
  if (!response.ok()) co_return response.status();
  co_return response->SerializeAsString();
}

awaitable<absl::StatusOr<apipb::Response>> ApiService::Call(apipb::Request request) {
  if (absl::Status s = ValidateRequest(request); !s.ok()) {
    ++errors_;
    co_return s;
  }
  if (IsWrite(request) && request.epoch() == 0) {
    ++refused_writes_;
    co_return absl::FailedPreconditionError(
        "the write carries no epoch (0): every write carries the epoch; ask GetSlot");
  }
  if (request.op_case() == apipb::Request::kCheckStore) co_return co_await CheckStore(request);
  if (request.op_case() == apipb::Request::kGetSlot) {
    // The role comes from replicad, on this (the io) thread; the slot's own
    // numbers are filled in on the pool.
    apipb::Response response;
    if (options_.slot_state) *response.mutable_slot() = options_.slot_state();
    auto work = [this, &response]() -> absl::StatusOr<apipb::Response> {
      apipb::SlotState* slot = response.mutable_slot();
      slot->set_store_id(slot_.identity().store_id);
      slot->set_slot_id(slot_.identity().slot_id);
      slot->set_last_lsn(slot_.last_lsn());
      ++reads_;
      return std::move(response);
    };
    awaitable<absl::StatusOr<apipb::Response>> done = work_->Run(std::move(work));
    co_return co_await std::move(done);
  }
  // The slot blocks (fsync): run it on the pool and resume here after. The
  // work is a named local: GCC 12 destroys lambda temporaries of a co_await
  // expression twice (GCC bug 99576).
  auto work = [this, &request] { return Execute(request); };
  awaitable<absl::StatusOr<apipb::Response>> done = work_->Run(std::move(work));
  co_return co_await std::move(done);
}

awaitable<void> ApiService::DrainWrites() {
  // A wait, not slot work: on the pool, outside the slot's WorkGate (the
  // writes it waits for hold places there).
  auto work = [this] {
    MutexLock lock(gate_mu_);
    const uint64_t target = next_ticket_;
    while (!in_flight_.empty() && *in_flight_.begin() < target) gate_cv_.Wait(lock);
  };
  awaitable<void> done = Offload(work_->pool(), std::move(work));
  co_await std::move(done);
}

absl::StatusOr<apipb::Response> ApiService::Execute(const apipb::Request& request) {
  if (IsWrite(request)) return ExecuteWrite(request);  // counts for itself
  absl::StatusOr<apipb::Response> response = ExecuteRead(request);
  ++(response.ok() ? reads_ : errors_);
  return response;
}

absl::StatusOr<apipb::Response> ApiService::ExecuteWrite(const apipb::Request& r) {
  uint64_t ticket = 0;
  {
    MutexLock lock(gate_mu_);
    ticket = next_ticket_++;
    in_flight_.insert(ticket);
  }
  struct Release {
    ApiService* self;
    uint64_t ticket;
    ~Release() {
      {
        MutexLock lock(self->gate_mu_);
        self->in_flight_.erase(ticket);
      }
      self->gate_cv_.SignalAll();
    }
  } release{this, ticket};

  absl::Status allowed =
      options_.check_write
          ? options_.check_write(r.epoch())
          : absl::FailedPreconditionError("this slot takes no writes (no role is known)");
  if (!allowed.ok()) {
    ++refused_writes_;
    return allowed;
  }

  apipb::Response response;
  absl::Status status;
  switch (r.op_case()) {
    case apipb::Request::kCreateMailbox: {
      absl::StatusOr<MailboxInfo> info = slot_.CreateMailbox(r.create_mailbox().name());
      status = info.status();
      if (info.ok()) ToProto(*info, response.add_mailboxes());
      break;
    }
    case apipb::Request::kRenameMailbox:
      status = slot_.RenameMailbox(r.rename_mailbox().from(), r.rename_mailbox().to());
      break;
    case apipb::Request::kDeleteMailbox:
      status = slot_.DeleteMailbox(r.delete_mailbox().name());
      break;
    case apipb::Request::kSetFlags: {
      const apipb::SetFlags& f = r.set_flags();
      FlagOp op = FlagOp::kAdd;
      switch (f.op()) {
        case apipb::SetFlags::ADD:
          op = FlagOp::kAdd;
          break;
        case apipb::SetFlags::REMOVE:
          op = FlagOp::kRemove;
          break;
        default:  // REPLACE (ValidateRequest refused the rest)
          op = FlagOp::kReplace;
          break;
      }
      status = slot_.SetFlags(f.mailbox(), ToVector(f.uids()), op, ToVector(f.flags()));
      break;
    }
    case apipb::Request::kExpunge:
      status = slot_.Expunge(r.expunge().mailbox(), ToVector(r.expunge().uids()));
      break;
    case apipb::Request::kSetQuota: {
      const apipb::SetQuota& q = r.set_quota();
      status = slot_.SetQuota(q.user(), q.storage_limit(), q.message_limit());
      if (status.ok()) ToProto(slot_.Quota(q.user()), response.mutable_quota());
      break;
    }
    case apipb::Request::kAppend: {
      const apipb::Append& a = r.append();
      std::vector<std::string> flags = ToVector(a.flags());
      std::optional<UnlessPresent> unless_present;
      if (a.has_unless_present()) {
        unless_present = UnlessPresent{.above_uid = a.unless_present().above_uid(),
                                       .count = a.unless_present().count()};
      }
      absl::StatusOr<AppendResult> result =
          slot_.Append({.mailbox = a.mailbox(), .body = a.message(), .flags = flags,
                        .internal_date = a.internal_date(), .unless_present = unless_present});
      status = result.status();
      if (result.ok() && result->already_present) {
        // Nothing appended: the matching message, as far as the check knows it.
        response.set_already_present(true);
        apipb::Message* m = response.add_messages();
        m->set_uid(result->uid);
        m->set_guid(absl::BytesToHexString(result->guid));
        m->set_size(a.message().size());
      } else if (result.ok()) {
        // What the append knows; ListMessages has the assigned internal
        // date (when 0 was sent) and the MODSEQ.
        apipb::Message* m = response.add_messages();
        m->set_uid(result->uid);
        m->set_guid(absl::BytesToHexString(result->guid));
        m->set_size(a.message().size());
        m->set_internal_date(a.internal_date());
        for (const std::string& flag : NormalizeFlags(std::move(flags))) m->add_flags(flag);
      }
      break;
    }
    default:
      return absl::InternalError(absl::StrCat("not a write: op ", r.op_case()));
  }
  if (!status.ok()) {
    ++errors_;
    return status;
  }
  ++writes_;
  response.set_lsn(slot_.last_lsn());
  if (options_.await_durable) {
    absl::Status durable = options_.await_durable(response.lsn());
    if (!durable.ok()) return durable;
  }
  return response;
}

absl::StatusOr<apipb::Response> ApiService::ExecuteRead(const apipb::Request& r) {
  apipb::Response response;
  switch (r.op_case()) {
    case apipb::Request::kListMailboxes: {
      const std::string& prefix = r.list_mailboxes().prefix();
      for (const MailboxInfo& info : slot_.ListMailboxes()) {
        if (absl::StartsWith(info.name, prefix)) ToProto(info, response.add_mailboxes());
      }
      return response;
    }
    case apipb::Request::kListMessages: {
      absl::StatusOr<std::vector<MessageInfo>> messages =
          slot_.ListMessages(r.list_messages().mailbox(), /*include_expunged=*/false);
      if (!messages.ok()) return messages.status();
      for (const MessageInfo& info : *messages) ToProto(info, response.add_messages());
      return response;
    }
    case apipb::Request::kFetchBody: {
      absl::StatusOr<std::string> body =
          slot_.FetchBody(r.fetch_body().mailbox(), r.fetch_body().uid());
      if (!body.ok()) return body.status();
      response.set_body(std::move(*body));
      return response;
    }
    case apipb::Request::kGetQuota:
      ToProto(slot_.Quota(r.get_quota().user()), response.mutable_quota());
      return response;
    default:
      return absl::InternalError(absl::StrCat("not a read: op ", r.op_case()));
  }
}

}  // namespace mailrepl::api
