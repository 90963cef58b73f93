#include "common/sqlite.h"

#include <sqlite3.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace mailrepl::sqlite {
namespace {

absl::Status Error(sqlite3* db, int rc, absl::string_view what, const std::string& path) {
  std::string msg = absl::StrCat("sqlite ", what, " on ", path, ": ",
                                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  int primary = rc & 0xff;
  if (primary == SQLITE_FULL) return absl::ResourceExhaustedError(msg);
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) return absl::UnavailableError(msg);
  if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) return absl::DataLossError(msg);
  if (primary == SQLITE_CONSTRAINT) return absl::FailedPreconditionError(msg);
  return absl::InternalError(msg);
}

}  // namespace

Statement::Statement(Statement&& o) noexcept
    : st_(std::exchange(o.st_, nullptr)), path_(o.path_) {}
Statement& Statement::operator=(Statement&& o) noexcept {
  if (this != &o) {
    if (st_) sqlite3_finalize(st_);
    st_ = std::exchange(o.st_, nullptr);
    path_ = o.path_;
  }
  return *this;
}
Statement::~Statement() {
  if (st_) sqlite3_finalize(st_);
}

void Statement::Bind(int i, int64_t v) { sqlite3_bind_int64(st_, i, v); }
void Statement::Bind(int i, absl::string_view t) {
  sqlite3_bind_text(st_, i, t.data(), static_cast<int>(t.size()), SQLITE_TRANSIENT);
}
void Statement::BindBlob(int i, absl::string_view b) {
  sqlite3_bind_blob(st_, i, b.data(), static_cast<int>(b.size()), SQLITE_TRANSIENT);
}
void Statement::BindNull(int i) { sqlite3_bind_null(st_, i); }

absl::StatusOr<bool> Statement::Step() {
  int rc = sqlite3_step(st_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  absl::Status s = Error(sqlite3_db_handle(st_), rc, sqlite3_sql(st_), *path_);
  sqlite3_reset(st_);
  return s;
}

absl::Status Statement::Run() {
  absl::StatusOr<bool> r = Step();
  Reset();
  return r.status();
}

void Statement::Reset() {
  sqlite3_reset(st_);
  sqlite3_clear_bindings(st_);
}

int64_t Statement::ColumnInt(int i) const { return sqlite3_column_int64(st_, i); }
std::string Statement::ColumnText(int i) const {
  const unsigned char* p = sqlite3_column_text(st_, i);
  return p ? std::string(reinterpret_cast<const char*>(p),
                         static_cast<size_t>(sqlite3_column_bytes(st_, i)))
           : std::string();
}
std::string Statement::ColumnBlob(int i) const {
  const void* p = sqlite3_column_blob(st_, i);
  return p ? std::string(static_cast<const char*>(p),
                         static_cast<size_t>(sqlite3_column_bytes(st_, i)))
           : std::string();
}
bool Statement::ColumnIsNull(int i) const { return sqlite3_column_type(st_, i) == SQLITE_NULL; }

absl::StatusOr<std::unique_ptr<Database>> Database::Open(const std::string& path,
                                                         bool synchronous_full) {
  std::unique_ptr<Database> d(new Database());
  d->path_ = path;
  int rc = sqlite3_open_v2(path.c_str(), &d->db_,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) return Error(d->db_, rc, "open", path);
  sqlite3_busy_timeout(d->db_, 5000);
  RETURN_IF_ERROR(d->Exec("PRAGMA journal_mode=WAL"));
  RETURN_IF_ERROR(d->Exec("PRAGMA foreign_keys=ON"));
  RETURN_IF_ERROR(
      d->Exec(synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"));
  return d;
}

absl::StatusOr<std::unique_ptr<Database>> Database::OpenReadOnly(const std::string& path) {
  std::unique_ptr<Database> d(new Database());
  d->path_ = path;
  int rc = sqlite3_open_v2(path.c_str(), &d->db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) return Error(d->db_, rc, "open read-only", path);
  sqlite3_busy_timeout(d->db_, 5000);
  return d;
}

Database::~Database() {
  cache_.clear();  // finalize statements before closing
  if (db_) sqlite3_close_v2(db_);
}

absl::Status Database::Exec(absl::string_view sql) {
  std::string s(sql);
  char* err = nullptr;
  int rc = sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    absl::Status st = Error(nullptr, rc, s.substr(0, 60), path_);
    return absl::Status(st.code(), absl::StrCat(st.message(), " (", msg, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Statement> Database::Prepare(absl::string_view sql) {
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &st, nullptr);
  if (rc != SQLITE_OK) return Error(db_, rc, absl::StrCat("prepare '", sql, "'"), path_);
  return Statement(st, &path_);
}

absl::StatusOr<Statement*> Database::Cached(const std::string& sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    ASSIGN_OR_RETURN(Statement st, Prepare(sql));
    it = cache_.emplace(sql, std::make_unique<Statement>(std::move(st))).first;
  }
  it->second->Reset();
  return it->second.get();
}

int64_t Database::Changes() const { return sqlite3_changes(db_); }

}  // namespace mailrepl::sqlite
