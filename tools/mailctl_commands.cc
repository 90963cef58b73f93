// The mail commands of mailctl: mailboxes, messages, flags and quota.
#include "tools/mailctl_commands.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "store/mailbox_name.h"
#include "store/spool.h"
#include "tools/mailctl_json.h"

namespace mailrepl {
namespace {

// Room above the message size limit that `append` still reads, so that
// moderately oversized messages get the engine's own error.
constexpr uint64_t kReadSlack = 1u << 20;

std::string FormatDate(int64_t unix_seconds) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                          absl::FromUnixSeconds(unix_seconds),
                          absl::UTCTimeZone());
}

// 'name' with control characters escaped (\x01), for messages.
std::string Quoted(absl::string_view name) {
  std::string out = "'";
  for (char c : name) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      absl::StrAppend(&out, "\\x", absl::Hex(u, absl::kZeroPad2));
    } else {
      out.push_back(c);
    }
  }
  out.push_back('\'');
  return out;
}

std::string Limit(uint64_t limit) {
  return limit == 0 ? "unlimited" : absl::StrCat(limit);
}

// What to do about an engine error, by its code.
std::string HintFor(const absl::Status& s, absl::string_view mailbox) {
  switch (s.code()) {
    case absl::StatusCode::kNotFound:
      return absl::StrCat("check the name and UIDs with 'mailctl list",
                          mailbox.empty() ? "" : " ", mailbox, "'");
    case absl::StatusCode::kResourceExhausted:
      if (absl::StrContains(s.message(), "quota")) {
        return absl::StrCat("raise the quota of user '", MailboxOwner(mailbox),
                            "' with 'mailctl quota' or expunge messages");
      }
      return "free disk space and retry";
    case absl::StatusCode::kOutOfRange:
      return "the limit is set with the global option --max-message-bytes";
    case absl::StatusCode::kFailedPrecondition:
      return "fix the condition above and retry";
    default:
      return "";
  }
}

// Reads all of FILE ("-": stdin) up to cap bytes; sets *over when there was
// more.
absl::StatusOr<std::string> ReadInput(const std::string& file, uint64_t cap,
                                      bool* over) {
  const bool is_stdin = file == "-";
  const int fd =
      is_stdin ? STDIN_FILENO : ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open message file", file);
  std::string out;
  absl::Status status = absl::OkStatus();
  *over = false;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      status =
          ErrnoStatus(errno, "read message from", is_stdin ? "stdin" : file);
      break;
    }
    if (n == 0) break;
    if (out.size() + static_cast<uint64_t>(n) > cap) {
      *over = true;
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  if (!is_stdin) ::close(fd);
  RETURN_IF_ERROR(status);
  return out;
}

}  // namespace

void Print(CommandContext& ctx, absl::string_view text) {
  std::fwrite(text.data(), 1, text.size(), ctx.out);
}

absl::Status Failed(const absl::Status& s, absl::string_view what,
                    absl::string_view hint) {
  std::string message = absl::StrCat(what, ": ", s.message());
  if (!hint.empty()) absl::StrAppend(&message, "; ", hint);
  absl::Status out(s.code(), message);
  if (IsCannotRun(s)) out = CannotRun(out);
  return out;
}

absl::Status RunCreate(CommandContext& ctx) {
  const std::string& name = ctx.args->positional[0];
  absl::StatusOr<MailboxInfo> mb = ctx.slot->CreateMailbox(name);
  if (!mb.ok())
    return Failed(mb.status(), absl::StrCat("create ", Quoted(name)));
  Print(ctx, absl::StrCat("created ", mb->name, " id=", mb->id,
                          " uidvalidity=", mb->uidvalidity, "\n"));
  return absl::OkStatus();
}

absl::Status RunRename(CommandContext& ctx) {
  const std::string& from = ctx.args->positional[0];
  const std::string& to = ctx.args->positional[1];
  absl::Status s = ctx.slot->RenameMailbox(from, to);
  if (!s.ok())
    return Failed(s, absl::StrCat("rename ", Quoted(from), " to ", Quoted(to)),
                  HintFor(s, ""));
  Print(ctx, absl::StrCat("renamed ", from, " to ", to, "\n"));
  return absl::OkStatus();
}

absl::Status RunDelete(CommandContext& ctx) {
  const std::string& name = ctx.args->positional[0];
  absl::Status s = ctx.slot->DeleteMailbox(name);
  if (!s.ok())
    return Failed(s, absl::StrCat("delete ", Quoted(name)), HintFor(s, ""));
  Print(ctx, absl::StrCat("deleted ", name, "\n"));
  return absl::OkStatus();
}

