#include "coordinator/coordinator.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "transport/net.h"
#include "common/status_macros.h"
#include "coordinator/schema.h"

namespace mailrepl::coord {

// The state of one transaction: the versions it will publish on commit.
struct Coordinator::Txn {
  Versions versions;
  bool topology_bumped = false;
  bool directory_bumped = false;
};

namespace {

using sqlite::Statement;

// "a, b, c" for at most `max` items, then "... (N more)".
std::string ShortList(const std::vector<std::string>& items, size_t max = 20) {
  if (items.size() <= max) return absl::StrJoin(items, ", ");
  std::vector<std::string> head(items.begin(), items.begin() + max);
  return absl::StrCat(absl::StrJoin(head, ", "), ", ... (", items.size() - max, " more)");
}

const char* DurabilityName(int d) { return d == coordpb::SYNC ? "sync" : "async"; }

absl::Status ValidateHostName(const std::string& host) {
  if (host.empty()) return absl::InvalidArgumentError("the host name is empty");
  if (host.size() > 255) {
    return absl::InvalidArgumentError(
        absl::StrCat("host name '", absl::CEscape(host.substr(0, 40)),
                     "...' is longer than 255 bytes"));
  }
  for (unsigned char c : host) {
    if (c <= ' ' || c >= 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "host name '", absl::CEscape(host),
          "' holds a space, a control or a non-ASCII character: use the host's DNS name"));
    }
  }
  return absl::OkStatus();
}

constexpr char kSlotColumns[] =
    "slot_id, host, lmtp_address, api_address, sync_address, data_path, meta_path, spool_path";

coordpb::SlotInfo SlotFromRow(const Statement& st, int first) {
  coordpb::SlotInfo s;
  s.set_slot_id(static_cast<uint64_t>(st.ColumnInt(first)));
  s.set_host(st.ColumnText(first + 1));
  s.set_lmtp_address(st.ColumnText(first + 2));
  s.set_api_address(st.ColumnText(first + 3));
  s.set_sync_address(st.ColumnText(first + 4));
  s.set_data_path(st.ColumnText(first + 5));
  s.set_meta_path(st.ColumnText(first + 6));
  s.set_spool_path(st.ColumnText(first + 7));
  return s;
}

bool SameSlot(const coordpb::SlotInfo& a, const coordpb::SlotInfo& b) {
  return a.slot_id() == b.slot_id() && a.host() == b.host() &&
         a.lmtp_address() == b.lmtp_address() && a.api_address() == b.api_address() &&
         a.sync_address() == b.sync_address() && a.data_path() == b.data_path() &&
         a.meta_path() == b.meta_path() && a.spool_path() == b.spool_path();
}

int64_t WallClockMs() { return absl::ToUnixMillis(absl::Now()); }

}  // namespace

std::string NormalizeUser(absl::string_view user) {
  absl::string_view local = user;
  if (size_t at = local.find('@'); at != absl::string_view::npos) local = local.substr(0, at);
  if (size_t plus = local.find('+'); plus != absl::string_view::npos) {
    local = local.substr(0, plus);
  }
  return absl::AsciiStrToLower(local);
}

absl::Status ValidateUser(absl::string_view user) {
  constexpr char kRule[] =
      "a user name is 1 to 64 lower-case letters, digits, '.', '_' and '-', starting with a "
      "letter or a digit";
  if (user.empty()) return absl::InvalidArgumentError(absl::StrCat("empty user name: ", kRule));
  if (user.size() > kMaxUserNameBytes) {
    // Escaped: a cut through a UTF-8 character would make the message
    // invalid UTF-8, which the client's proto3 parser refuses (the whole
    // RPC Reply with it).
    return absl::InvalidArgumentError(absl::StrCat("user name '",
                                                   absl::CEscape(user.substr(0, 20)), "...' is ",
                                                   user.size(), " bytes long: ", kRule));
  }
  for (size_t i = 0; i < user.size(); ++i) {
    const char c = user[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    const bool punct = c == '.' || c == '_' || c == '-';
    if (!alnum && !(punct && i > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("user name '", absl::CEscape(user), "' has '", absl::CEscape(user.substr(i, 1)),
                       "' at position ", i, ": ", kRule));
    }
  }
  return absl::OkStatus();
}

// --- opening ---

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Open(const std::string& path,
                                                               CoordinatorOptions options) {
  if (!options.now_ms) options.now_ms = BootMillis;
  if (!options.wall_ms) options.wall_ms = WallClockMs;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open coordinator database ", path, ": ", std::strerror(errno),
                     ": check that the directory exists and is writable"));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "coordinator database ", path, " is in use",
        err == EWOULDBLOCK ? " by another coordinatord: stop it first, or use another --db"
                           : absl::StrCat(": flock: ", std::strerror(err))));
  }
  std::unique_ptr<Coordinator> c;
  {
    absl::StatusOr<std::unique_ptr<sqlite::Database>> db = OpenCoordinatorDb(
        path, {.cluster_id = options.cluster_id,
               .lease_ms = options.lease_ms == 0 ? 6000 : options.lease_ms});
    if (!db.ok()) {
      // The SQLite handle is already gone (never made, or freed above):
      // closing our descriptor cannot drop its POSIX locks.
      ::close(fd);
      return db.status();
    }
    c.reset(new Coordinator(fd, std::move(db).value(), std::move(options)));
  }
  RETURN_IF_ERROR(c->Load());
  if (!c->options_.cluster_id.empty() && c->options_.cluster_id != c->cluster_id_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "coordinator database ", path, " belongs to cluster '", c->cluster_id_, "', not '",
        c->options_.cluster_id,
        "': --cluster-id is only used to create a new database; omit it or give --db the "
        "right file"));
  }
  // Before a new lease period: the stored expiries were granted with the
  // stored one.
  RETURN_IF_ERROR(c->ClampPersistedTimes());
  if (c->options_.lease_ms != 0 && c->options_.lease_ms != c->lease_ms_) {
    RETURN_IF_ERROR(c->SetLeaseMs(c->options_.lease_ms));
  }
  RETURN_IF_ERROR(c->AbortInterruptedFailovers());
  return c;
}

Coordinator::Coordinator(int lock_fd, std::unique_ptr<sqlite::Database> db,
                         CoordinatorOptions options)
    : lock_fd_(lock_fd), db_(std::move(db)), options_(std::move(options)) {}

Coordinator::~Coordinator() {
  db_.reset();  // close SQLite before the descriptor that holds the flock
  ::close(lock_fd_);
}

absl::Status Coordinator::Load() {
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT cluster_id, lease_ms, topology_version, "
                                              "directory_version FROM cluster WHERE id = 1"));
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) {
    return absl::DataLossError(absl::StrCat("coordinator database ", db_->path(),
                                            " has no cluster row: restore a backup"));
  }
  cluster_id_ = st.ColumnText(0);
  lease_ms_ = static_cast<uint32_t>(st.ColumnInt(1));
  versions_.topology = static_cast<uint64_t>(st.ColumnInt(2));
  versions_.directory = static_cast<uint64_t>(st.ColumnInt(3));
  return absl::OkStatus();
}

absl::Status Coordinator::SetLeaseMs(uint32_t lease_ms) {
  return InTransaction(true, [&](Txn& txn) -> absl::Status {
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE cluster SET lease_ms = ? WHERE id = 1"));
    st.Bind(1, static_cast<int64_t>(lease_ms));
    RETURN_IF_ERROR(st.Run());
    RETURN_IF_ERROR(BumpTopology(txn));
    RETURN_IF_ERROR(AppendEvent(txn, 0, "set_lease_ms",
                                absl::StrCat("lease period ", lease_ms_, " ms -> ", lease_ms,
                                             " ms")));
    lease_ms_ = lease_ms;  // restored below if the transaction fails
    return absl::OkStatus();
  });
}

absl::Status Coordinator::ClampPersistedTimes() {
  // The database holds now_ms() values: still exact after a restart of
  // coordinatord on the same boot, meaningless after a reboot (BootMillis
  // starts again near 0; a database written by a coordinatord that used
  // Unix ms holds values far in the future). None may lie in the future,
  // or a dead host would look alive (and a report young) indefinitely.
  // Capping a lease expiry at now + lease_ms is conservative: the real one
  // (after a reboot) has passed. Safety does not rest on these values
  // anyway: a forced promotion always waits lease_ms on this clock after it
  // begins, whatever the stored expiry (coordinator/promote.h), and a
  // planned failover waits for the master itself to report it is fenced.
  return InTransaction(true, [&](Txn&) -> absl::Status {
    const int64_t now = Now();
    ASSIGN_OR_RETURN(Statement lease,
                     db_->Prepare("UPDATE leases SET expires_ms = ? WHERE expires_ms > ?"));
    lease.Bind(1, now + static_cast<int64_t>(lease_ms_));
    lease.Bind(2, now + static_cast<int64_t>(lease_ms_));
    RETURN_IF_ERROR(lease.Run());
    ASSIGN_OR_RETURN(Statement beat, db_->Prepare("UPDATE hosts SET last_heartbeat_ms = ? "
                                                  "WHERE last_heartbeat_ms > ?"));
    beat.Bind(1, now);
    beat.Bind(2, now);
    RETURN_IF_ERROR(beat.Run());
    ASSIGN_OR_RETURN(Statement report,
                     db_->Prepare("UPDATE slots SET status_ms = ? WHERE status_ms > ?"));
    report.Bind(1, now);
    report.Bind(2, now);
    return report.Run();
  });
}

// --- transactions and shared helpers ---

absl::Status Coordinator::InTransaction(bool write,
                                        const std::function<absl::Status(Txn&)>& body) {
  Txn txn;
  txn.versions = versions_;
  const uint32_t lease_before = lease_ms_;
  RETURN_IF_ERROR(db_->Exec(write ? "BEGIN IMMEDIATE" : "BEGIN"));
  absl::Status s = body(txn);
  if (s.ok()) s = db_->Exec("COMMIT");
  if (!s.ok()) {
    db_->Exec("ROLLBACK").IgnoreError();
    lease_ms_ = lease_before;
    return s;
  }
  const bool changed = !(txn.versions == versions_);
  versions_ = txn.versions;
  if (changed && listener_) listener_();
  return absl::OkStatus();
}

