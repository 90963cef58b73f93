#include "tools/replctl_mail.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "proto/api.pb.h"
#include "rpc/rpc_client.h"
#include "store/mailbox_name.h"
#include "tools/mailctl_json.h"

namespace mailrepl::tools {
namespace {

using CoordinatorCall =
    std::function<absl::StatusOr<coordpb::Response>(const coordpb::Request&)>;

constexpr char kMailUsage[] =
    "usage: replctl mail list USER [PREFIX] | messages USER MAILBOX | fetch USER MAILBOX UID | "
    "digest USER MAILBOX  [--json] [--slot SLOT]";

constexpr absl::Duration kReadTimeout = absl::Seconds(15);
constexpr absl::Duration kFetchTimeout = absl::Seconds(60);
// The digest reads the mailbox, the slot's LSN and the mailbox again; a
// write to the mailbox in between makes it read again, this many times.
constexpr int kDigestAttempts = 5;

int Fail(int exit, const std::string& message) {
  std::fprintf(stderr, "replctl: %s\n", message.c_str());
  return exit;
}

// The slot that answers, as the coordinator knows it.
struct SlotTarget {
  std::string user;  // as in mailbox names
  uint64_t store_id = 0;
  uint64_t slot_id = 0;
  std::string host;
  std::string api;  // its client API, ADDR:PORT
  bool master = false;

  std::string Name() const { return absl::StrCat("slot ", slot_id, "@", host); }
  std::string Role() const { return master ? "master" : "replica"; }
};

// As replctl's own calls: the coordinator not reached or refusing us means
// "could not run" (2); an answered call that failed means the command
// failed (1).
int CoordinatorFailed(const std::string& what, const absl::Status& s) {
  const std::string m(s.message());
  const bool unreachable =
      absl::IsUnauthenticated(s) || absl::IsPermissionDenied(s) ||
      ((absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) &&
       (absl::StrContains(m, "cannot connect") || absl::StrContains(m, "connecting to")));
  return Fail(unreachable ? 2 : 1, absl::StrCat(what, ": the coordinator: ", m));
}

// USER -> store -> the slot to read (its master, or options.slot).
// nullopt after printing what failed; *exit is then the exit code.
std::optional<SlotTarget> Resolve(const MailOptions& options, const std::string& what,
                                  const std::string& user, const CoordinatorCall& call,
                                  int* exit) {
  coordpb::Request lookup;
  lookup.mutable_lookup_user()->set_user(user);
  absl::StatusOr<coordpb::Response> r = call(lookup);
  if (!r.ok()) {
    *exit = CoordinatorFailed(what, r.status());
    return std::nullopt;
  }
  const coordpb::LookupUserReply& l = r->lookup_user();
  if (!l.found()) {
    *exit = Fail(1, absl::StrCat(what, ": unknown user '", user,
                                 "': the coordinator assigns it to no store (`replctl "
                                 "assign-users`; `replctl lookup USER` asks the same)"));
    return std::nullopt;
  }
  SlotTarget t{.user = MailUser(user), .store_id = l.store_id()};
  coordpb::SlotInfo slot = l.master();
  t.master = true;
  if (options.slot != 0 && options.slot != l.master().slot_id()) {
    coordpb::Request get_status;
    get_status.mutable_get_status();
    absl::StatusOr<coordpb::Response> status = call(get_status);
    if (!status.ok()) {
      *exit = CoordinatorFailed(what, status.status());
      return std::nullopt;
    }
    std::vector<std::string> members;
    bool found = false;
    for (const coordpb::StoreStatus& st : status->get_status().stores()) {
      if (st.store().store_id() != l.store_id()) continue;
      for (const coordpb::SlotInfo& m : st.store().members()) {
        members.push_back(absl::StrCat(m.slot_id(), "@", m.host(),
                                       m.slot_id() == st.store().master_slot_id() ? " (master)"
                                                                                : ""));
        if (m.slot_id() == options.slot) {
          slot = m;
          found = true;
          t.master = m.slot_id() == st.store().master_slot_id();
        }
      }
    }
    if (!found) {
      *exit = Fail(1, absl::StrCat(what, ": slot ", options.slot, " is not a slot of store ",
                                   l.store_id(), ", which holds ", user, "; its slots: ",
                                   members.empty() ? "none known" : absl::StrJoin(members, ", ")));
      return std::nullopt;
    }
  }
  t.slot_id = slot.slot_id();
  t.host = slot.host();
  t.api = slot.api_address();
  if (t.api.empty()) {
    *exit = Fail(1, absl::StrCat(what, ": the coordinator knows no client API address for ",
                                 t.Name(), " (its replicad has not registered it)"));
    return std::nullopt;
  }
  return t;
}

// One call to the slot's client API. nullopt after printing what failed
// (not_found_hint after a kNotFound); *exit is then the exit code.
std::optional<apipb::Response> Ask(const SlotTarget& t, const MailOptions& options,
                                   const apipb::Request& request, absl::Duration timeout,
                                   const std::string& what, const std::string& not_found_hint,
                                   int* exit) {
  absl::StatusOr<apipb::Response> r = rpc::CallOnce<apipb::Response>(
      {.address = t.api, .service = "api", .secret = options.secret, .client = "replctl mail"},
      request, timeout);
  if (r.ok()) return *std::move(r);
  const absl::Status& s = r.status();
  const std::string who = absl::StrCat(t.Name(), " (", t.Role(), ", API ", t.api, ")");
  const std::string m(s.message());
  if (absl::IsUnauthenticated(s) || absl::IsPermissionDenied(s)) {
    *exit = Fail(2, absl::StrCat(what, ": ", who, " refused our authentication: ", m,
                                 " (is the secret file the cluster's?)"));
  } else if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) {
    *exit = Fail(1, absl::StrCat(what, ": ", who, " is unreachable: ", m, "; ",
                                 t.master ? "read a replica with --slot SLOT (`replctl status` "
                                            "lists the store's slots)"
                                          : "read another slot, or the master without --slot"));
  } else if (absl::IsNotFound(s)) {
    *exit = Fail(1, absl::StrCat(what, ": ", m, " on ", t.Name(), not_found_hint));
  } else if (absl::IsInvalidArgument(s)) {
    *exit = Fail(1, absl::StrCat(what, ": ", who, " refused the request: ", m));
  } else {
    *exit = Fail(1, absl::StrCat(what, ": ", who, ": ", m));
  }
  return std::nullopt;
}

std::string FormatDate(int64_t unix_seconds) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(unix_seconds),
                          absl::UTCTimeZone());
}