absl::Status RunAppend(CommandContext& ctx) {
  const CommandLine& args = *ctx.args;
  const std::string& mailbox = args.positional[0];
  const std::string file =
      args.positional.size() > 1 ? args.positional[1] : "-";
  const std::string what = absl::StrCat("append to ", Quoted(mailbox), " from ",
                                        file == "-" ? "stdin" : file);
  // The engine would say "does not exist" for an invalid name; say why.
  if (absl::Status s = ValidateMailboxName(mailbox); !s.ok())
    return Failed(s, what);
  // Slot::Append writes the body to the spool before it looks the mailbox
  // up, so a missing mailbox would leave an unreferenced body file behind.
  if (absl::StatusOr<MailboxInfo> mb = ctx.slot->GetMailbox(mailbox);
      !mb.ok()) {
    return Failed(mb.status(), what, HintFor(mb.status(), mailbox));
  }
  AppendRequest req;
  req.mailbox = mailbox;
  if (const std::string* flags = args.Get("--flags")) {
    ASSIGN_OR_RETURN(req.flags, ParseFlagList(*flags));
  }
  if (const std::string* date = args.Get("--date")) {
    ASSIGN_OR_RETURN(req.internal_date, ParseInt64("--date", *date));
  }
  bool over = false;
  const uint64_t limit = ctx.options.max_message_bytes;
  absl::StatusOr<std::string> body = ReadInput(file, limit + kReadSlack, &over);
  if (!body.ok()) return Failed(body.status(), what);
  if (over) {
    return absl::OutOfRangeError(
        absl::StrCat(what, ": message of more than ", limit + kReadSlack,
                     " bytes exceeds the limit of ", limit, " bytes"));
  }
  req.body = *std::move(body);
  absl::StatusOr<AppendResult> r = ctx.slot->Append(req);
  if (!r.ok()) return Failed(r.status(), what, HintFor(r.status(), mailbox));
  Print(ctx, absl::StrCat("uid=", r->uid, " guid=", GuidHex(r->guid),
                          " lsn=", r->lsn, "\n"));
  return absl::OkStatus();
}

absl::Status RunCopy(CommandContext& ctx) {
  const std::string& from = ctx.args->positional[0];
  const std::string& to = ctx.args->positional[2];
  ASSIGN_OR_RETURN(std::vector<uint32_t> uids,
                   ParseUidSet(ctx.args->positional[1]));
  absl::StatusOr<std::vector<uint32_t>> out = ctx.slot->Copy(from, uids, to);
  if (!out.ok()) {
    return Failed(out.status(),
                  absl::StrCat("copy from ", Quoted(from), " to ", Quoted(to)),
                  HintFor(out.status(), to));
  }
  Print(ctx,
        absl::StrCat("copied ", out->size(), " messages from ", from, " to ",
                     to, "; new UIDs ", FormatUidList(*out), "\n"));
  return absl::OkStatus();
}

absl::Status RunList(CommandContext& ctx) {
  const bool json = ctx.args->Has("--json");
  if (ctx.args->positional.empty()) {
    if (ctx.args->Has("--expunged")) {
      return UsageError("--expunged needs a MAILBOX (it lists messages)");
    }
    std::vector<MailboxInfo> mailboxes = ctx.slot->ListMailboxes();
    if (json) {
      std::vector<std::string> rows;
      for (const MailboxInfo& mb : mailboxes) {
        JsonObject o;
        o.Str("name", mb.name).Str("id", mb.id).Str("owner", mb.owner);
        o.Num("uidvalidity", mb.uidvalidity).Num("last_uid", mb.last_uid);
        o.Num("highest_modseq", mb.highest_modseq).Num("messages", mb.messages);
        o.Num("bytes", mb.bytes);
        rows.push_back(o.Close());
      }
      Print(ctx,
            absl::StrCat(JsonObject().Raw("mailboxes", JsonArray(rows)).Close(),
                         "\n"));
      return absl::OkStatus();
    }
    size_t width = 4;
    for (const MailboxInfo& mb : mailboxes)
      width = std::max(width, mb.name.size());
    const int w = static_cast<int>(width);
    Print(ctx, absl::StrFormat("%-*s  %-32s  %11s  %10s  %14s  %10s  %14s\n", w,
                               "NAME", "ID", "UIDVALIDITY", "LAST_UID",
                               "HIGHEST_MODSEQ", "MESSAGES", "BYTES"));
    for (const MailboxInfo& mb : mailboxes) {
      Print(ctx, absl::StrFormat("%-*s  %-32s  %11d  %10d  %14d  %10d  %14d\n",
                                 w, mb.name, mb.id, mb.uidvalidity, mb.last_uid,
                                 mb.highest_modseq, mb.messages, mb.bytes));
    }
    return absl::OkStatus();
  }
  const std::string& mailbox = ctx.args->positional[0];
  absl::StatusOr<std::vector<MessageInfo>> msgs =
      ctx.slot->ListMessages(mailbox, ctx.args->Has("--expunged"));
  if (!msgs.ok()) {
    return Failed(msgs.status(), absl::StrCat("list ", Quoted(mailbox)),
                  "'mailctl list' shows the mailboxes");
  }
  if (json) {
    std::vector<std::string> rows;
    for (const MessageInfo& m : *msgs) {
      JsonObject o;
      o.Num("uid", m.uid).Str("guid", GuidHex(m.guid)).Num("size", m.size);
      o.Int("internal_date", m.internal_date)
          .Str("date", FormatDate(m.internal_date));
      o.Raw("flags", JsonStringArray(m.flags))
          .Num("modseq", m.modseq)
          .Bool("expunged", m.expunged);
      rows.push_back(o.Close());
    }
    JsonObject top;
    top.Str("mailbox", mailbox).Raw("messages", JsonArray(rows));
    Print(ctx, absl::StrCat(top.Close(), "\n"));
    return absl::OkStatus();
  }
  Print(ctx, absl::StrFormat("%10s  %-40s  %10s  %-20s  %10s  %s\n", "UID",
                             "GUID", "SIZE", "DATE", "MODSEQ", "FLAGS"));
  for (const MessageInfo& m : *msgs) {
    Print(ctx,
          absl::StrFormat("%10d  %-40s  %10d  %-20s  %10d  %s%s\n", m.uid,
                          GuidHex(m.guid), m.size, FormatDate(m.internal_date),
                          m.modseq, absl::StrJoin(m.flags, " "),
                          m.expunged ? " (expunged)" : ""));
  }
  return absl::OkStatus();
}

