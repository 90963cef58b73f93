// A full disk during appends: the append fails cleanly with a clear error,
// nothing acknowledged before is lost, and the slot opens again. Uses a
// small tmpfs, so it needs root (as CI runs).
#include <catch2/catch.hpp>

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>

#include "common/log.h"
#include "store/verify.h"
#include "test/test_util.h"

namespace mailrepl {
namespace {

using testing::TempDir;

// A tmpfs of the given size mounted for the lifetime of the object.
class SmallFs {
 public:
  SmallFs(const std::string& path, const std::string& size) : path_(path) {
    ::mkdir(path.c_str(), 0755);
    mounted_ = ::mount("tmpfs", path.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
  }
  ~SmallFs() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }

 private:
  std::string path_;
  bool mounted_ = false;
};

std::string Incompressible(std::mt19937& rng, size_t n) {
  std::string s = "Subject: big\r\n\r\n";
  while (s.size() < n) s.push_back(static_cast<char>('a' + rng() % 26));
  return s;
}

TEST_CASE("a full disk fails the append cleanly and loses nothing acknowledged", "[diskfull]") {
  TempDir dir;
  SmallFs fs(dir.Sub("fs"), "3m");
  INFO("mounting a tmpfs needs root; run the suite as root (CI does)");
  REQUIRE(fs.mounted());
  std::string slot_dir = dir.Sub("fs/slot");
  SlotOptions options;
  options.reserve_bytes = 512 << 10;  // room to reopen and recover on a 3 MiB file system
  auto slot = testing::NewSlot(slot_dir, options);
  REQUIRE(slot->CreateMailbox("user/u").ok());
  // Ballast, removed at the end to show the slot takes mail again.
  std::string ballast = dir.Sub("fs/ballast");
  testing::AppendBytes((::close(::creat(ballast.c_str(), 0644)), ballast), std::string(512 << 10, 'b'));
  std::mt19937 rng(1);
  std::vector<std::string> acked;
  absl::Status failure;
  for (int i = 0; i < 200; ++i) {
    std::string body = Incompressible(rng, 100 * 1024);
    auto r = slot->Append({.mailbox = "user/u", .body = body});
    if (!r.ok()) {
      failure = r.status();
      break;
    }
    acked.push_back(r->guid);
  }
  REQUIRE_FALSE(failure.ok());
  CHECK(failure.code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(failure.message()), Catch::Contains("No space left on device"));
  REQUIRE(acked.size() > 3);
  // The failed append is not visible, and the log holds nothing of it.
  CHECK(slot->GetMailbox("user/u").value().messages == acked.size());
  uint64_t lsn = slot->last_lsn();
  CHECK(lsn == acked.size() + 1);

  SetLogQuiet(true);
  slot.reset();
  slot = testing::ReopenSlot(slot_dir, options);  // opens again, still full
  SetLogQuiet(false);
  CHECK(slot->last_lsn() == lsn);
  auto msgs = slot->ListMessages("user/u", false).value();
  REQUIRE(msgs.size() == acked.size());
  for (size_t i = 0; i < acked.size(); ++i) CHECK(msgs[i].guid == acked[i]);
  auto report = VerifySlot(*slot);
  if (report.ok()) {
    INFO((report->problems.empty() ? "" : report->problems[0]));
    CHECK(report->clean());
  }
  // Once space is freed, appends work again.
  REQUIRE(::unlink(ballast.c_str()) == 0);
  auto again = slot->Append({.mailbox = "user/u", .body = Incompressible(rng, 100 * 1024)});
  CHECK(again.ok());
  slot.reset();
}

TEST_CASE("a replica whose disk fills refuses replicated records, keeps serving, and takes them "
          "once space is freed",
          "[diskfull]") {
  TempDir dir;
  SmallFs fs(dir.Sub("fs"), "3m");
  INFO("mounting a tmpfs needs root; run the suite as root (CI does)");
  REQUIRE(fs.mounted());
  // The master's records: 10 incompressible 100 KiB messages (each takes
  // about 200 KiB on the replica: in the log and in the spool).
  const std::string master_dir = dir.Sub("master");
  {
    auto master = testing::NewSlot(master_dir);
    REQUIRE(master->CreateMailbox("user/u").ok());
    std::mt19937 rng(2);
    for (int i = 0; i < 10; ++i) {
      REQUIRE(master->Append({.mailbox = "user/u", .body = Incompressible(rng, 100 * 1024)}).ok());
    }
  }
  const std::vector<LogRecord> records = testing::RecordsFrom(master_dir, 1);
  SlotOptions options;
  options.reserve_bytes = 512 << 10;
  const std::string slot_dir = dir.Sub("fs/replica");
  auto replica = testing::NewSlot(slot_dir, options);
  std::string ballast = dir.Sub("fs/ballast");
  testing::AppendBytes((::close(::creat(ballast.c_str(), 0644)), ballast),
                       std::string(1 << 20, 'b'));
  size_t applied = 0;
  absl::Status refused;
  for (; applied < records.size(); ++applied) {
    refused = replica->AppendReplicated({records[applied]});
    if (!refused.ok()) break;
  }
  REQUIRE(applied < records.size());
  CHECK(refused.code() == absl::StatusCode::kResourceExhausted);
  replica->WaitApplied();
  CHECK(replica->last_lsn() == applied);
  // The same batch again, still refused the same way: the slot did not stop.
  CHECK(replica->AppendReplicated({records[applied]}).code() ==
        absl::StatusCode::kResourceExhausted);
  REQUIRE(::unlink(ballast.c_str()) == 0);
  for (; applied < records.size(); ++applied) {
    REQUIRE(replica->AppendReplicated({records[applied]}).ok());
  }
  replica->WaitApplied();
  CHECK(replica->last_lsn() == records.size());
  CHECK(replica->GetMailbox("user/u").value().messages == 10);
}

}  // namespace
}  // namespace mailrepl

