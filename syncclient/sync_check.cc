// SyncClient's consistency check (mode kCheck, replctl check): compare the
// master with one replica at a common LSN, so that replication lag is never
// reported as divergence; report exactly which mailboxes differ and how;
// with `repair`, resync those mailboxes from the master and compare again.
// The protocol is docs/protocol.md "Check"; what is compared, and at what
// cost, is docs/operations.md "Consistency checks".
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/offload.h"
#include "common/status_macros.h"
#include "syncclient/mailbox_compare.h"
#include "syncclient/master_source.h"
#include "syncclient/protocol.h"
#include "syncclient/sync_client.h"
#include "syncclient/sync_session.h"

namespace mailrepl::sync {

using asio::awaitable;

namespace {

// Mailbox id -> (name, digest), as the replica reported them.
std::map<std::string, std::pair<std::string, Digest>> ReplicaDigests(
    const syncpb::DigestReply& dr) {
  std::map<std::string, std::pair<std::string, Digest>> out;
  for (const auto& m : dr.mailboxes()) {
    Digest d;
    Digest::FromBytes(m.digest(), &d);
    out[m.mailbox_id()] = {m.name(), d};
  }
  return out;
}

}  // namespace

awaitable<absl::Status> SyncClient::Check(Session& s) {
  const SyncClientOptions::Check& opt = options_.check;
  check_.Clear();
  check_.set_slot_id(s.replica_slot);
  check_.set_address(options_.server);
  if (!s.check_capable) {
    co_return absl::FailedPreconditionError(absl::StrCat(
        "replica ", options_.server, " cannot be checked: its sync server does not offer the '",
        kCapabilityCheck, "' capability (an older replicad); upgrade it"));
  }
  auto request = [&](syncpb::Frame f, const char* what,
                     syncpb::Frame::BodyCase want) -> awaitable<absl::StatusOr<syncpb::Frame>> {
    s.conn->Send(f);
    // A deep verify of a large replica, paced, takes as long as it takes.
    auto reply = co_await s.conn->Read(absl::Hours(24));
    if (!reply.ok()) co_return reply.status();
    if (reply->body_case() != want) co_return Unexpected(*reply, what, options_.server, &stats_);
    co_return std::move(*reply);
  };

  // 1. --deep: the replica hashes its bodies and checks its index against
  // its log while it goes on replicating (no other session is held back).
  std::set<std::string> bad_guids;
  if (opt.deep) {
    syncpb::Frame f;
    f.mutable_verify_request()->set_max_bytes_per_second(opt.max_bytes_per_second);
    auto v = co_await request(std::move(f), "a verify reply", syncpb::Frame::kVerifyReply);
    if (!v.ok()) co_return v.status();
    const syncpb::VerifyReply& vr = v->verify_reply();
    check_.set_bodies_hashed(vr.bodies());
    check_.set_bytes_hashed(vr.bytes());
    for (const std::string& g : vr.bad_guids()) bad_guids.insert(g);
    for (const std::string& p : vr.problems()) check_.add_problems(p);
  }

  // 2. The slot digests at a common LSN: equal (and nothing found above)
  // is the fast answer.
  syncpb::DigestRequest slot_only;
  slot_only.set_source(syncpb::STORED);
  slot_only.set_slot_only(true);
  // The master's side is its stored slot digest: O(1), whatever the
  // number of mailboxes; the mailboxes are read only when needed below.
  auto met = co_await MeetAtCommonLsn(s, slot_only, Index::ViewScope::kPosition);
  if (!met.ok()) co_return met.status();
  Index& ix = *met->view;
  check_.set_lsn(ix.applied_lsn());
  Digest replica_slot;
  Digest::FromBytes(met->replica.slot_digest(), &replica_slot);
  check_.set_slot_digest_match(replica_slot == ix.slot_digest());
  if (!check_.slot_digest_match() || opt.deep || !bad_guids.empty()) {
    absl::Status loaded = co_await Offload(blocking_, [&] { return ix.LoadState(); });
    if (!loaded.ok()) co_return loaded;
  }

  // 3. Which mailboxes differ: by the running digests (O(mailboxes)), or,
  // deep, recomputed from the rows on both sides.
  std::set<std::string> differing;
  if (!check_.slot_digest_match() || opt.deep) {
    syncpb::DigestRequest all;
    all.set_source(opt.deep ? syncpb::ROWS : syncpb::STORED);
    syncpb::Frame f;
    *f.mutable_digest_request() = all;
    auto d = co_await request(std::move(f), "digests", syncpb::Frame::kDigestReply);
    if (!d.ok()) co_return d.status();
    auto replica = ReplicaDigests(d->digest_reply());
    // Deep: every mailbox's rows are read, on a worker.
    absl::Status compared = co_await Offload(blocking_, [&]() -> absl::Status {
      for (const auto& [id, mb] : ix.mailboxes()) {
        Digest mine = mb.MailboxDigest();
        if (opt.deep) {
          ASSIGN_OR_RETURN(Digest rows, RowDigest(ix, mb));
          if (!(rows == mine)) {
            check_.add_problems(absl::StrCat("master index: mailbox ", mb.name, " (", id,
                                             ") rows do not match its digest; run `mailctl "
                                             "verify` on the master slot"));
          }
          mine = rows;
        }
        auto it = replica.find(id);
        if (it == replica.end() || it->second.first != mb.name || !(it->second.second == mine)) {
          differing.insert(id);
        }
      }
      return absl::OkStatus();
    });
    if (!compared.ok()) co_return compared;
    for (const auto& [id, nd] : replica) {
      if (ix.FindMailbox(id) == nullptr) differing.insert(id);
    }
    if (!check_.slot_digest_match() && differing.empty() && !opt.deep) {
      check_.add_problems(
          "slot digests differ but every mailbox matches: quota limits differ");
    }
  }
  // Bodies the replica lacks or holds damaged, by the mailboxes using them.
  std::map<std::string, std::set<std::string>> bad_by_mailbox;  // id -> GUIDs
  std::map<std::string, std::vector<uint32_t>> bad_uids;         // id -> UIDs
  if (!bad_guids.empty()) {
    absl::Status listed = co_await Offload(blocking_, [&]() -> absl::Status {
      for (const auto& [id, mb] : ix.mailboxes()) {
        ASSIGN_OR_RETURN(std::vector<MessageInfo> messages, ix.ListMessages(id, false));
        for (const MessageInfo& m : messages) {
          if (!bad_guids.contains(m.guid)) continue;
          bad_by_mailbox[id].insert(m.guid);
          bad_uids[id].push_back(m.uid);
          differing.insert(id);
        }
      }
      return absl::OkStatus();
    });
    if (!listed.ok()) co_return listed;
    std::set<std::string> used;
    for (const auto& [id, guids] : bad_by_mailbox) used.insert(guids.begin(), guids.end());
    for (const std::string& g : bad_guids) {
      if (!used.contains(g)) {
        check_.add_problems(absl::StrCat("replica body ", GuidHex(g),
                                         " is missing or damaged; no live message uses it"));
      }
    }
  }

  // 4. Exactly how: both sides' state of each differing mailbox.
  std::map<std::string, logpb::RepairMailbox> master_state;
  if (!differing.empty()) {
    syncpb::Frame f;
    absl::Status read = co_await Offload(blocking_, [&]() -> absl::Status {
      for (const std::string& id : differing) {
        f.mutable_contents_request()->add_mailbox_ids(id);
        ASSIGN_OR_RETURN(master_state[id], MailboxState(ix, id));
      }
      return absl::OkStatus();
    });
    if (!read.ok()) co_return read;
    auto c = co_await request(std::move(f), "mailbox contents", syncpb::Frame::kContents);
    if (!c.ok()) co_return c.status();
    for (const logpb::RepairMailbox& theirs : c->contents().mailboxes()) {
      auto mine = master_state.find(theirs.mailbox_id());
      if (mine == master_state.end()) continue;
      checkpb::MailboxDifference d = CompareMailboxes(mine->second, theirs);
      if (auto bad = bad_uids.find(theirs.mailbox_id()); bad != bad_uids.end()) {
        for (uint32_t uid : bad->second) d.add_body_uids(uid);
        d.set_kind(d.kind().empty() ? "bodies" : absl::StrCat(d.kind(), ",bodies"));
      }
      if (d.kind().empty()) continue;  // equal rows after all (a name-only race cannot happen)
      *check_.add_differences() = std::move(d);
    }
  }

  // 5. --repair: the master's state of each differing mailbox replaces the
  // replica's (the server writes a REPAIR record), then compare again.
  if (opt.repair && check_.differences_size() > 0) {
    for (const checkpb::MailboxDifference& d : check_.differences()) {
      logpb::RepairMailbox r = master_state[d.mailbox_id()];
      if (r.deleted()) r.mutable_mailbox()->set_name(d.name());
      r.set_reason(absl::StrCat("check: ", d.kind()));
      const auto& bad = bad_by_mailbox[d.mailbox_id()];
      auto done = co_await SendRepair(s, r, {bad.begin(), bad.end()});
      if (!done.ok()) co_return done.status();
      if (done->ok()) {
        check_.set_repaired(check_.repaired() + 1);
      } else {
        check_.add_repair_failed(absl::StrCat(d.name(), ": ", done->error()));
      }
    }
    syncpb::Frame f;
    f.mutable_digest_request()->set_source(syncpb::ROWS);
    auto again = co_await request(std::move(f), "digests", syncpb::Frame::kDigestReply);
    if (!again.ok()) co_return again.status();
    auto replica = ReplicaDigests(again->digest_reply());
    bool clean = check_.repair_failed_size() == 0 && replica.size() == ix.mailboxes().size();
    absl::Status compared = co_await Offload(blocking_, [&]() -> absl::Status {
      for (const auto& [id, mb] : ix.mailboxes()) {
        auto it = replica.find(id);
        ASSIGN_OR_RETURN(Digest rows, RowDigest(ix, mb));
        if (it == replica.end() || it->second.first != mb.name || !(it->second.second == rows)) {
          clean = false;
        }
      }
      return absl::OkStatus();
    });
    if (!compared.ok()) co_return compared;
    check_.set_clean_after_repair(clean);
  }
  co_await Offload(blocking_, [&] { met->view.reset(); });
  // The comparison is complete; a lost Done only means the replica may
  // still be applying the last repair when this returns.
  if (absl::Status finished = co_await Finish(s); !finished.ok()) {
    LogLine(Severity::kWarning, "store check: the replica did not confirm the end",
            Kv("replica", options_.server) + Kv("error", finished.message()));
  }
  LogLine(check_.differences_size() == 0 && check_.problems_size() == 0 ? Severity::kInfo
                                                                        : Severity::kWarning,
          "store check",
          Kv("replica", options_.server) + Kv("lsn", check_.lsn()) +
              Kv("differences", check_.differences_size()) +
              Kv("problems", check_.problems_size()) + Kv("repaired", check_.repaired()));
  co_return absl::OkStatus();
}

}  // namespace mailrepl::sync