// Where the answer came from, for --json.
JsonObject Origin(const SlotTarget& t) {
  JsonObject o;
  o.Str("user", t.user).Num("store_id", t.store_id).Num("slot_id", t.slot_id);
  o.Str("host", t.host).Str("role", t.Role());
  return o;
}

std::string ListHint(const SlotTarget& t) {
  return absl::StrCat(" (`replctl mail list ", t.user, "` lists the user's mailboxes)");
}

int List(const MailOptions& options, const SlotTarget& t, const std::string& what,
         const std::string& prefix_arg) {
  const std::string inbox = InboxName(t.user);
  const std::string prefix = prefix_arg.empty() ? inbox : MailboxFullName(t.user, prefix_arg);
  apipb::Request request;
  // A plain string prefix: "user/bob" also matches "user/bobby" (below).
  request.mutable_list_mailboxes()->set_prefix(prefix);
  int exit = 0;
  std::optional<apipb::Response> r = Ask(t, options, request, kReadTimeout, what, "", &exit);
  if (!r) return exit;
  std::vector<const apipb::Mailbox*> mailboxes;
  for (const apipb::Mailbox& mb : r->mailboxes()) {
    if (IsSameOrBelow(mb.name(), inbox) && absl::StartsWith(mb.name(), prefix)) {
      mailboxes.push_back(&mb);
    }
  }
  if (options.json) {
    std::vector<std::string> rows;
    for (const apipb::Mailbox* mb : mailboxes) {
      JsonObject o;
      o.Str("name", MailboxShortName(t.user, mb->name())).Str("mailbox", mb->name());
      o.Str("id", mb->id()).Num("uidvalidity", mb->uidvalidity());
      o.Num("last_uid", mb->last_uid()).Num("next_uid", uint64_t{mb->last_uid()} + 1);
      o.Num("messages", mb->messages()).Num("bytes", mb->bytes());
      o.Num("highest_modseq", mb->highest_modseq());
      rows.push_back(o.Close());
    }
    std::printf("%s\n", Origin(t).Raw("mailboxes", JsonArray(rows)).Close().c_str());
    return 0;
  }
  size_t name_width = 4;
  size_t mailbox_width = 7;
  for (const apipb::Mailbox* mb : mailboxes) {
    name_width = std::max(name_width, MailboxShortName(t.user, mb->name()).size());
    mailbox_width = std::max(mailbox_width, mb->name().size());
  }
  const int nw = static_cast<int>(name_width);
  const int mw = static_cast<int>(mailbox_width);
  std::printf("%s", absl::StrFormat("%-*s  %-*s  %11s  %10s  %10s  %12s  %14s  %s\n", nw,
                                    "NAME", mw, "MAILBOX", "UIDVALIDITY", "NEXT_UID", "MESSAGES",
                                    "BYTES", "HIGHEST_MODSEQ", "ID")
                        .c_str());
  for (const apipb::Mailbox* mb : mailboxes) {
    std::printf("%s", absl::StrFormat("%-*s  %-*s  %11d  %10d  %10d  %12d  %14d  %s\n", nw,
                                      MailboxShortName(t.user, mb->name()), mw, mb->name(),
                                      mb->uidvalidity(), uint64_t{mb->last_uid()} + 1,
                                      mb->messages(), mb->bytes(), mb->highest_modseq(), mb->id())
                          .c_str());
  }
  if (mailboxes.empty() && prefix_arg.empty()) {
    std::fprintf(stderr, "replctl: %s has no mailboxes on %s (the first delivery creates the "
                 "INBOX)\n", t.user.c_str(), t.Name().c_str());
  }
  return 0;
}