namespace mailrepl {
namespace {

TEST_CASE("without a reserve, a write that hits ENOSPC is cut back and nothing acknowledged is lost",
          "[diskfull]") {
  testing::TempDir dir;
  SmallFs fs(dir.Sub("fs"), "3m");
  REQUIRE(fs.mounted());
  std::string slot_dir = dir.Sub("fs/slot");
  SlotOptions options;
  options.reserve_bytes = 0;
  std::vector<std::string> acked;
  std::string ballast = dir.Sub("fs/ballast");
  {
    auto slot = testing::NewSlot(slot_dir, options);
    REQUIRE(slot->CreateMailbox("user/u").ok());
    testing::AppendBytes((::close(::creat(ballast.c_str(), 0644)), ballast),
                         std::string(256 << 10, 'b'));
    std::mt19937 rng(2);
    absl::Status failure;
    for (int i = 0; i < 200 && failure.ok(); ++i) {
      auto r = slot->Append({.mailbox = "user/u", .body = Incompressible(rng, 100 * 1024)});
      if (r.ok()) acked.push_back(r->guid);
      failure = r.status();
    }
    CHECK(failure.code() == absl::StatusCode::kResourceExhausted);
    REQUIRE(acked.size() > 3);
    SetLogQuiet(true);
  }
  // Free space, reopen: every acknowledged message is there, the log is clean.
  REQUIRE(::unlink(ballast.c_str()) == 0);
  auto slot = testing::ReopenSlot(slot_dir, options);
  SetLogQuiet(false);
  auto msgs = slot->ListMessages("user/u", false);
  REQUIRE(msgs.ok());
  REQUIRE(msgs->size() >= acked.size());
  for (size_t i = 0; i < acked.size(); ++i) CHECK((*msgs)[i].guid == acked[i]);
  auto report = VerifySlot(*slot);
  REQUIRE(report.ok());
  CHECK(report->clean());
}

}  // namespace
}  // namespace mailrepl
