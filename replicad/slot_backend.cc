#include "replicad/slot_backend.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "asio.hpp"
#include "replicad/work_pool.h"
#include "store/mailbox_name.h"

namespace mailrepl::lmtp {

SlotBackend::SlotBackend(Slot& slot, SlotBackendOptions options)
    : slot_(slot), options_(std::move(options)), work_(options_.work) {
  if (work_ == nullptr) {
    own_pool_ = std::make_unique<replicad::HostPool>(std::max(1, options_.threads));
    own_work_ = std::make_unique<replicad::WorkGate>(own_pool_->executor(), options_.threads);
    work_ = own_work_.get();
  }
}

SlotBackend::~SlotBackend() {
  if (own_pool_) {
    own_work_->Close();
    own_pool_.reset();  // joins
  }
}

LmtpReply SlotBackend::ReplyForAppendError(const absl::Status& status) {
  const std::string message(status.message());
  switch (status.code()) {
    case absl::StatusCode::kOutOfRange:
      return {552, "5.3.4", absl::StrCat("message too big: ", message)};
    case absl::StatusCode::kResourceExhausted:
      if (absl::StrContains(status.message(), "over quota")) {
        return {452, "4.2.2", absl::StrCat("mailbox full: ", message)};
      }
      return {452, "4.3.1", absl::StrCat("insufficient system storage: ", message)};
    default:
      return {451, "4.3.0", absl::StrCat("temporary failure: ", message)};
  }
}

SlotBackend::Target SlotBackend::Resolve(const std::string& address, bool read_slot) {
  Target t;
  absl::string_view local(address);
  if (const size_t at = local.rfind('@'); at != absl::string_view::npos) {
    local = local.substr(0, at);
  }
  absl::string_view folder;
  if (const size_t plus = local.find('+'); plus != absl::string_view::npos) {
    folder = local.substr(plus + 1);
    local = local.substr(0, plus);
  }
  const std::string user = absl::AsciiStrToLower(local);
  const LmtpReply unknown{550, "5.1.1", absl::StrCat("<", address, ">: unknown user")};
  if (!ValidateUserName(user).ok()) {
    t.refusal = unknown;
    return t;
  }
  if (options_.directory) {
    if (std::optional<LmtpReply> elsewhere = options_.directory(user)) {
      t.refusal = std::move(elsewhere);
      return t;
    }
    // At RCPT (the io thread) the answer is known here: the slot is not
    // asked. The delivery resolves again on a worker.
    if (!read_slot) return t;
    t.create_inbox = !slot_.GetMailbox(InboxName(user)).ok();
  } else if (!slot_.GetMailbox(InboxName(user)).ok()) {
    t.refusal = unknown;
    return t;
  }
  t.inbox = InboxName(user);
  t.mailbox = t.inbox;
  if (!folder.empty()) {
    for (const std::string& name : {absl::StrCat(t.inbox, "/", folder),
                                    absl::StrCat(t.inbox, "/", absl::AsciiStrToLower(folder))}) {
      if (ValidateMailboxName(name).ok() && slot_.GetMailbox(name).ok()) {
        t.mailbox = name;
        break;
      }
    }
  }
  return t;
}

LmtpReply SlotBackend::CheckRecipient(const std::string& address) {
  if (options_.gate) {
    if (std::optional<LmtpReply> closed = options_.gate()) return *closed;
  }
  Target t = Resolve(address, /*read_slot=*/false);
  if (t.refusal) return *t.refusal;
  return {250, "2.1.5", "recipient OK"};
}

std::vector<LmtpReply> SlotBackend::DeliverNow(const std::vector<std::string>& recipients,
                                               const std::string& message) {
  std::vector<LmtpReply> replies;
  replies.reserve(recipients.size());
  // Counted before the gate is asked: a fence set after this point is
  // either seen by the gate or waits (Busy()) for these appends.
  ++busy_;
  struct Done {
    std::atomic<int>& busy;
    const std::function<void()>& on_idle;
    ~Done() {
      if (--busy == 0 && on_idle) on_idle();
    }
  } done{busy_, options_.on_idle};
  std::optional<LmtpReply> closed;
  if (options_.gate) closed = options_.gate();
  for (const std::string& rcpt : recipients) {
    if (closed) {
      replies.push_back(*closed);
      continue;
    }
    Target t = Resolve(rcpt, /*read_slot=*/true);
    if (t.refusal) {
      replies.push_back(*t.refusal);
      continue;
    }
    if (t.create_inbox) {
      absl::StatusOr<MailboxInfo> created = slot_.CreateMailbox(t.inbox);
      if (!created.ok() && !absl::IsAlreadyExists(created.status())) {
        ++failed_;
        replies.push_back(ReplyForAppendError(created.status()));
        continue;
      }
    }
    absl::StatusOr<AppendResult> r = slot_.Append({.mailbox = t.mailbox, .body = message});
    if (r.status().code() == absl::StatusCode::kNotFound && t.mailbox != t.inbox) {
      // The folder was deleted since RCPT: the INBOX takes the message.
      r = slot_.Append({.mailbox = t.inbox, .body = message});
    }
    if (r.ok()) {
      ++appended_;
      std::optional<LmtpReply> late;
      if (options_.after_append) late = options_.after_append(r->lsn);
      // The epoch lets a client (the fault harness's checker) tell which
      // mastership acknowledged the message.
      replies.push_back(late ? *late
                             : LmtpReply{250, "2.1.5",
                                         absl::StrCat("OK uid ", r->uid, " epoch ", r->epoch)});
    } else if (r.status().code() == absl::StatusCode::kNotFound) {
      ++failed_;
      replies.push_back({550, "5.1.1", absl::StrCat("<", rcpt, ">: unknown user")});
    } else {
      ++failed_;
      replies.push_back(ReplyForAppendError(r.status()));
    }
  }
  return replies;
}

asio::awaitable<std::vector<LmtpReply>> SlotBackend::Deliver(
    const std::string& from, const std::vector<std::string>& recipients, std::string message) {
  // The appends block (fsync): run them on the pool and resume here after.
  // The work is a named local: GCC 12 destroys lambda temporaries of a
  // co_await expression twice (GCC bug 99576).
  std::string body = std::move(message);
  auto work = [this, &recipients, &body] { return DeliverNow(recipients, body); };
  asio::awaitable<std::vector<LmtpReply>> done = work_->Run(std::move(work));
  co_return co_await std::move(done);
}

}  // namespace mailrepl::lmtp
