#include "syncclient/mailbox_compare.h"

#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace mailrepl::sync {

absl::StatusOr<logpb::RepairMailbox> MailboxState(Index& ix, const std::string& id) {
  logpb::RepairMailbox r;
  r.set_mailbox_id(id);
  const MailboxInfo* mb = ix.FindMailbox(id);
  if (mb == nullptr) {
    r.set_deleted(true);
    return r;
  }
  logpb::SnapshotMailbox* sm = r.mutable_mailbox();
  sm->set_mailbox_id(id);
  sm->set_name(mb->name);
  sm->set_uidvalidity(mb->uidvalidity);
  sm->set_last_uid(mb->last_uid);
  sm->set_highest_modseq(mb->highest_modseq);
  ASSIGN_OR_RETURN(std::vector<MessageInfo> messages, ix.ListMessages(id, true));
  for (const MessageInfo& m : messages) {
    logpb::SnapshotMessage* x = r.add_messages();
    x->set_mailbox_id(id);
    x->set_uid(m.uid);
    x->set_guid(m.guid);
    x->set_size(m.size);
    x->set_internal_date(m.internal_date);
    for (const std::string& f : m.flags) x->add_flags(f);
    x->set_modseq(m.modseq);
    x->set_expunged(m.expunged);
  }
  return r;
}

absl::StatusOr<Digest> RowDigest(Index& ix, const MailboxInfo& mb) {
  ASSIGN_OR_RETURN(std::vector<MessageInfo> messages, ix.ListMessages(mb.id, true));
  Digest d = MailboxAttributesDigest(mb.id, mb.name, mb.uidvalidity, mb.last_uid,
                                     mb.highest_modseq);
  for (const MessageInfo& m : messages) {
    d.Add(MessageDigest(m.uid, m.guid, m.flags, m.modseq, m.expunged));
  }
  return d;
}

namespace {

bool SameRow(const logpb::SnapshotMessage& a, const logpb::SnapshotMessage& b) {
  return a.modseq() == b.modseq() && a.expunged() == b.expunged() &&
         std::vector<std::string>(a.flags().begin(), a.flags().end()) ==
             std::vector<std::string>(b.flags().begin(), b.flags().end());
}

}  // namespace

checkpb::MailboxDifference CompareMailboxes(const logpb::RepairMailbox& master,
                                            const logpb::RepairMailbox& replica) {
  checkpb::MailboxDifference d;
  d.set_mailbox_id(master.mailbox_id());
  d.set_name(master.deleted() ? replica.mailbox().name() : master.mailbox().name());
  if (master.deleted() && replica.deleted()) return d;
  if (replica.deleted()) {
    d.set_kind("missing on replica");
    return d;
  }
  if (master.deleted()) {
    d.set_kind("not on master");
    return d;
  }
  std::vector<std::string> kinds;
  std::vector<std::string> attributes;
  const logpb::SnapshotMailbox& a = master.mailbox();
  const logpb::SnapshotMailbox& b = replica.mailbox();
  if (a.name() != b.name()) attributes.push_back(absl::StrCat("name ", a.name(), " vs ", b.name()));
  if (a.uidvalidity() != b.uidvalidity()) {
    attributes.push_back(absl::StrCat("uidvalidity ", a.uidvalidity(), " vs ", b.uidvalidity()));
  }
  if (a.last_uid() != b.last_uid()) {
    attributes.push_back(absl::StrCat("last uid ", a.last_uid(), " vs ", b.last_uid()));
  }
  if (a.highest_modseq() != b.highest_modseq()) {
    attributes.push_back(
        absl::StrCat("highest modseq ", a.highest_modseq(), " vs ", b.highest_modseq()));
  }
  if (!attributes.empty()) {
    kinds.push_back("attributes");
    d.set_detail(absl::StrJoin(attributes, ", "));
  }
  std::map<uint32_t, const logpb::SnapshotMessage*> theirs;
  for (const auto& m : replica.messages()) theirs[m.uid()] = &m;
  for (const auto& m : master.messages()) {
    auto it = theirs.find(m.uid());
    if (it == theirs.end()) {
      d.add_missing_uids(m.uid());
      continue;
    }
    if (it->second->guid() != m.guid() || it->second->size() != m.size()) {
      // Another message under the same UID: the replica's is extra, the
      // master's missing.
      d.add_missing_uids(m.uid());
      d.add_extra_uids(m.uid());
    } else if (!SameRow(m, *it->second)) {
      d.add_flag_uids(m.uid());
    }
    theirs.erase(it);
  }
  for (const auto& [uid, m] : theirs) d.add_extra_uids(uid);
  if (d.missing_uids_size() + d.extra_uids_size() + d.flag_uids_size() > 0) {
    kinds.push_back("messages");
  }
  d.set_kind(absl::StrJoin(kinds, ","));
  return d;
}

}  // namespace mailrepl::sync