int Messages(const MailOptions& options, const SlotTarget& t, const std::string& what,
             const std::string& mailbox) {
  apipb::Request request;
  request.mutable_list_messages()->set_mailbox(mailbox);
  int exit = 0;
  std::optional<apipb::Response> r =
      Ask(t, options, request, kReadTimeout, what, ListHint(t), &exit);
  if (!r) return exit;
  if (options.json) {
    std::vector<std::string> rows;
    for (const apipb::Message& m : r->messages()) {
      JsonObject o;
      o.Num("uid", m.uid()).Str("guid", m.guid()).Num("size", m.size());
      o.Int("internal_date", m.internal_date()).Str("date", FormatDate(m.internal_date()));
      o.Raw("flags", JsonStringArray({m.flags().begin(), m.flags().end()}));
      o.Num("modseq", m.modseq());
      rows.push_back(o.Close());
    }
    JsonObject o = Origin(t);
    o.Str("mailbox", mailbox).Str("name", MailboxShortName(t.user, mailbox));
    std::printf("%s\n", o.Raw("messages", JsonArray(rows)).Close().c_str());
    return 0;
  }
  std::printf("%s", absl::StrFormat("%10s  %-40s  %10s  %-20s  %10s  %s\n", "UID", "GUID", "SIZE",
                                    "DATE", "MODSEQ", "FLAGS")
                        .c_str());
  for (const apipb::Message& m : r->messages()) {
    std::string line = absl::StrFormat("%10d  %-40s  %10d  %-20s  %10d  %s", m.uid(), m.guid(),
                                       m.size(), FormatDate(m.internal_date()), m.modseq(),
                                       absl::StrJoin(m.flags(), " "));
    absl::StripTrailingAsciiWhitespace(&line);  // no flags
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

int Fetch(const MailOptions& options, const SlotTarget& t, const std::string& what,
          const std::string& mailbox, uint32_t uid) {
  apipb::Request request;
  request.mutable_fetch_body()->set_mailbox(mailbox);
  request.mutable_fetch_body()->set_uid(uid);
  int exit = 0;
  std::optional<apipb::Response> r = Ask(
      t, options, request, kFetchTimeout, what,
      absl::StrCat(" (`replctl mail messages ", t.user, " ", MailboxShortName(t.user, mailbox),
                   "` lists its UIDs; `replctl mail list ", t.user, "` its mailboxes)"),
      &exit);
  if (!r) return exit;
  std::string out;
  if (options.json) {
    JsonObject o = Origin(t);
    o.Str("mailbox", mailbox).Num("uid", uid).Num("size", r->body().size());
    out = absl::StrCat(o.Str("body_base64", absl::Base64Escape(r->body())).Close(), "\n");
  } else {
    out = r->body();  // exactly the bytes appended
  }
  if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0) {
    return Fail(1, absl::StrCat(what, ": writing the message to stdout: ", std::strerror(errno)));
  }
  return 0;
}

// The mailbox named `mailbox` (exactly), or nullopt after printing.
std::optional<apipb::Mailbox> FindMailbox(const MailOptions& options, const SlotTarget& t,
                                          const std::string& what, const std::string& mailbox,
                                          int* exit) {
  apipb::Request request;
  request.mutable_list_mailboxes()->set_prefix(mailbox);  // any prefix is valid
  std::optional<apipb::Response> r = Ask(t, options, request, kReadTimeout, what, "", exit);
  if (!r) return std::nullopt;
  for (const apipb::Mailbox& mb : r->mailboxes()) {
    if (mb.name() == mailbox) return mb;
  }
  // Not there, or not a valid name: the slot's own answer says which.
  request.mutable_list_messages()->set_mailbox(mailbox);
  if (Ask(t, options, request, kReadTimeout, what, ListHint(t), exit)) {
    *exit = Fail(1, absl::StrCat(what, ": mailbox '", mailbox, "' was created on ", t.Name(),
                                 " while we read; run again"));
  }
  return std::nullopt;
}

int DigestCommand(const MailOptions& options, const SlotTarget& t, const std::string& what,
                  const std::string& mailbox) {
  apipb::Request get_slot;
  get_slot.mutable_get_slot();
  int exit = 0;
  for (int attempt = 1; attempt <= kDigestAttempts; ++attempt) {
    // Mailbox, LSN, mailbox: a write to the mailbox changes its digest, so
    // two equal reads mean the digest held at every LSN between.
    std::optional<apipb::Mailbox> mb = FindMailbox(options, t, what, mailbox, &exit);
    if (!mb) return exit;
    if (mb->digest().empty()) {
      return Fail(1, absl::StrCat(what, ": ", t.Name(), " (", t.Role(), ", API ", t.api,
                                  ") sends no mailbox digest: its replicad is older than the "
                                  "client API's Mailbox.digest; upgrade it, or read another "
                                  "slot with --slot SLOT (`replctl check --store ",
                                  t.store_id, "` compares the digests on the slots)"));
    }
    std::optional<apipb::Response> at = Ask(t, options, get_slot, kReadTimeout, what, "", &exit);
    if (!at) return exit;
    if (at->slot().store_id() != t.store_id) {
      return Fail(1, absl::StrCat(what, ": ", t.Name(), " at ", t.api, " holds store ",
                                  at->slot().store_id(), ", not ", t.user, "'s store ",
                                  t.store_id, " (the topology changed meanwhile?); run again"));
    }
    std::optional<apipb::Mailbox> mb_after = FindMailbox(options, t, what, mailbox, &exit);
    if (!mb_after) return exit;
    if (mb->SerializeAsString() != mb_after->SerializeAsString()) continue;

    const uint64_t lsn = at->slot().last_lsn();
    if (options.json) {
      JsonObject o = Origin(t);
      o.Str("mailbox", mailbox).Str("name", MailboxShortName(t.user, mailbox)).Str("id", mb->id());
      o.Str("digest", mb->digest()).Num("lsn", lsn);
      o.Num("uidvalidity", mb->uidvalidity()).Num("last_uid", mb->last_uid());
      o.Num("highest_modseq", mb->highest_modseq()).Num("messages", mb->messages());
      o.Num("bytes", mb->bytes());
      std::printf("%s\n", o.Close().c_str());
    } else {
      std::printf("mailbox %s\ndigest %s\nlsn %llu\n", mailbox.c_str(), mb->digest().c_str(),
                  static_cast<unsigned long long>(lsn));
      std::printf("slot %llu@%s (%s)\nstore %llu\nid %s\n",
                  static_cast<unsigned long long>(t.slot_id), t.host.c_str(), t.Role().c_str(),
                  static_cast<unsigned long long>(t.store_id), mb->id().c_str());
      std::printf("uidvalidity %u\nlast_uid %u\nhighest_modseq %llu\nmessages %u\nbytes %llu\n",
                  mb->uidvalidity(), mb->last_uid(),
                  static_cast<unsigned long long>(mb->highest_modseq()), mb->messages(),
                  static_cast<unsigned long long>(mb->bytes()));
    }
    return 0;
  }
  return Fail(1, absl::StrCat(what, ": the mailbox changed during each of ", kDigestAttempts,
                              " reads on ", t.Name(), " (it is taking writes); run again"));
}

}  // namespace

