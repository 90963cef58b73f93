#include "test/sync_harness.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <stdexcept>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace mailrepl::testing {

std::string Bin(const std::string& name) {
  const char* bin = std::getenv("MAILREPL_BIN");
  if (bin == nullptr) throw std::runtime_error("MAILREPL_BIN is not set");
  return absl::StrCat(bin, "/", name);
}

void WriteSecret(const std::string& path, const std::string& secret, mode_t mode) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << secret << "\n";
    if (!out) throw std::runtime_error("cannot write " + path);
  }
  if (::chmod(path.c_str(), mode) != 0) throw std::runtime_error("chmod " + path);
}

ServerProcess::ServerProcess(const std::string& replica_dir, const std::string& secret_file,
                             uint16_t port, std::vector<std::string> env) {
  process_ = std::make_unique<Process>(
      std::vector<std::string>{Bin("sync_server"), "--slot", replica_dir, "--listen",
                               absl::StrCat("127.0.0.1:", port), "--secret-file", secret_file},
      std::move(env));
  static const std::regex kListening("sync_server listening .* port=<([0-9]+)>");
  std::smatch m;
  std::string err;
  const bool listening = WaitFor(
      [&] {
        err = process_->Stderr();
        return std::regex_search(err, m, kListening) || !process_->Running();
      },
      absl::Seconds(30));
  if (!listening || !std::regex_search(err, m, kListening)) {
    throw std::runtime_error("sync_server did not start listening: " + process_->Describe());
  }
  uint32_t p = 0;
  if (!absl::SimpleAtoi(m[1].str(), &p) || p == 0 || p > 65535) {
    throw std::runtime_error("sync_server printed a bad port: " + err);
  }
  port_ = static_cast<uint16_t>(p);
}

std::string ServerProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

std::optional<int> ServerProcess::Stop() {
  process_->Signal(SIGTERM);
  return process_->Wait(absl::Seconds(10));
}

void ServerProcess::Kill() {
  process_->Signal(SIGKILL);
  process_->Wait(absl::Seconds(10));
}

ClientRun ParseClientOutput(Process& p) {
  ClientRun run;
  run.out = p.Stdout();
  run.err = p.Stderr();
  run.description = p.Describe();
  for (absl::string_view line : absl::StrSplit(run.out, '\n')) {
    if (absl::ConsumePrefix(&line, "  quarantined ")) {
      run.quarantined.emplace_back(line);
      continue;
    }
    if (absl::ConsumePrefix(&line, "  repaired ")) {
      run.repaired.emplace_back(line);
      continue;
    }
    std::vector<std::string> kv = absl::StrSplit(line, ' ');
    uint64_t v = 0;
    if (kv.size() == 2 && absl::SimpleAtoi(kv[1], &v)) run.stats[kv[0]] = v;
  }
  return run;
}

IndexState ReadIndex(const std::string& index_file) {
  auto ix = Index::OpenReadOnly(index_file);
  if (!ix.ok()) {
    throw std::runtime_error(
        absl::StrCat("cannot read ", index_file, ": ", ix.status().ToString()));
  }
  Index& index = **ix;
  IndexState s;
  s.lsn = index.applied_lsn();
  s.epoch = index.applied_epoch();
  s.seen_epoch = index.seen_epoch();
  s.log_start_lsn = index.log_start_lsn();
  s.digest = index.slot_digest();
  s.quarantined = index.quarantined();
  std::vector<const MailboxInfo*> boxes;
  for (const auto& [id, mb] : index.mailboxes()) boxes.push_back(&mb);
  std::sort(boxes.begin(), boxes.end(),
            [](const MailboxInfo* a, const MailboxInfo* b) { return a->name < b->name; });
  for (const MailboxInfo* mb : boxes) {
    auto msgs = index.ListMessages(mb->id, /*include_expunged=*/true);
    if (!msgs.ok()) throw std::runtime_error(msgs.status().ToString());
    Digest d = MailboxAttributesDigest(mb->id, mb->name, mb->uidvalidity, mb->last_uid,
                                       mb->highest_modseq);
    absl::StrAppend(&s.dump, "mailbox ", mb->name, " id=", mb->id, " uidvalidity=", mb->uidvalidity,
                    " last_uid=", mb->last_uid, " highest_modseq=", mb->highest_modseq, "\n");
    uint64_t live = 0;
    for (const MessageInfo& m : *msgs) {
      d.Add(MessageDigest(m.uid, m.guid, m.flags, m.modseq, m.expunged));
      live += m.expunged ? 0 : 1;
      absl::StrAppend(&s.dump, "  uid=", m.uid, " guid=", absl::BytesToHexString(m.guid),
                      " size=", m.size, " date=", m.internal_date, " flags=[",
                      absl::StrJoin(m.flags, " "), "] modseq=", m.modseq, " expunged=", m.expunged,
                      "\n");
    }
    s.messages[mb->name] = live;
    s.row_digest.Add(MailboxSlotDigest(mb->id, d));
  }
  for (const auto& [user, q] : index.quota_limits()) {
    s.row_digest.Add(QuotaDigest(user, q.storage_limit, q.message_limit));
    absl::StrAppend(&s.dump, "quota ", user, " ", q.storage_limit, " ", q.message_limit, "\n");
  }
  return s;
}