absl::Status Coordinator::AppendEvent(Txn& txn, uint64_t store_id, absl::string_view kind,
                                      absl::string_view detail) {
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT INTO events (time_ms, store_id, kind, "
                                              "detail) VALUES (?, ?, ?, ?)"));
  st.Bind(1, WallNow());  // history: the wall clock
  st.Bind(2, static_cast<int64_t>(store_id));
  st.Bind(3, kind);
  st.Bind(4, detail);
  return st.Run();
}

absl::Status Coordinator::BumpTopology(Txn& txn) {
  if (txn.topology_bumped) return absl::OkStatus();
  RETURN_IF_ERROR(
      db_->Exec("UPDATE cluster SET topology_version = topology_version + 1 WHERE id = 1"));
  txn.topology_bumped = true;
  ++txn.versions.topology;
  return absl::OkStatus();
}

absl::Status Coordinator::BumpDirectory(Txn& txn) {
  if (txn.directory_bumped) return absl::OkStatus();
  RETURN_IF_ERROR(
      db_->Exec("UPDATE cluster SET directory_version = directory_version + 1 WHERE id = 1"));
  txn.directory_bumped = true;
  ++txn.versions.directory;
  return absl::OkStatus();
}

absl::Status Coordinator::RenewLeases(Txn&, const std::string& host) {
  ASSIGN_OR_RETURN(
      Statement st,
      db_->Prepare("INSERT INTO leases (store_id, slot_id, expires_ms) "
                   "SELECT st.store_id, st.master_slot_id, ? FROM stores st "
                   "JOIN slots sl ON sl.slot_id = st.master_slot_id WHERE sl.host = ? "
                   "ON CONFLICT (store_id) DO UPDATE SET slot_id = excluded.slot_id, "
                   "expires_ms = excluded.expires_ms"));
  st.Bind(1, Now() + static_cast<int64_t>(lease_ms_));
  st.Bind(2, host);
  return st.Run();
}

absl::Status Coordinator::GrantLease(Txn&, uint64_t store_id, uint64_t slot_id) {
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare("INSERT INTO leases (store_id, slot_id, expires_ms) "
                                "VALUES (?, ?, ?) ON CONFLICT (store_id) DO UPDATE SET "
                                "slot_id = excluded.slot_id, expires_ms = excluded.expires_ms"));
  st.Bind(1, static_cast<int64_t>(store_id));
  st.Bind(2, static_cast<int64_t>(slot_id));
  st.Bind(3, Now() + static_cast<int64_t>(lease_ms_));
  return st.Run();
}

absl::Status Coordinator::Unfence(Txn&, uint64_t store_id) {
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare("UPDATE stores SET fenced = 0 WHERE store_id = ? AND fenced = 1"));
  st.Bind(1, static_cast<int64_t>(store_id));
  return st.Run();
}

absl::StatusOr<bool> Coordinator::HostExists(const std::string& host) {
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT 1 FROM hosts WHERE name = ?"));
  st.Bind(1, host);
  return st.Step();
}

absl::StatusOr<coordpb::SlotInfo> Coordinator::LoadSlot(uint64_t slot_id, bool* found) {
  ASSIGN_OR_RETURN(Statement st, db_->Prepare(absl::StrCat("SELECT ", kSlotColumns,
                                                           " FROM slots WHERE slot_id = ?")));
  st.Bind(1, static_cast<int64_t>(slot_id));
  ASSIGN_OR_RETURN(*found, st.Step());
  if (!*found) return coordpb::SlotInfo();
  return SlotFromRow(st, 0);
}

absl::StatusOr<coordpb::StoreInfo> Coordinator::LoadStore(uint64_t store_id, bool* found) {
  coordpb::StoreInfo store;
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare("SELECT master_slot_id, epoch, durability, fenced, service_lmtp, "
                                "service_api FROM stores WHERE store_id = ?"));
  st.Bind(1, static_cast<int64_t>(store_id));
  ASSIGN_OR_RETURN(*found, st.Step());
  if (!*found) return store;
  store.set_store_id(store_id);
  store.set_master_slot_id(static_cast<uint64_t>(st.ColumnInt(0)));
  store.set_epoch(static_cast<uint64_t>(st.ColumnInt(1)));
  store.set_durability(static_cast<coordpb::Durability>(st.ColumnInt(2)));
  store.set_fenced(st.ColumnInt(3) != 0);
  store.set_service_lmtp(st.ColumnText(4));
  store.set_service_api(st.ColumnText(5));
  ASSIGN_OR_RETURN(Statement members,
                   db_->Prepare(absl::StrCat(
                       "SELECT ", kSlotColumns,
                       " FROM store_members m JOIN slots USING (slot_id) WHERE m.store_id = ? "
                       "ORDER BY m.position")));
  members.Bind(1, static_cast<int64_t>(store_id));
  while (true) {
    ASSIGN_OR_RETURN(bool row, members.Step());
    if (!row) break;
    *store.add_members() = SlotFromRow(members, 0);
  }
  // CreateStore puts the master it was created with at position 0.
  if (store.members_size() > 0) store.set_preferred_slot_id(store.members(0).slot_id());
  return store;
}

absl::Status Coordinator::FillAssignments(Txn& txn, const std::string& host, bool include_slots,
                                          bool include_users, coordpb::Assignments* out) {
  out->set_version(txn.versions.topology);
  out->set_cluster_id(cluster_id_);
  out->set_lease_ms(lease_ms_);
  out->set_vouch_grace_ms(options_.vouch_grace_ms);
  out->set_directory_version(txn.versions.directory);
  if (include_slots) {
    ASSIGN_OR_RETURN(Statement st,
                     db_->Prepare("SELECT sl.slot_id, m.store_id FROM slots sl LEFT JOIN "
                                  "store_members m USING (slot_id) WHERE sl.host = ? "
                                  "ORDER BY sl.slot_id"));
    st.Bind(1, host);
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      coordpb::SlotAssignment* a = out->add_slots();
      a->set_slot_id(static_cast<uint64_t>(st.ColumnInt(0)));
      if (st.ColumnIsNull(1)) {
        a->set_role(coordpb::ROLE_NONE);
        continue;
      }
      bool found = false;
      ASSIGN_OR_RETURN(*a->mutable_store(),
                       LoadStore(static_cast<uint64_t>(st.ColumnInt(1)), &found));
      a->set_role(a->store().master_slot_id() == a->slot_id() ? coordpb::MASTER
                                                              : coordpb::REPLICA);
    }
  }
  if (include_users) {
    out->set_users_included(true);
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT user, store_id FROM users ORDER BY user"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      coordpb::UserEntry* u = out->add_users();
      u->set_user(st.ColumnText(0));
      u->set_store_id(static_cast<uint64_t>(st.ColumnInt(1)));
    }
  }
  return absl::OkStatus();
}

// --- RegisterHost ---

namespace {

// RegisterHost's checks of its arguments: the slot ids declared.
absl::StatusOr<std::set<uint64_t>> CheckRegisterHost(const coordpb::RegisterHost& request) {
  const std::string& host = request.host();
  RETURN_IF_ERROR(ValidateHostName(host));
  std::set<uint64_t> ids;
  for (const coordpb::SlotInfo& s : request.slots()) {
    if (s.slot_id() == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("host ", host, " declares a slot with id 0: slot ids start at 1"));
    }
    if (!s.host().empty() && s.host() != host) {
      return absl::InvalidArgumentError(absl::StrCat("host ", host, " declares slot ",
                                                     s.slot_id(), " as a slot of host ",
                                                     s.host(), ": a host registers only its own slots"));
    }
    if (!ids.insert(s.slot_id()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("host ", host, " declares slot ", s.slot_id(), " twice"));
    }
  }
  return ids;
}

}  // namespace