std::string MailUser(absl::string_view user) {
  // As the coordinator's NormalizeUser (coordinator/coordinator.h), which
  // finds the store, and the LMTP server, which names the INBOX.
  absl::string_view local = user;
  if (const size_t at = local.find('@'); at != absl::string_view::npos) {
    local = local.substr(0, at);
  }
  if (const size_t plus = local.find('+'); plus != absl::string_view::npos) {
    local = local.substr(0, plus);
  }
  return absl::AsciiStrToLower(local);
}

std::string MailboxFullName(absl::string_view user, absl::string_view mailbox) {
  const std::string inbox = InboxName(user);
  if (mailbox == inbox || absl::StartsWith(mailbox, absl::StrCat(inbox, "/"))) {
    return std::string(mailbox);
  }
  if (absl::EqualsIgnoreCase(mailbox, "INBOX")) return inbox;
  if (mailbox.size() > 6 && absl::EqualsIgnoreCase(mailbox.substr(0, 6), "INBOX/")) {
    mailbox.remove_prefix(6);
  }
  return absl::StrCat(inbox, "/", mailbox);
}

std::string MailboxShortName(absl::string_view user, absl::string_view full) {
  const std::string inbox = InboxName(user);
  if (full == inbox) return "INBOX";
  if (absl::StartsWith(full, absl::StrCat(inbox, "/"))) {
    return absl::StrCat("INBOX", full.substr(inbox.size()));
  }
  return std::string(full);
}