absl::Status RunFetch(CommandContext& ctx) {
  const std::string& mailbox = ctx.args->positional[0];
  ASSIGN_OR_RETURN(uint64_t uid, ParseUint64("UID", ctx.args->positional[1]));
  if (uid == 0 || uid > UINT32_MAX)
    return UsageError("UID must be 1..4294967295");
  absl::StatusOr<std::string> body =
      ctx.slot->FetchBody(mailbox, static_cast<uint32_t>(uid));
  if (!body.ok()) {
    return Failed(body.status(),
                  absl::StrCat("fetch UID ", uid, " of ", Quoted(mailbox)),
                  HintFor(body.status(), mailbox));
  }
  Print(ctx, *body);
  return absl::OkStatus();
}

absl::Status RunFlags(CommandContext& ctx) {
  const std::string& mailbox = ctx.args->positional[0];
  ASSIGN_OR_RETURN(std::vector<uint32_t> uids,
                   ParseUidSet(ctx.args->positional[1]));
  int given = 0;
  FlagOp op = FlagOp::kReplace;
  const std::string* list = nullptr;
  for (auto [name, value] :
       {std::pair{"--set", FlagOp::kReplace}, std::pair{"--add", FlagOp::kAdd},
        std::pair{"--remove", FlagOp::kRemove}}) {
    if (const std::string* v = ctx.args->Get(name)) {
      ++given;
      op = value;
      list = v;
    }
  }
  if (given != 1)
    return UsageError("flags needs exactly one of --set, --add, --remove");
  ASSIGN_OR_RETURN(std::vector<std::string> flags, ParseFlagList(*list));
  absl::Status s = ctx.slot->SetFlags(mailbox, uids, op, flags);
  if (!s.ok()) {
    return Failed(s,
                  absl::StrCat("set flags of UIDs ", FormatUidList(uids),
                               " in ", Quoted(mailbox)),
                  HintFor(s, mailbox));
  }
  Print(ctx, absl::StrCat("flags updated on ", uids.size(), " messages in ",
                          mailbox, "\n"));
  return absl::OkStatus();
}

absl::Status RunExpunge(CommandContext& ctx) {
  const std::string& mailbox = ctx.args->positional[0];
  ASSIGN_OR_RETURN(std::vector<uint32_t> uids,
                   ParseUidSet(ctx.args->positional[1]));
  absl::Status s = ctx.slot->Expunge(mailbox, uids);
  if (!s.ok()) {
    return Failed(s,
                  absl::StrCat("expunge UIDs ", FormatUidList(uids), " from ",
                               Quoted(mailbox)),
                  HintFor(s, mailbox));
  }
  Print(ctx, absl::StrCat("expunged UIDs ", FormatUidList(uids), " from ",
                          mailbox, "\n"));
  return absl::OkStatus();
}

absl::Status RunQuota(CommandContext& ctx) {
  const std::string& user = ctx.args->positional[0];
  if (absl::Status s = ValidateUserName(user); !s.ok())
    return Failed(s, "quota");
  const std::string* storage = ctx.args->Get("--storage");
  const std::string* messages = ctx.args->Get("--messages");
  if (storage != nullptr || messages != nullptr) {
    // A limit not given keeps its current value.
    QuotaInfo now = ctx.slot->Quota(user);
    uint64_t storage_limit = now.storage_limit;
    uint64_t message_limit = now.message_limit;
    if (storage != nullptr) {
      ASSIGN_OR_RETURN(storage_limit, ParseUint64("--storage", *storage));
    }
    if (messages != nullptr) {
      ASSIGN_OR_RETURN(message_limit, ParseUint64("--messages", *messages));
    }
    absl::Status s = ctx.slot->SetQuota(user, storage_limit, message_limit);
    if (!s.ok())
      return Failed(s, absl::StrCat("set quota of user '", user, "'"));
  }
  QuotaInfo q = ctx.slot->Quota(user);
  Print(ctx,
        absl::StrCat("user ", user, "\nstorage ", q.storage_used, " of ",
                     Limit(q.storage_limit), " bytes\nmessages ",
                     q.messages_used, " of ", Limit(q.message_limit), "\n"));
  return absl::OkStatus();
}

}  // namespace mailrepl