absl::StatusOr<coordpb::RegisterHostReply> Coordinator::RegisterHost(
    const coordpb::RegisterHost& request) {
  const std::string& host = request.host();
  ASSIGN_OR_RETURN(const std::set<uint64_t> ids, CheckRegisterHost(request));
  coordpb::RegisterHostReply reply;
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    std::vector<std::string> notes;
    bool changed = false;
    // Refuse slots of other hosts before touching anything.
    std::vector<std::string> added, updated;
    for (const coordpb::SlotInfo& s : request.slots()) {
      bool found = false;
      ASSIGN_OR_RETURN(coordpb::SlotInfo old, LoadSlot(s.slot_id(), &found));
      if (found && old.host() != host) {
        return absl::FailedPreconditionError(absl::StrCat(
            "slot ", s.slot_id(), " is registered by host ", old.host(), ", so host ", host,
            " cannot claim it: slot ids are unique in the cluster; fix the slot id in ", host,
            "'s configuration (or retire the slot on ", old.host(), ")"));
      }
      coordpb::SlotInfo want = s;
      want.set_host(host);
      if (!found) {
        added.push_back(absl::StrCat(s.slot_id()));
      } else if (!SameSlot(old, want)) {
        updated.push_back(absl::StrCat(s.slot_id()));
      }
    }
    ASSIGN_OR_RETURN(Statement old_host,
                     db_->Prepare("SELECT metrics_address FROM hosts WHERE name = ?"));
    old_host.Bind(1, host);
    ASSIGN_OR_RETURN(bool known, old_host.Step());
    if (!known) {
      changed = true;
      notes.push_back("new host");
    } else if (old_host.ColumnText(0) != request.metrics_address()) {
      changed = true;
      notes.push_back(absl::StrCat("metrics address ", old_host.ColumnText(0), " -> ",
                                   request.metrics_address()));
    }
    ASSIGN_OR_RETURN(Statement up,
                     db_->Prepare("INSERT INTO hosts (name, metrics_address, last_heartbeat_ms) "
                                  "VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                                  "metrics_address = excluded.metrics_address, "
                                  "last_heartbeat_ms = excluded.last_heartbeat_ms"));
    up.Bind(1, host);
    up.Bind(2, request.metrics_address());
    up.Bind(3, Now());
    RETURN_IF_ERROR(up.Run());
    ASSIGN_OR_RETURN(
        Statement slot_up,
        db_->Prepare("INSERT INTO slots (slot_id, host, lmtp_address, api_address, sync_address, "
                     "data_path, meta_path, spool_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                     "ON CONFLICT (slot_id) DO UPDATE SET lmtp_address = excluded.lmtp_address, "
                     "api_address = excluded.api_address, sync_address = excluded.sync_address, "
                     "data_path = excluded.data_path, meta_path = excluded.meta_path, "
                     "spool_path = excluded.spool_path"));
    for (const coordpb::SlotInfo& s : request.slots()) {
      slot_up.Bind(1, static_cast<int64_t>(s.slot_id()));
      slot_up.Bind(2, host);
      slot_up.Bind(3, s.lmtp_address());
      slot_up.Bind(4, s.api_address());
      slot_up.Bind(5, s.sync_address());
      slot_up.Bind(6, s.data_path());
      slot_up.Bind(7, s.meta_path());
      slot_up.Bind(8, s.spool_path());
      RETURN_IF_ERROR(slot_up.Run());
    }
    if (!added.empty()) {
      changed = true;
      notes.push_back(absl::StrCat("new slots ", ShortList(added)));
    }
    if (!updated.empty()) {
      changed = true;
      notes.push_back(absl::StrCat("changed slots ", ShortList(updated)));
    }
    // Slots the host registered before but no longer declares stay (they
    // may be in stores); say so.
    ASSIGN_OR_RETURN(Statement mine, db_->Prepare("SELECT slot_id FROM slots WHERE host = ? "
                                                  "ORDER BY slot_id"));
    mine.Bind(1, host);
    std::vector<std::string> missing;
    while (true) {
      ASSIGN_OR_RETURN(bool row, mine.Step());
      if (!row) break;
      if (!ids.contains(static_cast<uint64_t>(mine.ColumnInt(0)))) {
        missing.push_back(absl::StrCat(mine.ColumnInt(0)));
      }
    }
    if (!missing.empty()) {
      notes.push_back(absl::StrCat("registered before but not declared now (kept): ",
                                   ShortList(missing)));
    }
    if (notes.empty()) notes.push_back("unchanged");
    std::vector<std::string> all;
    for (uint64_t id : ids) all.push_back(absl::StrCat(id));
    RETURN_IF_ERROR(AppendEvent(
        txn, 0, "register_host",
        absl::StrCat("host ", host, " slots [", ShortList(all, 100), "]: ",
                     absl::StrJoin(notes, "; "))));
    if (changed) RETURN_IF_ERROR(BumpTopology(txn));
    RETURN_IF_ERROR(RenewLeases(txn, host));
    return FillAssignments(txn, host, true, true, reply.mutable_assignments());
  }));
  // Counts as a heartbeat of the host (a promotion waiting for its master's
  // host to stay away learns that it is back).
  report_sequence_by_host_[host] = ++report_sequence_;
  if (report_listener_) report_listener_();
  return reply;
}

// --- Heartbeat ---

absl::StatusOr<coordpb::HeartbeatReply> Coordinator::Heartbeat(
    const coordpb::Heartbeat& request) {
  const std::string& host = request.host();
  coordpb::HeartbeatReply reply;
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    ASSIGN_OR_RETURN(bool known, HostExists(host));
    if (!known) {
      return absl::NotFoundError(absl::StrCat("host '", host,
                                              "' is not registered: send RegisterHost first"));
    }
    ASSIGN_OR_RETURN(Statement owner, db_->Prepare("SELECT host FROM slots WHERE slot_id = ?"));
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE slots SET status = ?, status_ms = ? "
                                                "WHERE slot_id = ?"));
    for (const coordpb::SlotStatus& s : request.slots()) {
      owner.Bind(1, static_cast<int64_t>(s.slot_id()));
      ASSIGN_OR_RETURN(bool row, owner.Step());
      const std::string owner_host = row ? owner.ColumnText(0) : "";
      owner.Reset();
      if (owner_host != host) {
        return absl::NotFoundError(absl::StrCat(
            "host ", host, " reports slot ", s.slot_id(), ", which it has not registered",
            owner_host.empty() ? "" : absl::StrCat(" (host ", owner_host, " owns it)"),
            ": send RegisterHost with every slot first"));
      }
      st.BindBlob(1, s.SerializeAsString());
      st.Bind(2, Now());
      st.Bind(3, static_cast<int64_t>(s.slot_id()));
      RETURN_IF_ERROR(st.Run());
    }
    ASSIGN_OR_RETURN(Statement beat,
                     db_->Prepare("UPDATE hosts SET last_heartbeat_ms = ? WHERE name = ?"));
    beat.Bind(1, Now());
    beat.Bind(2, host);
    RETURN_IF_ERROR(beat.Run());
    RETURN_IF_ERROR(RenewLeases(txn, host));
    const bool topology = request.known_version() != txn.versions.topology;
    const bool directory = request.known_directory_version() != txn.versions.directory;
    reply.set_changed(topology);
    return FillAssignments(txn, host, topology, directory, reply.mutable_assignments());
  }));
  ++report_sequence_;
  report_sequence_by_host_[host] = report_sequence_;
  if (known_by_host_[host].topology != request.known_version()) topology_since_[host] = Now();
  known_by_host_[host] = {request.known_version(), request.known_directory_version()};
  for (const coordpb::SlotStatus& s : request.slots()) {
    report_sequence_by_slot_[s.slot_id()] = report_sequence_;
  }
  if (report_listener_) report_listener_();
  return reply;
}

absl::StatusOr<coordpb::HeartbeatReply> Coordinator::HeartbeatAnswer(
    const std::string& host, uint64_t known_version, uint64_t known_directory_version) {
  coordpb::HeartbeatReply reply;
  RETURN_IF_ERROR(InTransaction(false, [&](Txn& txn) -> absl::Status {
    const bool topology = known_version != txn.versions.topology;
    const bool directory = known_directory_version != txn.versions.directory;
    reply.set_changed(topology);
    return FillAssignments(txn, host, topology, directory, reply.mutable_assignments());
  }));
  return reply;
}

// --- LookupUser ---

namespace {

// UserStore's check of its argument: the user name, normalized.
absl::StatusOr<std::string> CheckUserToLookUp(absl::string_view name) {
  std::string user = NormalizeUser(name);
  if (absl::Status s = ValidateUser(user); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot look up '", absl::CEscape(name), "': ", s.message()));
  }
  return user;
}

}  // namespace

absl::StatusOr<std::optional<coordpb::StoreInfo>> Coordinator::UserStore(
    absl::string_view name) {
  ASSIGN_OR_RETURN(const std::string user, CheckUserToLookUp(name));
  std::optional<coordpb::StoreInfo> out;
  RETURN_IF_ERROR(InTransaction(false, [&](Txn&) -> absl::Status {
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT store_id FROM users WHERE user = ?"));
    st.Bind(1, user);
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return absl::OkStatus();
    bool found = false;
    ASSIGN_OR_RETURN(coordpb::StoreInfo store,
                     LoadStore(static_cast<uint64_t>(st.ColumnInt(0)), &found));
    if (found) out = std::move(store);  // always: foreign key
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<coordpb::LookupUserReply> Coordinator::LookupUser(
    const coordpb::LookupUser& request) {
  ASSIGN_OR_RETURN(std::optional<coordpb::StoreInfo> store, UserStore(request.user()));
  coordpb::LookupUserReply reply;
  if (!store) return reply;
  reply.set_found(true);
  reply.set_store_id(store->store_id());
  reply.set_epoch(store->epoch());
  for (const coordpb::SlotInfo& m : store->members()) {
    if (m.slot_id() == store->master_slot_id()) *reply.mutable_master() = m;
  }
  return reply;
}

// --- CreateStore ---

namespace {

// CreateStore's checks of its arguments: the master slot.
absl::StatusOr<uint64_t> CheckCreateStore(const coordpb::CreateStore& request) {
  if (request.slot_ids_size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("a store needs at least 2 slots (a master and a replica on another host); "
                     "got ", request.slot_ids_size()));
  }
  std::set<uint64_t> unique;
  for (uint64_t id : request.slot_ids()) {
    if (id == 0) return absl::InvalidArgumentError("slot id 0 does not exist: ids start at 1");
    if (!unique.insert(id).second) {
      return absl::InvalidArgumentError(absl::StrCat("slot ", id, " is listed twice"));
    }
  }
  const uint64_t master = request.master_slot_id() == 0 ? request.slot_ids(0)
                                                        : request.master_slot_id();
  if (!unique.contains(master)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "master slot ", master, " is not one of the store's slots: list it in the slot ids"));
  }
  if (!coordpb::Durability_IsValid(request.durability())) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown durability ", static_cast<int>(request.durability()),
                     ": use ASYNC or SYNC"));
  }
  return master;
}

}  // namespace