Waited WaitWatching(const std::function<bool()>& condition, absl::Duration timeout,
                    const std::vector<Process*>& watch) {
  Waited w;
  w.ok = WaitFor(condition, timeout);
  if (!w.ok) {
    for (Process* p : watch) {
      p->Running();  // reaps it if it ended, so that its exit code shows
      absl::StrAppend(&w.processes, p->Describe(), "\n");
    }
  }
  return w;
}

void SqlExec(const std::string& db_file, const std::string& sql) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(db_file.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr);
  char* err = nullptr;
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string message = err ? err : sqlite3_errstr(rc);
  sqlite3_free(err);
  const int changes = db ? sqlite3_changes(db) : 0;
  sqlite3_close(db);
  if (rc != SQLITE_OK) throw std::runtime_error(absl::StrCat(sql, ": ", message));
  if (changes == 0) throw std::runtime_error(absl::StrCat(sql, ": changed no row"));
}

void AppendMessages(Slot& slot, const std::string& mailbox, int first, int n, size_t size) {
  for (int i = first; i < first + n; ++i) {
    auto r = slot.Append({.mailbox = mailbox, .body = TestMessage(i, size)});
    if (!r.ok()) throw std::runtime_error(r.status().ToString());
  }
}

SyncFixture::SyncFixture(SlotOptions master_options)
    : master_dir(dir.Sub("master")),
      replica_dir(dir.Sub("replica")),
      secret_file(dir.Sub("secret")) {
  master = NewSlot(master_dir, master_options);
  NewSlot(replica_dir).reset();  // made and closed: the sync_server owns it
  WriteSecret(secret_file, kTestSecret);
}

bool SyncFixture::InSync() const {
  IndexState m = Master();
  IndexState r = Replica();
  return m.lsn == r.lsn && m.digest == r.digest && r.row_digest == r.digest && m.dump == r.dump;
}

std::vector<std::string> SyncFixture::ClientArgs(const ServerProcess& server,
                                                 std::vector<std::string> extra) const {
  std::vector<std::string> args = {Bin("sync_client"), "--slot",        master_dir, "--server",
                                   server.address(),   "--secret-file", secret_file};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::unique_ptr<Process> SyncFixture::StartClient(const ServerProcess& server,
                                                  std::vector<std::string> extra,
                                                  std::vector<std::string> env) const {
  return std::make_unique<Process>(ClientArgs(server, std::move(extra)), std::move(env));
}

ClientRun SyncFixture::RunClient(const ServerProcess& server, std::vector<std::string> extra,
                                 std::vector<std::string> env, absl::Duration timeout) const {
  Process p(ClientArgs(server, std::move(extra)), std::move(env));
  std::optional<int> code = p.Wait(timeout);
  if (!code.has_value()) {
    p.Signal(SIGKILL);
    p.Wait(absl::Seconds(5));
  }
  ClientRun run = ParseClientOutput(p);
  run.code = code.value_or(-1);
  return run;
}

}  // namespace mailrepl::testing
