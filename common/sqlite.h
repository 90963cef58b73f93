// A thin RAII layer over the SQLite C API returning absl::Status with the
// database path in every message. Thread-compatible: a Database and its
// Statements must be used by one thread at a time.
//
// Example:
//   ASSIGN_OR_RETURN(auto db, sqlite::Database::Open(path));
//   ASSIGN_OR_RETURN(auto st, db->Prepare("SELECT name FROM t WHERE id = ?"));
//   st.Bind(1, int64_t{7});
//   while (true) { ASSIGN_OR_RETURN(bool row, st.Step()); if (!row) break; ... }
#ifndef MAILREPL_COMMON_SQLITE_H_
#define MAILREPL_COMMON_SQLITE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct sqlite3;
struct sqlite3_stmt;

namespace mailrepl::sqlite {

class Statement {
 public:
  Statement(Statement&& o) noexcept;
  Statement& operator=(Statement&& o) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Parameters are 1-based.
  void Bind(int i, int64_t v);
  void Bind(int i, absl::string_view text);
  void BindBlob(int i, absl::string_view bytes);
  void BindNull(int i);
  // true: a row is available; false: done.
  absl::StatusOr<bool> Step();
  // Runs to completion and resets, for statements without results.
  absl::Status Run();
  void Reset();

  int64_t ColumnInt(int i) const;
  std::string ColumnText(int i) const;
  std::string ColumnBlob(int i) const;
  bool ColumnIsNull(int i) const;

 private:
  friend class Database;
  Statement(sqlite3_stmt* st, const std::string* path) : st_(st), path_(path) {}
  sqlite3_stmt* st_ = nullptr;
  const std::string* path_ = nullptr;
};

class Database {
 public:
  // Opens (creating if needed) with WAL journal mode and foreign keys on.
  // synchronous_full: fsync on every commit (coordinator); otherwise NORMAL
  // (indexes rebuilt from a log after a power loss).
  static absl::StatusOr<std::unique_ptr<Database>> Open(const std::string& path,
                                                        bool synchronous_full);
  // Opens an existing database read-only (another process may write it).
  static absl::StatusOr<std::unique_ptr<Database>> OpenReadOnly(const std::string& path);
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  ~Database();

  absl::Status Exec(absl::string_view sql);
  absl::StatusOr<Statement> Prepare(absl::string_view sql);
  // A prepared statement kept for reuse (hot paths), reset and unbound.
  // It stays valid until the Database is destroyed; do not nest two uses of
  // the same SQL text.
  absl::StatusOr<Statement*> Cached(const std::string& sql);
  int64_t Changes() const;
  const std::string& path() const { return path_; }

 private:
  Database() = default;
  sqlite3* db_ = nullptr;
  std::string path_;
  std::map<std::string, std::unique_ptr<Statement>> cache_;
};

}  // namespace mailrepl::sqlite

#endif  // MAILREPL_COMMON_SQLITE_H_