absl::StatusOr<coordpb::CreateStoreReply> Coordinator::CreateStore(
    const coordpb::CreateStore& request) {
  ASSIGN_OR_RETURN(const uint64_t master, CheckCreateStore(request));
  coordpb::CreateStoreReply reply;
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    std::map<std::string, uint64_t> by_host;
    std::vector<std::string> replicas;
    std::string master_host;
    for (uint64_t id : request.slot_ids()) {
      bool found = false;
      ASSIGN_OR_RETURN(coordpb::SlotInfo slot, LoadSlot(id, &found));
      if (!found) {
        return absl::NotFoundError(absl::StrCat(
            "slot ", id, " is not registered: its host must declare it (RegisterHost) first"));
      }
      auto [it, inserted] = by_host.emplace(slot.host(), id);
      if (!inserted) {
        return absl::FailedPreconditionError(absl::StrCat(
            "slots ", it->second, " and ", id, " are both on host ", slot.host(),
            ": a store needs its slots on different hosts, so that losing a host loses "
            "one copy"));
      }
      ASSIGN_OR_RETURN(Statement member,
                       db_->Prepare("SELECT store_id FROM store_members WHERE slot_id = ?"));
      member.Bind(1, static_cast<int64_t>(id));
      ASSIGN_OR_RETURN(bool taken, member.Step());
      if (taken) {
        return absl::FailedPreconditionError(absl::StrCat(
            "slot ", id, " is already in store ", member.ColumnInt(0),
            ": a slot holds one store; pick an idle slot"));
      }
      if (id == master) {
        master_host = slot.host();
      } else {
        replicas.push_back(absl::StrCat(id, " (", slot.host(), ")"));
      }
    }
    uint64_t store_id = request.store_id();
    if (store_id == 0) {
      ASSIGN_OR_RETURN(Statement next,
                       db_->Prepare("SELECT coalesce(max(store_id), 0) + 1 FROM stores"));
      ASSIGN_OR_RETURN(bool row, next.Step());
      (void)row;
      store_id = static_cast<uint64_t>(next.ColumnInt(0));
    } else {
      bool exists = false;
      ASSIGN_OR_RETURN(coordpb::StoreInfo old, LoadStore(store_id, &exists));
      if (exists) {
        return absl::AlreadyExistsError(absl::StrCat(
            "store ", store_id, " already exists: pick another id, or 0 for the next free one"));
      }
    }
    RETURN_IF_ERROR(CheckServiceAddresses(store_id, request.service_lmtp(), request.service_api()));
    ASSIGN_OR_RETURN(Statement ins,
                     db_->Prepare("INSERT INTO stores (store_id, master_slot_id, epoch, "
                                  "durability, fenced, service_lmtp, service_api) "
                                  "VALUES (?, ?, 1, ?, 0, ?, ?)"));
    ins.Bind(1, static_cast<int64_t>(store_id));
    ins.Bind(2, static_cast<int64_t>(master));
    ins.Bind(3, static_cast<int64_t>(request.durability()));
    ins.Bind(4, request.service_lmtp());
    ins.Bind(5, request.service_api());
    RETURN_IF_ERROR(ins.Run());
    ASSIGN_OR_RETURN(Statement mem, db_->Prepare("INSERT INTO store_members (store_id, slot_id, "
                                                 "position) VALUES (?, ?, ?)"));
    // The master first (position 0: StoreInfo.preferred_slot_id), then the
    // others in the order given.
    std::vector<uint64_t> ordered = {master};
    for (uint64_t id : request.slot_ids()) {
      if (id != master) ordered.push_back(id);
    }
    for (size_t i = 0; i < ordered.size(); ++i) {
      mem.Bind(1, static_cast<int64_t>(store_id));
      mem.Bind(2, static_cast<int64_t>(ordered[i]));
      mem.Bind(3, static_cast<int64_t>(i));
      RETURN_IF_ERROR(mem.Run());
    }
    ASSIGN_OR_RETURN(Statement lease, db_->Prepare("INSERT INTO leases (store_id, slot_id, "
                                                   "expires_ms) VALUES (?, ?, 0)"));
    lease.Bind(1, static_cast<int64_t>(store_id));
    lease.Bind(2, static_cast<int64_t>(master));
    RETURN_IF_ERROR(lease.Run());
    RETURN_IF_ERROR(BumpTopology(txn));
    RETURN_IF_ERROR(AppendEvent(
        txn, store_id, "create_store",
        absl::StrCat("store ", store_id, " created at epoch 1: master slot ", master, " (",
                     master_host, "), replicas ", absl::StrJoin(replicas, ", "), "; durability ",
                     DurabilityName(request.durability()))));
    bool found = false;
    ASSIGN_OR_RETURN(*reply.mutable_store(), LoadStore(store_id, &found));
    return absl::OkStatus();
  }));
  return reply;
}

// --- AssignUsers ---

namespace {

// AssignUsers's checks of its arguments: the users, once each.
absl::StatusOr<std::set<std::string>> CheckAssignUsers(const coordpb::AssignUsers& request) {
  if (request.users_size() == 0) return absl::InvalidArgumentError("no users given");
  std::set<std::string> users;
  for (const std::string& u : request.users()) {
    RETURN_IF_ERROR(ValidateUser(u));  // nothing is assigned if any name is bad
    users.insert(u);
  }
  return users;
}

}  // namespace

absl::StatusOr<coordpb::AssignUsersReply> Coordinator::AssignUsers(
    const coordpb::AssignUsers& request) {
  ASSIGN_OR_RETURN(const std::set<std::string> users, CheckAssignUsers(request));
  coordpb::AssignUsersReply reply;
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    bool exists = false;
    ASSIGN_OR_RETURN(coordpb::StoreInfo store, LoadStore(request.store_id(), &exists));
    if (!exists) {
      return absl::NotFoundError(absl::StrCat("store ", request.store_id(),
                                              " does not exist: create it first"));
    }
    ASSIGN_OR_RETURN(Statement cur, db_->Prepare("SELECT store_id FROM users WHERE user = ?"));
    ASSIGN_OR_RETURN(Statement put,
                     db_->Prepare("INSERT INTO users (user, store_id) VALUES (?, ?) ON CONFLICT "
                                  "(user) DO UPDATE SET store_id = excluded.store_id"));
    std::vector<std::string> added;
    std::map<uint64_t, std::vector<std::string>> moved;  // from store -> users
    for (const std::string& u : users) {
      cur.Bind(1, u);
      ASSIGN_OR_RETURN(bool row, cur.Step());
      const uint64_t from = row ? static_cast<uint64_t>(cur.ColumnInt(0)) : 0;
      cur.Reset();
      if (from == request.store_id()) continue;
      put.Bind(1, u);
      put.Bind(2, static_cast<int64_t>(request.store_id()));
      RETURN_IF_ERROR(put.Run());
      if (from == 0) {
        added.push_back(u);
      } else {
        moved[from].push_back(u);
      }
    }
    reply.set_assigned(static_cast<uint32_t>(users.size()));
    if (added.empty() && moved.empty()) return absl::OkStatus();
    std::vector<std::string> parts;
    if (!added.empty()) parts.push_back(absl::StrCat("new: ", ShortList(added)));
    for (const auto& [from, list] : moved) {
      parts.push_back(absl::StrCat("moved from store ", from, ": ", ShortList(list)));
      RETURN_IF_ERROR(AppendEvent(txn, from, "move_users_out",
                                  absl::StrCat(list.size(), " users moved to store ",
                                               request.store_id(), ": ", ShortList(list))));
    }
    size_t changed = added.size();
    for (const auto& [from, list] : moved) changed += list.size();
    RETURN_IF_ERROR(AppendEvent(txn, request.store_id(), "assign_users",
                                absl::StrCat(changed, " users assigned to store ",
                                             request.store_id(), " (",
                                             absl::StrJoin(parts, "; "), ")")));
    return BumpDirectory(txn);
  }));
  return reply;
}

// --- SetDurability ---

namespace {

// SetDurability's check of its argument.
absl::Status CheckSetDurability(const coordpb::SetDurability& request) {
  if (!coordpb::Durability_IsValid(request.durability())) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown durability ", static_cast<int>(request.durability()),
                     ": use ASYNC or SYNC"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<coordpb::SetDurabilityReply> Coordinator::SetDurability(
    const coordpb::SetDurability& request) {
  RETURN_IF_ERROR(CheckSetDurability(request));
  coordpb::SetDurabilityReply reply;
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    bool exists = false;
    ASSIGN_OR_RETURN(coordpb::StoreInfo store, LoadStore(request.store_id(), &exists));
    if (!exists) {
      return absl::NotFoundError(absl::StrCat("store ", request.store_id(), " does not exist"));
    }
    if (store.durability() != request.durability()) {
      ASSIGN_OR_RETURN(Statement st,
                       db_->Prepare("UPDATE stores SET durability = ? WHERE store_id = ?"));
      st.Bind(1, static_cast<int64_t>(request.durability()));
      st.Bind(2, static_cast<int64_t>(request.store_id()));
      RETURN_IF_ERROR(st.Run());
      RETURN_IF_ERROR(BumpTopology(txn));
      RETURN_IF_ERROR(AppendEvent(txn, request.store_id(), "set_durability",
                                  absl::StrCat("durability ", DurabilityName(store.durability()),
                                               " -> ", DurabilityName(request.durability()))));
      store.set_durability(request.durability());
    }
    *reply.mutable_store() = store;
    return absl::OkStatus();
  }));
  return reply;
}

// --- removals ---

absl::StatusOr<coordpb::RemoveStoreReply> Coordinator::RemoveStore(
    const coordpb::RemoveStore& request) {
  coordpb::RemoveStoreReply reply;
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    const uint64_t id = request.store_id();
    ASSIGN_OR_RETURN(coordpb::StoreInfo store, LoadIdleStore(id));
    ASSIGN_OR_RETURN(Statement users,
                     db_->Prepare("SELECT COUNT(*), MIN(user) FROM users WHERE store_id = ?"));
    users.Bind(1, static_cast<int64_t>(id));
    ASSIGN_OR_RETURN(bool row, users.Step());
    if (row && users.ColumnInt(0) > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "store ", id, " still has ", users.ColumnInt(0), " users (", users.ColumnText(1),
          ", ...): assign them to another store first (replctl assign-users); their mail "
          "would bounce"));
    }
    std::string data;
    for (const coordpb::SlotInfo& m : store.members()) {
      ASSIGN_OR_RETURN(std::optional<SlotReport> report, LastReport(m.slot_id()));
      if (report && report->status.last_lsn() > 0 && data.empty()) {
        data = absl::StrCat("slot ", m.slot_id(), "@", m.host(), " reported LSN ",
                            report->status.last_lsn());
      }
    }
    if (!data.empty() && !request.force()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "store ", id, " holds data (", data,
          "): --force removes it anyway (the slots keep their data on disk and go idle)"));
    }
    for (const char* sql : {"DELETE FROM leases WHERE store_id = ?",
                            "DELETE FROM store_members WHERE store_id = ?",
                            "DELETE FROM stores WHERE store_id = ?"}) {
      ASSIGN_OR_RETURN(Statement st, db_->Prepare(sql));
      st.Bind(1, static_cast<int64_t>(id));
      RETURN_IF_ERROR(st.Run());
    }
    RETURN_IF_ERROR(BumpTopology(txn));
    std::vector<std::string> slots;
    for (const coordpb::SlotInfo& m : store.members()) {
      slots.push_back(absl::StrCat(m.slot_id(), "@", m.host()));
    }
    RETURN_IF_ERROR(AppendEvent(
        txn, id, "remove_store",
        absl::StrCat("slots ", absl::StrJoin(slots, ","), " idle",
                     data.empty() ? "" : absl::StrCat("; forced, ", data))));
    *reply.mutable_store() = store;
    return absl::OkStatus();
  }));
  return reply;
}