int RunMail(const MailOptions& options, const CoordinatorCall& call) {
  const std::vector<std::string>& a = options.args;
  const std::string verb = a.size() > 1 ? a[1] : "";
  const size_t n = a.size();
  const bool usage_ok = (verb == "list" && (n == 3 || n == 4)) ||
                        ((verb == "messages" || verb == "digest") && n == 4) ||
                        (verb == "fetch" && n == 5);
  if (!usage_ok) return Fail(2, kMailUsage);
  uint32_t uid = 0;
  if (verb == "fetch" && (!absl::SimpleAtoi(a[4], &uid) || uid == 0)) {
    return Fail(2, absl::StrCat("mail fetch: UID '", a[4], "' is not a UID (1, 2, ...)"));
  }
  const std::string what = absl::StrCat("mail ", absl::StrJoin(a.begin() + 1, a.end(), " "));
  int exit = 0;
  std::optional<SlotTarget> t = Resolve(options, what, a[2], call, &exit);
  if (!t) return exit;
  if (verb == "list") return List(options, *t, what, n == 4 ? a[3] : "");
  const std::string mailbox = MailboxFullName(t->user, a[3]);
  if (verb == "messages") return Messages(options, *t, what, mailbox);
  if (verb == "fetch") return Fetch(options, *t, what, mailbox, uid);
  return DigestCommand(options, *t, what, mailbox);
}

}  // namespace mailrepl::tools
