#include "coordinator/schema.h"

#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace mailrepl::coord {
namespace {

// Migration 1: every table of the first release. Later migrations append to
// Migrations() below; never edit a migration that has shipped.
// Note: hosts.last_heartbeat_ms, slots.status_ms and leases.expires_ms now
// hold the coordinator's monotonic clock (Coordinator::now_ms, CLOCK_BOOTTIME),
// not Unix ms as their comments below say; Coordinator::Open caps them
// (ClampPersistedTimes). events.time_ms and checks.time_ms stay Unix ms.
constexpr char kSchemaV1[] = R"sql(
CREATE TABLE cluster (
  id                INTEGER PRIMARY KEY CHECK (id = 1),
  cluster_id        TEXT    NOT NULL,
  lease_ms          INTEGER NOT NULL CHECK (lease_ms > 0),
  topology_version  INTEGER NOT NULL,
  directory_version INTEGER NOT NULL
);
CREATE TABLE hosts (
  name              TEXT    PRIMARY KEY,
  metrics_address   TEXT    NOT NULL DEFAULT '',
  last_heartbeat_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE slots (
  slot_id      INTEGER PRIMARY KEY CHECK (slot_id > 0),
  host         TEXT    NOT NULL REFERENCES hosts(name),
  lmtp_address TEXT    NOT NULL DEFAULT '',
  api_address  TEXT    NOT NULL DEFAULT '',
  sync_address TEXT    NOT NULL DEFAULT '',
  data_path    TEXT    NOT NULL DEFAULT '',
  meta_path    TEXT    NOT NULL DEFAULT '',
  spool_path   TEXT    NOT NULL DEFAULT '',
  status       BLOB,                         -- coordpb.SlotStatus, as last reported
  status_ms    INTEGER NOT NULL DEFAULT 0    -- when it was reported (Unix ms)
);
CREATE INDEX slots_host ON slots(host);
CREATE TABLE stores (
  store_id       INTEGER PRIMARY KEY CHECK (store_id > 0),
  master_slot_id INTEGER NOT NULL,
  epoch          INTEGER NOT NULL CHECK (epoch > 0),
  durability     INTEGER NOT NULL,
  fenced         INTEGER NOT NULL DEFAULT 0,
  FOREIGN KEY (store_id, master_slot_id) REFERENCES store_members(store_id, slot_id)
    DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE store_members (
  store_id INTEGER NOT NULL REFERENCES stores(store_id) DEFERRABLE INITIALLY DEFERRED,
  slot_id  INTEGER NOT NULL UNIQUE REFERENCES slots(slot_id),
  position INTEGER NOT NULL,                 -- order given at creation
  PRIMARY KEY (store_id, slot_id)
);
CREATE TABLE users (
  user     TEXT    PRIMARY KEY,
  store_id INTEGER NOT NULL REFERENCES stores(store_id)
);
CREATE INDEX users_store ON users(store_id);
CREATE TABLE leases (
  store_id   INTEGER PRIMARY KEY REFERENCES stores(store_id),
  slot_id    INTEGER NOT NULL,               -- the master the lease was granted to
  expires_ms INTEGER NOT NULL                -- Unix ms; 0: never granted
);
CREATE TABLE events (
  id       INTEGER PRIMARY KEY AUTOINCREMENT,
  time_ms  INTEGER NOT NULL,
  store_id INTEGER NOT NULL DEFAULT 0,       -- 0: not about one store
  kind     TEXT    NOT NULL,
  detail   TEXT    NOT NULL
);
CREATE INDEX events_store ON events(store_id, id);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
  BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
  BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
)sql";

// Migration 2: the last consistency check of each store (RecordCheck,
// `replctl check`). The result words are validated by the Coordinator, not
// here, so a later release can add one without rebuilding the table.
constexpr char kSchemaV2[] = R"sql(
CREATE TABLE checks (
  store_id INTEGER PRIMARY KEY REFERENCES stores(store_id) ON DELETE CASCADE,
  time_ms  INTEGER NOT NULL,                 -- Unix ms, the coordinator's clock
  result   TEXT    NOT NULL,                 -- consistent, differs, repaired, unchecked
  summary  TEXT    NOT NULL DEFAULT '',
  deep     INTEGER NOT NULL DEFAULT 0 CHECK (deep IN (0, 1))
);
)sql";

std::string RandomClusterId() {
  std::random_device rd;
  uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return absl::StrFormat("cluster-%016x", v);
}

absl::Status RunMigration(sqlite::Database& db, const Migration& m) {
  RETURN_IF_ERROR(db.Exec("BEGIN IMMEDIATE"));
  absl::Status s = m.apply(db);
  if (s.ok()) s = db.Exec(absl::StrCat("PRAGMA user_version = ", m.version));
  if (s.ok()) s = db.Exec("COMMIT");
  if (!s.ok()) {
    db.Exec("ROLLBACK").IgnoreError();
    return absl::Status(s.code(), absl::StrCat("coordinator database ", db.path(),
                                               ": migration ", m.version, " (",
                                               m.description, ") failed: ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status EnsureClusterRow(sqlite::Database& db, const NewClusterOptions& init) {
  RETURN_IF_ERROR(db.Exec("BEGIN IMMEDIATE"));
  absl::Status s = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(sqlite::Statement count, db.Prepare("SELECT count(*) FROM cluster"));
    ASSIGN_OR_RETURN(bool row, count.Step());
    if (row && count.ColumnInt(0) > 0) return absl::OkStatus();
    ASSIGN_OR_RETURN(sqlite::Statement ins,
                     db.Prepare("INSERT INTO cluster (id, cluster_id, lease_ms, topology_version, "
                                "directory_version) VALUES (1, ?, ?, 1, 1)"));
    ins.Bind(1, init.cluster_id.empty() ? RandomClusterId() : init.cluster_id);
    ins.Bind(2, static_cast<int64_t>(init.lease_ms));
    return ins.Run();
  }();
  if (s.ok()) s = db.Exec("COMMIT");
  if (!s.ok()) db.Exec("ROLLBACK").IgnoreError();
  return s;
}

}  // namespace

const std::vector<Migration>& Migrations() {
  static const std::vector<Migration>* migrations = new std::vector<Migration>{
      {1, "create the cluster, hosts, slots, stores, store_members, users, leases and events "
          "tables",
       [](sqlite::Database& db) { return db.Exec(kSchemaV1); }},
      {2, "create the checks table (the last consistency check of each store)",
       [](sqlite::Database& db) { return db.Exec(kSchemaV2); }},
      {3, "add the stores' service addresses",
       [](sqlite::Database& db) {
         return db.Exec(
             "ALTER TABLE stores ADD COLUMN service_lmtp TEXT NOT NULL DEFAULT '';"
             "ALTER TABLE stores ADD COLUMN service_api TEXT NOT NULL DEFAULT '';");
       }},
      // {4, "...", [](sqlite::Database& db) { return db.Exec("ALTER TABLE ..."); }},
  };
  return *migrations;
}

int CurrentSchemaVersion() { return static_cast<int>(Migrations().size()); }

absl::StatusOr<int> SchemaVersion(sqlite::Database& db) {
  ASSIGN_OR_RETURN(sqlite::Statement st, db.Prepare("PRAGMA user_version"));
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::InternalError(absl::StrCat("no user_version in ", db.path()));
  return static_cast<int>(st.ColumnInt(0));
}

absl::StatusOr<std::unique_ptr<sqlite::Database>> OpenCoordinatorDb(
    const std::string& path, const NewClusterOptions& init) {
  absl::StatusOr<std::unique_ptr<sqlite::Database>> opened =
      sqlite::Database::Open(path, /*synchronous_full=*/true);
  if (!opened.ok()) {
    return absl::Status(opened.status().code(),
                        absl::StrCat("cannot open coordinator database ", path, ": ",
                                     opened.status().message()));
  }
  std::unique_ptr<sqlite::Database> db = std::move(opened).value();
  ASSIGN_OR_RETURN(int version, SchemaVersion(*db));
  const int known = CurrentSchemaVersion();
  if (version > known) {
    return absl::FailedPreconditionError(absl::StrCat(
        "coordinator database ", path, " has schema version ", version,
        ", newer than this coordinatord knows (", known,
        "): run the coordinatord that wrote it, or restore a backup of the file"));
  }
  if (version == 0) {
    ASSIGN_OR_RETURN(sqlite::Statement st,
                     db->Prepare("SELECT count(*) FROM sqlite_master"));
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (row && st.ColumnInt(0) > 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " is an SQLite database of something else (it has tables but "
                             "no coordinator schema version): give --db a new or coordinator "
                             "file"));
    }
  }
  for (const Migration& m : Migrations()) {
    if (m.version <= version) continue;
    RETURN_IF_ERROR(RunMigration(*db, m));
  }
  RETURN_IF_ERROR(EnsureClusterRow(*db, init));
  return db;
}

}  // namespace mailrepl::coord