absl::StatusOr<coordpb::RemoveSlotReply> Coordinator::RemoveSlot(
    const coordpb::RemoveSlot& request) {
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    const uint64_t id = request.slot_id();
    ASSIGN_OR_RETURN(Statement st,
                     db_->Prepare("SELECT s.host, m.store_id FROM slots s LEFT JOIN "
                                  "store_members m ON m.slot_id = s.slot_id WHERE s.slot_id = ?"));
    st.Bind(1, static_cast<int64_t>(id));
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("slot ", id, " does not exist"));
    const std::string host = st.ColumnText(0);
    if (st.ColumnInt(1) > 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("slot ", id, "@", host, " is a member of store ", st.ColumnInt(1),
                       ": remove the store first (replctl remove-store)"));
    }
    ASSIGN_OR_RETURN(Statement del, db_->Prepare("DELETE FROM slots WHERE slot_id = ?"));
    del.Bind(1, static_cast<int64_t>(id));
    RETURN_IF_ERROR(del.Run());
    RETURN_IF_ERROR(BumpTopology(txn));
    return AppendEvent(txn, 0, "remove_slot", absl::StrCat("slot ", id, "@", host));
  }));
  return coordpb::RemoveSlotReply();
}

absl::StatusOr<coordpb::RemoveHostReply> Coordinator::RemoveHost(
    const coordpb::RemoveHost& request) {
  coordpb::RemoveHostReply reply;
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    const std::string& host = request.host();
    ASSIGN_OR_RETURN(Statement known, db_->Prepare("SELECT 1 FROM hosts WHERE name = ?"));
    known.Bind(1, host);
    ASSIGN_OR_RETURN(bool exists, known.Step());
    if (!exists) return absl::NotFoundError(absl::StrCat("host ", host, " does not exist"));
    ASSIGN_OR_RETURN(Statement member,
                     db_->Prepare("SELECT m.slot_id, m.store_id FROM slots s JOIN store_members "
                                  "m ON m.slot_id = s.slot_id WHERE s.host = ? LIMIT 1"));
    member.Bind(1, host);
    ASSIGN_OR_RETURN(bool in_store, member.Step());
    if (in_store) {
      return absl::FailedPreconditionError(absl::StrCat(
          "host ", host, " holds slot ", member.ColumnInt(0), " of store ", member.ColumnInt(1),
          ": remove its stores first (replctl remove-store)"));
    }
    ASSIGN_OR_RETURN(bool alive, HostAlive(host));
    if (alive) {
      return absl::FailedPreconditionError(absl::StrCat(
          "host ", host, " is alive (it sent a heartbeat within the lease period): stop its "
          "replicad first, or it registers again"));
    }
    ASSIGN_OR_RETURN(Statement slots, db_->Prepare("DELETE FROM slots WHERE host = ?"));
    slots.Bind(1, host);
    RETURN_IF_ERROR(slots.Run());
    reply.set_slots_removed(static_cast<uint32_t>(db_->Changes()));
    ASSIGN_OR_RETURN(Statement del, db_->Prepare("DELETE FROM hosts WHERE name = ?"));
    del.Bind(1, host);
    RETURN_IF_ERROR(del.Run());
    RETURN_IF_ERROR(BumpTopology(txn));
    return AppendEvent(txn, 0, "remove_host",
                       absl::StrCat("host ", host, " and its ", reply.slots_removed(), " slots"));
  }));
  return reply;
}

// --- service addresses ---

absl::Status Coordinator::CheckServiceAddresses(uint64_t store_id, const std::string& lmtp,
                                                const std::string& api) {
  if (!lmtp.empty() && lmtp == api) {
    return absl::InvalidArgumentError(absl::StrCat(
        "store ", store_id, ": the LMTP and API service addresses are both ", lmtp,
        "; give them different ports"));
  }
  ASSIGN_OR_RETURN(Statement taken,
                   db_->Prepare("SELECT store_id FROM stores WHERE store_id != ? AND "
                                "(service_lmtp IN (?, ?) OR service_api IN (?, ?))"));
  for (const auto& [what, address] : {std::pair<const char*, const std::string&>{"LMTP", lmtp},
                                      {"API", api}}) {
    if (address.empty()) continue;
    if (absl::StatusOr<asio::ip::tcp::endpoint> e = transport::ParseEndpoint(address); !e.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("store ", store_id, ": the ", what,
                                                     " service address: ", e.status().message()));
    }
    taken.Bind(1, static_cast<int64_t>(store_id));
    for (int i = 2; i <= 5; ++i) taken.Bind(i, address);
    ASSIGN_OR_RETURN(bool row, taken.Step());
    const int64_t other = row ? taken.ColumnInt(0) : 0;
    taken.Reset();
    if (row) {
      return absl::AlreadyExistsError(absl::StrCat("store ", store_id, ": the ", what,
                                                   " service address ", address,
                                                   " is already store ", other, "'s"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<coordpb::SetServiceAddressReply> Coordinator::SetServiceAddress(
    const coordpb::SetServiceAddress& request) {
  coordpb::SetServiceAddressReply reply;
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    bool exists = false;
    ASSIGN_OR_RETURN(coordpb::StoreInfo store, LoadStore(request.store_id(), &exists));
    if (!exists) {
      return absl::NotFoundError(absl::StrCat("store ", request.store_id(), " does not exist"));
    }
    RETURN_IF_ERROR(CheckServiceAddresses(request.store_id(), request.lmtp(), request.api()));
    if (store.service_lmtp() != request.lmtp() || store.service_api() != request.api()) {
      ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE stores SET service_lmtp = ?, "
                                                  "service_api = ? WHERE store_id = ?"));
      st.Bind(1, request.lmtp());
      st.Bind(2, request.api());
      st.Bind(3, static_cast<int64_t>(request.store_id()));
      RETURN_IF_ERROR(st.Run());
      RETURN_IF_ERROR(BumpTopology(txn));
      auto shown = [](const std::string& a) { return a.empty() ? std::string("none") : a; };
      RETURN_IF_ERROR(AppendEvent(
          txn, request.store_id(), "set_service_address",
          absl::StrCat("lmtp ", shown(store.service_lmtp()), " -> ", shown(request.lmtp()),
                       ", api ", shown(store.service_api()), " -> ", shown(request.api()))));
      store.set_service_lmtp(request.lmtp());
      store.set_service_api(request.api());
    }
    *reply.mutable_store() = store;
    return absl::OkStatus();
  }));
  return reply;
}

// --- planned failover ---

namespace {

std::string SlotAt(uint64_t slot_id, const std::string& host) {
  return absl::StrCat("slot ", slot_id, "@", host);
}

std::string ReasonOrDefault(const std::string& reason) {
  return reason.empty() ? std::string("no reason given") : reason;
}

}  // namespace

absl::StatusOr<int64_t> Coordinator::LastHeartbeatMs(const std::string& host) {
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare("SELECT last_heartbeat_ms FROM hosts WHERE name = ?"));
  st.Bind(1, host);
  ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.ColumnInt(0) : 0;
}

absl::StatusOr<bool> Coordinator::HostAlive(const std::string& host) {
  ASSIGN_OR_RETURN(std::optional<int64_t> until, HostAliveUntil(host));
  return until.has_value();
}

absl::StatusOr<std::optional<int64_t>> Coordinator::HostAliveUntil(const std::string& host) {
  ASSIGN_OR_RETURN(int64_t last_beat, LastHeartbeatMs(host));
  const int64_t until = last_beat + static_cast<int64_t>(lease_ms_) + 1;
  if (last_beat <= 0 || Now() >= until) return std::nullopt;
  return until;
}

absl::StatusOr<std::optional<int64_t>> Coordinator::MasterHostAliveUntil(uint64_t store_id) {
  ASSIGN_OR_RETURN(coordpb::StoreInfo store, LoadIdleStore(store_id));
  for (const coordpb::SlotInfo& m : store.members()) {
    if (m.slot_id() == store.master_slot_id()) return HostAliveUntil(m.host());
  }
  return std::nullopt;
}

std::optional<int64_t> Coordinator::HoldsSince(const std::string& host, uint64_t version) const {
  auto known = known_by_host_.find(host);
  if (known == known_by_host_.end() || known->second.topology < version) return std::nullopt;
  // A version this coordinator never issued (its database was restored
  // from an older backup) says nothing about what the host applied.
  if (known->second.topology > versions().topology) return std::nullopt;
  return topology_since_.at(host);
}

bool Coordinator::HostHeardAfter(const std::string& host, uint64_t sequence) const {
  auto it = report_sequence_by_host_.find(host);
  return it != report_sequence_by_host_.end() && it->second > sequence;
}

