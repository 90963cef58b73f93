// File: coordinator/schema.h
//
// The coordinator's SQLite database: opening it (WAL, foreign keys, busy
// timeout, fsync on every commit), its schema and the ordered list of
// migrations that build it. The schema version lives in
// `PRAGMA user_version`: 0 is an empty file, N means migrations 1..N ran.
// A database with a version newer than this binary knows is refused, never
// touched. docs/operations.md "coordinatord" describes the tables.
//
// Thread-compatible: the returned Database is used by one thread at a time.
//
// Example:
//   ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Database> db,
//                    OpenCoordinatorDb(path, {.cluster_id = "prod", .lease_ms = 6000}));
#ifndef MAILREPL_COORDINATOR_SCHEMA_H_
#define MAILREPL_COORDINATOR_SCHEMA_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/sqlite.h"

namespace mailrepl::coord {

// One schema step. `apply` runs inside the migration's transaction, which
// also sets user_version to `version`.
struct Migration {
  int version;
  const char* description;
  std::function<absl::Status(sqlite::Database& db)> apply;
};

// The migrations in order: Migrations()[i].version == i + 1.
const std::vector<Migration>& Migrations();

// The version a fully migrated database has (Migrations().size()).
int CurrentSchemaVersion();

// What goes into the single `cluster` row when a new database is created.
struct NewClusterOptions {
  std::string cluster_id;  // "" : a random id ("cluster-" + 16 hex digits)
  uint32_t lease_ms = 6000;
};

// Opens (creating if missing) the coordinator database at path and brings
// its schema up to date, each migration in its own transaction. A new
// database also gets its `cluster` row from `init`.
// Errors (each names the file):
//   kFailedPrecondition: the schema version is newer than this binary
//     knows, or the file is an SQLite database of something else;
//   kDataLoss: not an SQLite database, or damaged;
//   others: the file cannot be opened or a migration failed (the database
//     is then left at the last version that committed).
absl::StatusOr<std::unique_ptr<sqlite::Database>> OpenCoordinatorDb(
    const std::string& path, const NewClusterOptions& init);

// The database's `PRAGMA user_version`.
absl::StatusOr<int> SchemaVersion(sqlite::Database& db);

}  // namespace mailrepl::coord

#endif  // MAILREPL_COORDINATOR_SCHEMA_H_
