#include "syncclient/master_source.h"

#include <sys/inotify.h>
#include <unistd.h>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "asio/experimental/awaitable_operators.hpp"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "proto/log.pb.h"

namespace mailrepl::sync {

using namespace asio::experimental::awaitable_operators;

MasterSource::MasterSource(const SlotPaths& paths,
                           asio::any_io_executor executor)
    : paths_(paths), spool_(paths.spool), inotify_(executor) {}

MasterSource::~MasterSource() = default;  // inotify_ closes the descriptor

absl::StatusOr<std::unique_ptr<MasterSource>> MasterSource::Open(
    const SlotPaths& paths, asio::any_io_executor executor, bool watch_files) {
  std::unique_ptr<MasterSource> s(new MasterSource(paths, executor));
  ASSIGN_OR_RETURN(s->identity_, ReadIdentity(paths.identity_file()));
  ASSIGN_OR_RETURN(s->meta_db_,
                   sqlite::Database::OpenReadOnly(paths.index_file()));
  if (!watch_files) return s;
  int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "inotify_init1 for", paths.root);
  if (::inotify_add_watch(fd, paths.log_dir().c_str(), IN_MODIFY | IN_CREATE) <
          0 ||
      ::inotify_add_watch(fd, paths.meta.c_str(), IN_MODIFY | IN_CREATE) < 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "inotify_add_watch", paths.root);
  }
  s->inotify_.assign(fd);
  s->watching_ = true;
  return s;
}

absl::StatusOr<std::unique_ptr<Index>> MasterSource::View(Index::ViewScope scope) {
  return Index::OpenReadOnly(paths_.index_file(), scope);
}

absl::StatusOr<uint64_t> MasterSource::DurableLsn() {
  // Asked at every wake-up of the sender: prepared once. The reset ends the
  // read transaction, which would otherwise hold back WAL checkpoints.
  if (!durable_lsn_) {
    ASSIGN_OR_RETURN(durable_lsn_,
                     meta_db_->Prepare("SELECT value FROM meta WHERE key='applied_lsn'"));
  }
  absl::StatusOr<bool> row = durable_lsn_->Step();
  const uint64_t lsn = row.ok() && *row ? static_cast<uint64_t>(durable_lsn_->ColumnInt(0)) : 0;
  durable_lsn_->Reset();
  if (!row.ok()) return row.status();
  return lsn;
}

absl::StatusOr<std::optional<LogRecord>> MasterSource::ReadRecord(
    uint64_t from, uint64_t durable) {
  if (from > durable) return std::optional<LogRecord>();
  if (peeked_ && peeked_->lsn == from) {
    std::optional<LogRecord> r = std::move(peeked_);
    peeked_.reset();
    reader_next_ = from + 1;
    return r;
  }
  if (!reader_ || reader_next_ != from) {
    peeked_.reset();
    ASSIGN_OR_RETURN(LogReader r, LogReader::Open(paths_.log_dir(), from,
                                                  /*recovery=*/false));
    reader_.emplace(std::move(r));
    reader_next_ = from;
  }
  for (;;) {
    LogRecord rec;
    ASSIGN_OR_RETURN(bool more, reader_->Next(&rec));
    if (!more) return std::optional<LogRecord>();
    if (IsLocalRecordType(rec.type) || rec.lsn < from) continue;
    if (rec.lsn != from) {
      return absl::DataLossError(
          absl::StrCat("log of ", paths_.root, " has LSN ", rec.lsn,
                       " where LSN ", from, " was expected"));
    }
    reader_next_ = from + 1;
    return std::optional<LogRecord>(std::move(rec));
  }
}

absl::StatusOr<std::string> MasterSource::ReadBody(const std::string& guid) {
  // No waiting here: the body may not reach the spool for a long time (see
  // ReadBodiesFromLog), and sleeping would stall the io_context.
  ASSIGN_OR_RETURN(auto st, meta_db_->Prepare("SELECT pack, offset FROM blobs WHERE guid = ?"));
  st.BindBlob(1, guid);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row || st.ColumnIsNull(0)) {
    return absl::NotFoundError(
        absl::StrCat("body ", GuidHex(guid), " is not in the spool of ", paths_.root, " yet"));
  }
  const BodyLocation loc{static_cast<uint32_t>(st.ColumnInt(0)),
                         static_cast<uint64_t>(st.ColumnInt(1))};
  ASSIGN_OR_RETURN(std::string body, spool_.Read(guid, loc));
  if (Sha1(body) != guid) {
    return absl::DataLossError(absl::StrCat("body ", GuidHex(guid), " in pack ",
                                            spool_.PackPath(loc.pack), " offset ", loc.offset,
                                            " does not hash to its GUID; run 'mailctl verify'"));
  }
  return body;
}

absl::StatusOr<std::vector<std::string>> MasterSource::ReadBodiesFromLog(
    const std::vector<std::string>& guids) {
  const absl::flat_hash_set<std::string> wanted(guids.begin(), guids.end());
  absl::flat_hash_map<std::string, std::string> found;
  ASSIGN_OR_RETURN(auto st, meta_db_->Prepare(
                                "SELECT value FROM meta WHERE key='spool_checkpoint_lsn'"));
  ASSIGN_OR_RETURN(bool row, st.Step());
  const uint64_t checkpoint = row ? static_cast<uint64_t>(st.ColumnInt(0)) : 0;
  ASSIGN_OR_RETURN(LogReader reader, LogReader::Open(paths_.log_dir(), checkpoint + 1,
                                                     /*recovery=*/false));
  LogRecord rec;
  while (found.size() < wanted.size()) {
    ASSIGN_OR_RETURN(bool more, reader.Next(&rec));
    if (!more) break;
    if (rec.type != RecordType::kAppend) continue;
    logpb::Append a;
    if (!a.ParseFromString(rec.payload) || !a.has_body() || !wanted.contains(a.guid())) continue;
    std::string guid = a.guid();
    found.emplace(std::move(guid), std::move(*a.mutable_body()));
  }
  std::vector<std::string> out;
  out.reserve(guids.size());
  for (const std::string& guid : guids) {
    auto it = found.find(guid);
    if (it != found.end()) {
      out.push_back(it->second);
      continue;
    }
    ASSIGN_OR_RETURN(std::string body, ReadBody(guid));
    out.push_back(std::move(body));
  }
  return out;
}

asio::awaitable<void> MasterSource::WaitForChange(absl::Duration timeout) {
  asio::steady_timer timer(inotify_.get_executor(),
                           absl::ToChronoNanoseconds(timeout));
  asio::error_code ec;
  if (!watching_) {
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_return;
  }
  co_await (
      inotify_.async_wait(asio::posix::stream_descriptor::wait_read,
                          asio::redirect_error(asio::use_awaitable, ec)) ||
      timer.async_wait(asio::redirect_error(asio::use_awaitable, ec)));
  char buf[4096];
  while (::read(inotify_.native_handle(), buf, sizeof buf) > 0) {
  }
}

}  // namespace mailrepl::sync