absl::StatusOr<std::optional<SlotReport>> Coordinator::LastReport(uint64_t slot_id) {
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare("SELECT status, status_ms FROM slots WHERE slot_id = ?"));
  st.Bind(1, static_cast<int64_t>(slot_id));
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row || st.ColumnIsNull(0)) return std::nullopt;
  const std::string blob = st.ColumnBlob(0);
  if (blob.empty()) return std::nullopt;
  SlotReport report;
  if (!report.status.ParseFromString(blob)) {
    return absl::DataLossError(absl::StrCat("coordinator database ", db_->path(),
                                            ": the status of slot ", slot_id,
                                            " is unparsable"));
  }
  report.arrived_ms = st.ColumnInt(1);
  auto it = report_sequence_by_slot_.find(slot_id);
  report.sequence = it == report_sequence_by_slot_.end() ? 0 : it->second;
  return report;
}

absl::StatusOr<coordpb::StoreInfo> Coordinator::LoadIdleStore(uint64_t store_id) {
  bool exists = false;
  ASSIGN_OR_RETURN(coordpb::StoreInfo store, LoadStore(store_id, &exists));
  if (!exists) return absl::NotFoundError(absl::StrCat("store ", store_id, " does not exist"));
  if (store.fenced()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a failover or promotion of store ", store_id,
        " is in progress: wait for it to end (replctl history shows how it ended)"));
  }
  return store;
}

absl::StatusOr<FailoverPlan> Coordinator::BeginFailover(const coordpb::Failover& request) {
  FailoverPlan plan;
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    const uint64_t store_id = request.store_id();
    ASSIGN_OR_RETURN(coordpb::StoreInfo store, LoadIdleStore(store_id));
    std::map<uint64_t, std::string> host_of;
    std::vector<std::string> replicas;
    for (const coordpb::SlotInfo& m : store.members()) {
      host_of[m.slot_id()] = m.host();
      if (m.slot_id() != store.master_slot_id()) {
        replicas.push_back(SlotAt(m.slot_id(), m.host()));
      }
    }
    const uint64_t master = store.master_slot_id();
    uint64_t target = request.to_slot_id();
    if (target == master) {
      return absl::InvalidArgumentError(absl::StrCat(
          "slot ", target, " is already the master of store ", store_id,
          ": fail over to one of its replicas (", absl::StrJoin(replicas, ", "), ")"));
    }
    if (target != 0 && !host_of.contains(target)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "slot ", target, " is not a member of store ", store_id,
          ": fail over to one of its replicas (", absl::StrJoin(replicas, ", "), ")"));
    }
    if (target == 0) {
      // The most caught-up replica by the master's last report; ties (and
      // replicas it does not mention, at 0) go to the lowest slot id.
      ASSIGN_OR_RETURN(std::optional<SlotReport> report, LastReport(master));
      std::map<uint64_t, uint64_t> acked;
      if (report) {
        for (const coordpb::ReplicaProgress& p : report->status.replicas()) {
          acked[p.slot_id()] = p.acked_lsn();
        }
      }
      uint64_t best_acked = 0;
      for (const auto& [id, host] : host_of) {  // ascending slot id
        if (id == master) continue;
        const uint64_t a = acked.contains(id) ? acked[id] : 0;
        if (target == 0 || a > best_acked) {
          target = id;
          best_acked = a;
        }
      }
    }
    const std::string& to_host = host_of[target];
    ASSIGN_OR_RETURN(int64_t last_beat, LastHeartbeatMs(to_host));
    const int64_t now = Now();
    if (last_beat <= 0 || now - last_beat > static_cast<int64_t>(lease_ms_)) {
      return absl::UnavailableError(absl::StrCat(
          "cannot fail store ", store_id, " over to slot ", target, ": its host ", to_host,
          " is not alive (",
          last_beat <= 0 ? std::string("never heard from")
                         : absl::StrCat("last heartbeat ", now - last_beat, " ms ago"),
          ", lease ", lease_ms_, " ms); start it, or pick another replica"));
    }
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE stores SET fenced = 1 WHERE store_id = ?"));
    st.Bind(1, static_cast<int64_t>(store_id));
    RETURN_IF_ERROR(st.Run());
    plan.store_id = store_id;
    plan.epoch = store.epoch();
    plan.from_slot_id = master;
    plan.from_host = host_of[master];
    plan.to_slot_id = target;
    plan.to_host = to_host;
    plan.reason = ReasonOrDefault(request.reason());
    plan.began_ms = now;
    plan.began_sequence = report_sequence_;
    RETURN_IF_ERROR(AppendEvent(
        txn, store_id, "failover_begin",
        absl::StrCat("from ", SlotAt(master, plan.from_host), " to ", SlotAt(target, to_host),
                     " at epoch ", store.epoch(), ", reason: ", plan.reason,
                     "; store fenced")));
    return BumpTopology(txn);
  }));
  return plan;
}

absl::StatusOr<coordpb::StoreInfo> Coordinator::SwitchMaster(const FailoverPlan& plan,
                                                             uint64_t lsn) {
  coordpb::StoreInfo after;
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    bool exists = false;
    ASSIGN_OR_RETURN(coordpb::StoreInfo store, LoadStore(plan.store_id, &exists));
    if (!exists || !store.fenced() || store.master_slot_id() != plan.from_slot_id ||
        store.epoch() != plan.epoch) {
      return absl::FailedPreconditionError(absl::StrCat(
          "store ", plan.store_id, " changed during its failover from ",
          SlotAt(plan.from_slot_id, plan.from_host), ": not switched"));
    }
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE stores SET master_slot_id = ?, "
                                                "epoch = epoch + 1, fenced = 0 "
                                                "WHERE store_id = ?"));
    st.Bind(1, static_cast<int64_t>(plan.to_slot_id));
    st.Bind(2, static_cast<int64_t>(plan.store_id));
    RETURN_IF_ERROR(st.Run());
    RETURN_IF_ERROR(GrantLease(txn, plan.store_id, plan.to_slot_id));
    RETURN_IF_ERROR(AppendEvent(
        txn, plan.store_id, "failover",
        absl::StrCat(SlotAt(plan.from_slot_id, plan.from_host), " -> ",
                     SlotAt(plan.to_slot_id, plan.to_host), " at LSN ", lsn, ", epoch ",
                     plan.epoch, " -> ", plan.epoch + 1, ", ", plan.reason)));
    RETURN_IF_ERROR(BumpTopology(txn));
    ASSIGN_OR_RETURN(after, LoadStore(plan.store_id, &exists));
    return absl::OkStatus();
  }));
  return after;
}

absl::Status Coordinator::AbortFailover(const FailoverPlan& plan, absl::string_view why) {
  return InTransaction(true, [&](Txn& txn) -> absl::Status {
    RETURN_IF_ERROR(Unfence(txn, plan.store_id));
    RETURN_IF_ERROR(AppendEvent(
        txn, plan.store_id, "failover_aborted",
        absl::StrCat(why, " (failover from ", SlotAt(plan.from_slot_id, plan.from_host), " to ",
                     SlotAt(plan.to_slot_id, plan.to_host), ", reason: ", plan.reason,
                     "); store unfenced, master and epoch ", plan.epoch, " unchanged")));
    return BumpTopology(txn);
  });
}

// --- forced promotion ---

absl::StatusOr<PromotionPlan> Coordinator::BeginPromotion(const coordpb::Promote& request) {
  PromotionPlan plan;
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    const uint64_t store_id = request.store_id();
    ASSIGN_OR_RETURN(coordpb::StoreInfo store, LoadIdleStore(store_id));
    const uint64_t master = store.master_slot_id();
    std::string master_host;
    std::vector<std::string> live_replicas, dead_replicas;
    for (const coordpb::SlotInfo& m : store.members()) {
      if (m.slot_id() == master) {
        master_host = m.host();
        continue;
      }
      ASSIGN_OR_RETURN(bool alive, HostAlive(m.host()));
      (alive ? live_replicas : dead_replicas).push_back(SlotAt(m.slot_id(), m.host()));
      plan.replica_hosts.push_back(m.host());
    }
    ASSIGN_OR_RETURN(std::optional<int64_t> alive_until, HostAliveUntil(master_host));
    if (alive_until) {
      const absl::Duration left = absl::Milliseconds(*alive_until - Now());
      return absl::FailedPreconditionError(absl::StrCat(
          "the master's host ", master_host, " is alive: its last heartbeat came ",
          absl::FormatDuration(absl::Milliseconds(lease_ms_ + 1) - left),
          " ago and counts until the lease period (", absl::FormatDuration(absl::Milliseconds(lease_ms_)),
          ") runs out; promote will be possible in ", absl::FormatDuration(left), ", at ",
          absl::FormatTime("%H:%M:%S UTC", absl::Now() + left, absl::UTCTimeZone()),
          ", if it stays silent (add --wait to wait for that). If ", master_host,
          " is up, use `replctl failover` (store ", store_id, ", master ",
          SlotAt(master, master_host), ")"));
    }
    if (live_replicas.empty()) {
      return absl::UnavailableError(absl::StrCat(
          "cannot promote a replica of store ", store_id, ": no replica's host is alive (",
          ShortList(dead_replicas), "); start one"));
    }
    ASSIGN_OR_RETURN(std::optional<SlotReport> report, LastReport(master));
    ASSIGN_OR_RETURN(Statement lease,
                     db_->Prepare("SELECT expires_ms FROM leases WHERE store_id = ?"));
    lease.Bind(1, static_cast<int64_t>(store_id));
    ASSIGN_OR_RETURN(bool have_lease, lease.Step());
    plan.lease_expires_ms = have_lease ? lease.ColumnInt(0) : 0;
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE stores SET fenced = 1, epoch = ? "
                                                "WHERE store_id = ?"));
    st.Bind(1, static_cast<int64_t>(store.epoch() + 1));
    st.Bind(2, static_cast<int64_t>(store_id));
    RETURN_IF_ERROR(st.Run());
    plan.store_id = store_id;
    plan.epoch = store.epoch() + 1;
    plan.from_slot_id = master;
    plan.from_host = master_host;
    plan.reason = ReasonOrDefault(request.reason());
    plan.began_ms = Now();
    if (report) {
      plan.from_reported = true;
      plan.from_last_lsn = report->status.last_lsn();
      plan.from_report_age_ms = std::max<int64_t>(0, plan.began_ms - report->arrived_ms);
    }
    plan.began_sequence = report_sequence_;
    RETURN_IF_ERROR(AppendEvent(
        txn, store_id, "promote_begin",
        absl::StrCat("old master ", SlotAt(master, master_host), " (host gone; last reported LSN ",
                     plan.from_last_lsn, "), epoch ", store.epoch(), " -> ", plan.epoch,
                     ", reason: ", plan.reason,
                     "; store fenced, waiting for the old master's lease to run out")));
    RETURN_IF_ERROR(BumpTopology(txn));
    plan.topology_version = txn.versions.topology;
    return absl::OkStatus();
  }));
  return plan;
}

absl::StatusOr<Promotion> Coordinator::PromoteMaster(const PromotionPlan& plan) {
  Promotion out;
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    bool exists = false;
    ASSIGN_OR_RETURN(coordpb::StoreInfo store, LoadStore(plan.store_id, &exists));
    if (!exists || !store.fenced() || store.master_slot_id() != plan.from_slot_id ||
        store.epoch() != plan.epoch) {
      return absl::FailedPreconditionError(absl::StrCat(
          "store ", plan.store_id, " changed during its promotion from ",
          SlotAt(plan.from_slot_id, plan.from_host), ": not switched"));
    }
    // The live replica with the highest last_lsn in its own latest report;
    // members() is in creation order, so compare slot ids for ties.
    bool found = false;
    std::vector<std::string> skipped;
    for (const coordpb::SlotInfo& m : store.members()) {
      if (m.slot_id() == plan.from_slot_id) continue;
      ASSIGN_OR_RETURN(bool alive, HostAlive(m.host()));
      ASSIGN_OR_RETURN(std::optional<SlotReport> report, LastReport(m.slot_id()));
      const std::string slot = SlotAt(m.slot_id(), m.host());
      if (!alive) {
        skipped.push_back(absl::StrCat(slot, ": host not alive"));
        continue;
      }
      if (!report) {
        skipped.push_back(absl::StrCat(slot, ": never reported"));
        continue;
      }
      if (!report->status.error().empty()) {
        skipped.push_back(absl::StrCat(slot, ": ", report->status.error()));
        continue;
      }
      const uint64_t lsn = report->status.last_lsn();
      if (!found || lsn > out.to_last_lsn ||
          (lsn == out.to_last_lsn && m.slot_id() < out.to_slot_id)) {
        found = true;
        out.to_slot_id = m.slot_id();
        out.to_host = m.host();
        out.to_last_lsn = lsn;
      }
    }
    if (!found) {
      return absl::UnavailableError(absl::StrCat("no replica of store ", plan.store_id,
                                                 " can become the master (",
                                                 ShortList(skipped), ")"));
    }
    // The old master may have written past its last report (it can keep
    // writing while a replica answers it, long after the coordinator lost
    // it): only a report newer than the target's bounds the loss from below.
    out.lost_from_lsn = out.to_last_lsn + 1;
    out.lost_to_lsn =
        plan.from_reported && plan.from_last_lsn >= out.lost_from_lsn ? plan.from_last_lsn : 0;
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE stores SET master_slot_id = ?, "
                                                "fenced = 0 WHERE store_id = ?"));
    st.Bind(1, static_cast<int64_t>(out.to_slot_id));
    st.Bind(2, static_cast<int64_t>(plan.store_id));
    RETURN_IF_ERROR(st.Run());
    RETURN_IF_ERROR(GrantLease(txn, plan.store_id, out.to_slot_id));
    const std::string last_report =
        plan.from_reported
            ? absl::StrCat("its last report (LSN ", plan.from_last_lsn, ", ",
                           absl::StrFormat("%.1f s", plan.from_report_age_ms / 1000.0),
                           " before the promotion began)")
            : std::string("it never reported");
    const std::string lost = absl::StrCat(
        "may be lost: ",
        out.lost_to_lsn != 0
            ? absl::StrCat("LSNs ", out.lost_from_lsn, "..", out.lost_to_lsn,
                           " and any later ones that the old master wrote; ", last_report,
                           " is newer than the new master's")
            : absl::StrCat("LSNs past ", out.to_last_lsn, " that the old master wrote; ",
                           last_report,
                           plan.from_reported ? " is not newer than the new master's" : "",
                           ", so how many is unknown"),
        "; they are salvaged when it returns");
    RETURN_IF_ERROR(AppendEvent(
        txn, plan.store_id, "promote",
        absl::StrCat(SlotAt(plan.from_slot_id, plan.from_host), " -> ",
                     SlotAt(out.to_slot_id, out.to_host), ", epoch ", plan.epoch, "; ", lost,
                     "; reason: ", plan.reason)));
    RETURN_IF_ERROR(BumpTopology(txn));
    ASSIGN_OR_RETURN(out.store, LoadStore(plan.store_id, &exists));
    return absl::OkStatus();
  }));
  return out;
}

absl::Status Coordinator::AbortPromotion(const PromotionPlan& plan, absl::string_view why) {
  return InTransaction(true, [&](Txn& txn) -> absl::Status {
    RETURN_IF_ERROR(Unfence(txn, plan.store_id));
    RETURN_IF_ERROR(AppendEvent(
        txn, plan.store_id, "promote_aborted",
        absl::StrCat(why, " (promotion away from ", SlotAt(plan.from_slot_id, plan.from_host),
                     ", reason: ", plan.reason, "); store unfenced, master ",
                     SlotAt(plan.from_slot_id, plan.from_host), " kept at epoch ", plan.epoch,
                     " (it begins that epoch when it returns)")));
    return BumpTopology(txn);
  });
}

absl::Status Coordinator::AbortInterruptedFailovers() {
  std::vector<uint64_t> fenced;
  {
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT store_id FROM stores WHERE fenced = 1 "
                                                "ORDER BY store_id"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      fenced.push_back(static_cast<uint64_t>(st.ColumnInt(0)));
    }
  }
  if (fenced.empty()) return absl::OkStatus();
  return InTransaction(true, [&](Txn& txn) -> absl::Status {
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE stores SET fenced = 0 WHERE "
                                                "store_id = ?"));
    for (uint64_t id : fenced) {
      st.Bind(1, static_cast<int64_t>(id));
      RETURN_IF_ERROR(st.Run());
      RETURN_IF_ERROR(AppendEvent(
          txn, id, "failover_aborted",
          "coordinatord stopped during the failover or promotion; store unfenced at start, "
          "master and epoch unchanged"));
    }
    return BumpTopology(txn);
  });
}

// --- RecordCheck ---

absl::Status Coordinator::StoreExists(uint64_t store_id) {
  ASSIGN_OR_RETURN(Statement exists, db_->Prepare("SELECT 1 FROM stores WHERE store_id = ?"));
  exists.Bind(1, static_cast<int64_t>(store_id));
  ASSIGN_OR_RETURN(bool found, exists.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("store ", store_id, " does not exist"));
  return absl::OkStatus();
}

namespace {

// RecordCheck's check of its arguments.
absl::Status CheckRecordCheck(const coordpb::RecordCheck& request) {
  const std::string& result = request.result();
  if (std::find(std::begin(kCheckResults), std::end(kCheckResults), result) ==
      std::end(kCheckResults)) {
    std::vector<std::string> known(std::begin(kCheckResults), std::end(kCheckResults));
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown check result '", absl::CEscape(result), "' for store ", request.store_id(),
        ": use one of ", absl::StrJoin(known, ", ")));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<coordpb::RecordCheckReply> Coordinator::RecordCheck(
    const coordpb::RecordCheck& request) {
  RETURN_IF_ERROR(CheckRecordCheck(request));
  const std::string& result = request.result();
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    RETURN_IF_ERROR(StoreExists(request.store_id()));
    // The last check only: a new one replaces the row.
    ASSIGN_OR_RETURN(Statement st,
                     db_->Prepare("INSERT OR REPLACE INTO checks (store_id, time_ms, result, "
                                  "summary, deep) VALUES (?, ?, ?, ?, ?)"));
    st.Bind(1, static_cast<int64_t>(request.store_id()));
    st.Bind(2, WallNow());  // shown as a date
    st.Bind(3, result);
    st.Bind(4, request.summary());
    st.Bind(5, static_cast<int64_t>(request.deep() ? 1 : 0));
    RETURN_IF_ERROR(st.Run());
    // No BumpTopology/BumpDirectory: hosts have nothing to learn from it.
    return AppendEvent(txn, request.store_id(), "check",
                       absl::StrCat(result, request.deep() ? " (deep)" : "",
                                    request.summary().empty() ? "" : ": ", request.summary()));
  }));
  return coordpb::RecordCheckReply();
}

// --- RecordSalvage ---

namespace {

// RecordSalvage's check of its arguments.
absl::Status CheckRecordSalvage(const coordpb::RecordSalvage& request) {
  if (request.slot_id() == 0 || request.from_lsn() == 0 || request.to_lsn() < request.from_lsn()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "salvage of store ", request.store_id(), " names slot ", request.slot_id(), " and LSNs ",
        request.from_lsn(), "-", request.to_lsn(), ": a slot and a non-empty LSN range are needed"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<coordpb::RecordSalvageReply> Coordinator::RecordSalvage(
    const coordpb::RecordSalvage& request) {
  RETURN_IF_ERROR(CheckRecordSalvage(request));
  // The detail starts with what identifies the salvage: a report repeated
  // after a crash finds it and adds nothing.
  const std::string key =
      absl::StrCat("slot ", request.slot_id(), " LSN ", request.from_lsn(), "-", request.to_lsn());
  const std::string detail = absl::StrCat(
      key, " (fork point ", request.fork_lsn(), "): ", request.messages(),
      " messages set aside, ", request.appended(), " appended to master slot ",
      request.master_slot_id(), " with new UIDs, ", request.already_there(), " already there");
  coordpb::RecordSalvageReply reply;
  RETURN_IF_ERROR(InTransaction(true, [&](Txn& txn) -> absl::Status {
    RETURN_IF_ERROR(StoreExists(request.store_id()));
    ASSIGN_OR_RETURN(Statement dup,
                     db_->Prepare("SELECT 1 FROM events WHERE store_id = ? AND kind = 'salvage' "
                                  "AND substr(detail, 1, ?) = ?"));
    dup.Bind(1, static_cast<int64_t>(request.store_id()));
    dup.Bind(2, static_cast<int64_t>(key.size() + 1));
    dup.Bind(3, key + " ");
    ASSIGN_OR_RETURN(bool already, dup.Step());
    if (already) return absl::OkStatus();
    reply.set_recorded(true);
    // No version moves: hosts have nothing to learn from it.
    return AppendEvent(txn, request.store_id(), "salvage", detail);
  }));
  return reply;
}

// --- GetStatus ---

absl::StatusOr<coordpb::GetStatusReply> Coordinator::GetStatus(const coordpb::GetStatus&) {
  coordpb::GetStatusReply reply;
  const int64_t now = Now();
  const int64_t wall = WallNow();
  // Times are decided on now_ms() but shown as Unix ms: convert at the
  // moment of answering (0, "never", stays 0).
  auto as_wall = [&](int64_t mono) -> int64_t { return mono == 0 ? 0 : wall + (mono - now); };
  reply.set_answered_ms(wall);
  RETURN_IF_ERROR(InTransaction(false, [&](Txn& txn) -> absl::Status {
    reply.set_cluster_id(cluster_id_);
    reply.set_version(txn.versions.topology);
    reply.set_directory_version(txn.versions.directory);
    reply.set_lease_ms(lease_ms_);
    std::map<std::string, bool> alive;
    ASSIGN_OR_RETURN(Statement hosts, db_->Prepare("SELECT name, metrics_address, "
                                                   "last_heartbeat_ms FROM hosts ORDER BY name"));
    ASSIGN_OR_RETURN(Statement host_slots,
                     db_->Prepare("SELECT slot_id FROM slots WHERE host = ? ORDER BY slot_id"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, hosts.Step());
      if (!row) break;
      coordpb::HostStatus* h = reply.add_hosts();
      h->set_host(hosts.ColumnText(0));
      h->set_metrics_address(hosts.ColumnText(1));
      const int64_t last_beat = hosts.ColumnInt(2);
      h->set_last_heartbeat_ms(as_wall(last_beat));
      h->set_alive(last_beat > 0 && now - last_beat <= static_cast<int64_t>(lease_ms_));
      alive[h->host()] = h->alive();
      if (auto known = known_by_host_.find(h->host()); known != known_by_host_.end()) {
        h->set_known_version(known->second.topology);
        h->set_known_directory_version(known->second.directory);
      }
      host_slots.Bind(1, h->host());
      while (true) {
        ASSIGN_OR_RETURN(bool s, host_slots.Step());
        if (!s) break;
        h->add_slot_ids(static_cast<uint64_t>(host_slots.ColumnInt(0)));
      }
      host_slots.Reset();
    }

    ASSIGN_OR_RETURN(Statement stores, db_->Prepare("SELECT store_id FROM stores ORDER BY "
                                                    "store_id"));
    ASSIGN_OR_RETURN(Statement status, db_->Prepare("SELECT status FROM slots WHERE slot_id = ?"));
    ASSIGN_OR_RETURN(Statement lease, db_->Prepare("SELECT expires_ms FROM leases WHERE "
                                                   "store_id = ?"));
    ASSIGN_OR_RETURN(Statement users, db_->Prepare("SELECT count(*) FROM users WHERE "
                                                   "store_id = ?"));
    ASSIGN_OR_RETURN(Statement check, db_->Prepare("SELECT time_ms, result, summary, deep "
                                                   "FROM checks WHERE store_id = ?"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, stores.Step());
      if (!row) break;
      const uint64_t store_id = static_cast<uint64_t>(stores.ColumnInt(0));
      coordpb::StoreStatus* ss = reply.add_stores();
      bool found = false;
      ASSIGN_OR_RETURN(*ss->mutable_store(), LoadStore(store_id, &found));
      const coordpb::StoreInfo& store = ss->store();

      const coordpb::SlotStatus* master_status = nullptr;
      std::string master_host;
      for (const coordpb::SlotInfo& m : store.members()) {
        if (m.slot_id() == store.master_slot_id()) master_host = m.host();
        status.Bind(1, static_cast<int64_t>(m.slot_id()));
        ASSIGN_OR_RETURN(bool have, status.Step());
        std::string blob = have ? status.ColumnBlob(0) : "";
        status.Reset();
        if (blob.empty()) continue;
        coordpb::SlotStatus* s = ss->add_slots();
        if (!s->ParseFromString(blob)) {
          return absl::DataLossError(absl::StrCat("coordinator database ", db_->path(),
                                                  ": the status of slot ", m.slot_id(),
                                                  " is unparsable"));
        }
      }
      for (const coordpb::SlotStatus& s : ss->slots()) {
        if (s.slot_id() == store.master_slot_id()) master_status = &s;
      }

      // Worst replica, from the master's last report.
      bool replica_missing = false;
      uint64_t lag_records = 0;
      double lag_seconds = 0;
      for (const coordpb::SlotInfo& m : store.members()) {
        if (m.slot_id() == store.master_slot_id()) continue;
        if (!alive[m.host()]) replica_missing = true;
        const coordpb::ReplicaProgress* p = nullptr;
        if (master_status != nullptr) {
          for (const coordpb::ReplicaProgress& r : master_status->replicas()) {
            if (r.slot_id() == m.slot_id()) p = &r;
          }
        }
        if (p == nullptr || !p->connected()) replica_missing = true;
        if (p == nullptr) continue;
        const uint64_t behind =
            master_status->last_lsn() > p->acked_lsn() ? master_status->last_lsn() - p->acked_lsn()
                                                       : 0;
        lag_records = std::max(lag_records, behind);
        lag_seconds = std::max(lag_seconds, p->lag_seconds());
      }
      ss->set_lag_records(lag_records);
      ss->set_lag_seconds(lag_seconds);

      const bool master_down =
          !alive[master_host] || (master_status != nullptr && !master_status->error().empty());
      // A store fenced by the coordinator is in a planned failover; "fenced"
      // is a master that fenced itself (its lease ran out).
      const bool fenced = master_status != nullptr && master_status->fenced();
      if (store.fenced()) {
        ss->set_state("switching");
      } else if (master_down) {
        ss->set_state("down");
      } else if (fenced) {
        ss->set_state("fenced");
      } else if (replica_missing || lag_records > kLaggingRecords ||
                 lag_seconds > kLaggingSeconds) {
        ss->set_state("lagging");
      } else {
        ss->set_state("ok");
      }

      lease.Bind(1, static_cast<int64_t>(store_id));
      ASSIGN_OR_RETURN(bool have_lease, lease.Step());
      ss->set_lease_expires_ms(as_wall(have_lease ? lease.ColumnInt(0) : 0));
      lease.Reset();
      users.Bind(1, static_cast<int64_t>(store_id));
      ASSIGN_OR_RETURN(bool counted, users.Step());
      ss->set_users(counted ? static_cast<uint64_t>(users.ColumnInt(0)) : 0);
      users.Reset();
      check.Bind(1, static_cast<int64_t>(store_id));
      ASSIGN_OR_RETURN(bool checked, check.Step());
      if (checked) {
        coordpb::LastCheck* last = ss->mutable_last_check();
        last->set_time_ms(check.ColumnInt(0));
        last->set_result(check.ColumnText(1));
        last->set_summary(check.ColumnText(2));
        last->set_deep(check.ColumnInt(3) != 0);
      }
      check.Reset();
    }
    return absl::OkStatus();
  }));
  return reply;
}

// --- GetHistory ---

absl::StatusOr<coordpb::GetHistoryReply> Coordinator::GetHistory(
    const coordpb::GetHistory& request) {
  const uint32_t limit =
      request.limit() == 0 ? kDefaultHistoryLimit : std::min(request.limit(), kMaxHistoryLimit);
  coordpb::GetHistoryReply reply;
  RETURN_IF_ERROR(InTransaction(false, [&](Txn&) -> absl::Status {
    ASSIGN_OR_RETURN(Statement st,
                     db_->Prepare("SELECT id, time_ms, store_id, kind, detail FROM events "
                                  "WHERE ?1 = 0 OR store_id = ?1 ORDER BY id DESC LIMIT ?2"));
    st.Bind(1, static_cast<int64_t>(request.store_id()));
    st.Bind(2, static_cast<int64_t>(limit));
    std::vector<coordpb::Event> events;
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      coordpb::Event e;
      e.set_id(st.ColumnInt(0));
      e.set_time_ms(st.ColumnInt(1));
      e.set_store_id(static_cast<uint64_t>(st.ColumnInt(2)));
      e.set_kind(st.ColumnText(3));
      e.set_detail(st.ColumnText(4));
      events.push_back(std::move(e));
    }
    for (auto it = events.rbegin(); it != events.rend(); ++it) *reply.add_events() = *it;
    return absl::OkStatus();
  }));
  return reply;
}

// --- the checks that need no database ---

absl::Status CheckRequestArguments(const coordpb::Request& request) {
  switch (request.op_case()) {
    case coordpb::Request::kRegisterHost:
      return CheckRegisterHost(request.register_host()).status();
    case coordpb::Request::kLookupUser:
      return CheckUserToLookUp(request.lookup_user().user()).status();
    case coordpb::Request::kCreateStore:
      return CheckCreateStore(request.create_store()).status();
    case coordpb::Request::kAssignUsers:
      return CheckAssignUsers(request.assign_users()).status();
    case coordpb::Request::kSetDurability:
      return CheckSetDurability(request.set_durability());
    case coordpb::Request::kRecordCheck:
      return CheckRecordCheck(request.record_check());
    case coordpb::Request::kRecordSalvage:
      return CheckRecordSalvage(request.record_salvage());
    default:
      return absl::OkStatus();  // checked in their transactions, or no operation
  }
}

}  // namespace mailrepl::coord
