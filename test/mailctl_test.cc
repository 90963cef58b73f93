// Black-box tests of the `mailctl` binary (and `workload deliver`): each test
// runs the real executables in a fresh directory under /tmp and checks exit
// statuses, output and that refused commands change nothing.
// The binaries are found in $MAILREPL_BIN, else in ../bin beside this test.
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

extern char** environ;

namespace mailrepl {
namespace {

namespace fs = std::filesystem;

// A fresh directory under /tmp, removed with its contents on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = "/tmp/mailctl-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(absl::string_view name) const {
    return absl::StrCat(path_, "/", name);
  }

 private:
  std::string path_;
};

std::string BinDir() {
  if (const char* env = ::getenv("MAILREPL_BIN");
      env != nullptr && *env != '\0')
    return env;
  return (fs::read_symlink("/proc/self/exe").parent_path().parent_path() /
          "bin")
      .string();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out) throw std::runtime_error("write " + path);
}

struct Result {
  int status = -1;  // exit status, or -1 if the process did not exit normally
  std::string out;
  std::string err;
};

// Runs BinDir()/program with args, stdin from `input`, and captures stdout
// and stderr (through files in scratch, so large outputs cannot block).
Result RunProgram(const ScratchDir& scratch, const std::string& program,
                  const std::vector<std::string>& args,
                  const std::string& input = "") {
  const std::string in_path = scratch.Sub(".stdin");
  const std::string out_path = scratch.Sub(".stdout");
  const std::string err_path = scratch.Sub(".stderr");
  WriteAll(in_path, input);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, in_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const std::string binary = absl::StrCat(BinDir(), "/", program);
  std::vector<std::string> argv_storage = {binary};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  const int rc = ::posix_spawn(&pid, binary.c_str(), &actions, nullptr,
                               argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot run " + binary);
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error("waitpid");
  }
  Result r;
  r.status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
  r.out = ReadAll(out_path);
  r.err = ReadAll(err_path);
  return r;
}

// A slot directory in a scratch directory, driven through mailctl.
class TestSlot {
 public:
  TestSlot() : dir_(scratch_.Sub("slot")) {}

  // mailctl --slot DIR args...
  Result Run(std::vector<std::string> args,
             const std::string& input = "") const {
    args.insert(args.begin(), {"--slot", dir_});
    return RunProgram(scratch_, "mailctl", args, input);
  }
  // Like Run, but the command must succeed.
  std::string Ok(const std::vector<std::string>& args,
                 const std::string& input = "") const {
    Result r = Run(args, input);
    INFO("mailctl " << absl::StrJoin(args, " ") << "\nstderr: " << r.err);
    REQUIRE(r.status == 0);
    return r.out;
  }
  void Init() const { Ok({"init", "--store-id", "1", "--slot-id", "1"}); }

  // Everything a refused command must leave as it was: the state (digests,
  // LSN), the mailbox listing and the log.
  std::string Fingerprint() const {
    return absl::StrCat(Ok({"digest"}), Ok({"list"}), Ok({"dump-log"}));
  }
  // Bytes in the spool's pack files: a refused append must add none.
  uint64_t SpoolBytes() const {
    uint64_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(Sub("spool"))) {
      if (e.is_regular_file()) n += e.file_size();
    }
    return n;
  }

  const std::string& dir() const { return dir_; }
  std::string Sub(absl::string_view name) const {
    return absl::StrCat(dir_, "/", name);
  }
  const ScratchDir& scratch() const { return scratch_; }

 private:
  ScratchDir scratch_;
  std::string dir_;
};

std::string Message(int n, size_t bytes = 300) {
  std::string m =
      absl::StrCat("From: sender@example.test\r\nTo: alice@example.test\r\n",
                   "Subject: message ", n, "\r\n\r\n");
  while (m.size() < bytes) absl::StrAppend(&m, "line ", n, " of the body\r\n");
  return m;
}

// The value of key=<value> in a line such as "uid=1 guid=ab lsn=2".
std::string Field(absl::string_view line, absl::string_view key) {
  for (absl::string_view part : absl::StrSplit(line, absl::ByAnyChar(" \n"))) {
    if (absl::StartsWith(part, absl::StrCat(key, "="))) {
      return std::string(part.substr(key.size() + 1));
    }
  }
  return "";
}

// "slot_digest <hex>", the first line of `mailctl digest`.
std::string DigestLine(const std::string& digest_output) {
  return digest_output.substr(0, digest_output.find('\n'));
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c;
  f.get(c);
  c ^= 0x40;
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(c);
  if (!f) throw std::runtime_error("flip byte in " + path);
}

// Start offsets of the records of a log segment (docs/formats.md: a 25-byte
// header whose bytes 4..7 are the little-endian payload length).
std::vector<uint64_t> RecordOffsets(const std::string& path) {
  const std::string d = ReadAll(path);
  std::vector<uint64_t> out;
  uint64_t off = 0;
  // A header of zeros: the zeros the writer keeps ahead of its records.
  while (off + 25 <= d.size() && d.compare(off, 25, std::string(25, '\0')) != 0) {
    out.push_back(off);
    uint32_t len = 0;
    for (int i = 0; i < 4; ++i)
      len |= uint32_t{static_cast<uint8_t>(d[off + 4 + i])} << (8 * i);
    off += 25 + len;
  }
  return out;
}

const std::vector<std::string> kCommands = {
    "init",   "create",   "rename",      "delete",   "append", "copy",
    "list",   "fetch",    "flags",       "expunge",  "quota",  "verify",
    "digest", "dump-log", "reconstruct", "snapshot", "retain", "checkpoint"};

TEST_CASE("init creates a slot and prints its identity", "[mailctl]") {
  TestSlot slot;
  Result r = slot.Run(
      {"init", "--store-id", "7", "--slot-id", "3", "--cluster-id", "eu-1"});
  REQUIRE(r.status == 0);
  CHECK(absl::StrContains(r.out, "cluster_id=eu-1"));
  CHECK(absl::StrContains(r.out, "store_id=7"));
  CHECK(absl::StrContains(r.out, "slot_id=3"));
  CHECK(fs::exists(slot.Sub("identity")));
  CHECK(absl::StrContains(slot.Ok({"digest"}), "last_lsn 0"));
}

TEST_CASE("init refuses to re-initialize an existing slot and leaves it intact",
          "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  const std::string identity = ReadAll(slot.Sub("identity"));
  const std::string before = slot.Fingerprint();
  Result r = slot.Run({"init", "--store-id", "2", "--slot-id", "2"});
  CHECK(r.status == 1);
  CHECK(absl::StrContains(r.err, "mailctl: "));
  CHECK(absl::StrContains(r.err, "already holds a slot"));
  CHECK(ReadAll(slot.Sub("identity")) == identity);
  CHECK(slot.Fingerprint() == before);
}

TEST_CASE("init without --store-id is a usage error", "[mailctl]") {
  TestSlot slot;
  Result r = slot.Run({"init", "--slot-id", "1"});
  CHECK(r.status == 2);
  CHECK(absl::StrContains(r.err, "--store-id"));
  CHECK_FALSE(fs::exists(slot.Sub("identity")));
}

TEST_CASE(
    "append then list and fetch round-trip the exact bytes, flags and date",
    "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  std::string body = Message(1);
  body.push_back('\0');  // bytes, not text
  body.append("\xff\xfe tail\r\n");
  const std::string file = slot.scratch().Sub("msg.eml");
  WriteAll(file, body);
  const std::string first = slot.Ok({"append", "user/alice", file, "--flags",
                                     "\\Seen,$Label", "--date", "1700000000"});
  CHECK(Field(first, "uid") == "1");
  const std::string guid = Field(first, "guid");
  CHECK(guid.size() == 40);
  CHECK(!Field(first, "lsn").empty());
  const std::string second =
      slot.Ok({"append", "user/alice"}, Message(2));  // from stdin
  CHECK(Field(second, "uid") == "2");

  CHECK(slot.Ok({"fetch", "user/alice", "1"}) == body);
  CHECK(slot.Ok({"fetch", "user/alice", "2"}) == Message(2));

  const std::string listing = slot.Ok({"list", "user/alice"});
  CHECK(absl::StrContains(listing, guid));
  CHECK(absl::StrContains(listing, "2023-11-14T22:13:20Z"));
  CHECK(absl::StrContains(listing, "$Label \\Seen"));

  const std::string json = slot.Ok({"list", "user/alice", "--json"});
  CHECK(absl::StrContains(json,
                          absl::StrCat("\"uid\":1,\"guid\":\"", guid, "\"")));
  CHECK(absl::StrContains(json, "\"internal_date\":1700000000"));
  CHECK(absl::StrContains(json, "\"flags\":[\"$Label\",\"\\\\Seen\"]"));

  const std::string mailboxes = slot.Ok({"list"});
  CHECK(absl::StrContains(mailboxes, "user/alice"));
  const std::string mailboxes_json = slot.Ok({"list", "--json"});
  CHECK(absl::StrContains(mailboxes_json, "\"name\":\"user/alice\""));
  CHECK(absl::StrContains(mailboxes_json, "\"messages\":2"));
  CHECK(absl::StrContains(
      mailboxes_json,
      absl::StrCat("\"bytes\":", body.size() + Message(2).size())));
}

TEST_CASE(
    "append to an invalid mailbox name exits 1, says why and changes nothing",
    "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  slot.Ok({"append", "user/alice"}, Message(1));
  const std::string before = slot.Fingerprint();
  const uint64_t spool_before = slot.SpoolBytes();
  struct Case {
    std::string name;
    std::string why;
  };
  for (const Case& c :
       std::vector<Case>{{"user/a/../b", "'..'"},
                         {"/user/alice", "leading '/'"},
                         {"user/al\x01ice", "control character"},
                         {"user/alice/", "trailing '/'"},
                         {"user//alice", "empty component"}}) {
    INFO("mailbox name: " << c.name);
    Result r = slot.Run({"append", c.name}, Message(2));
    CHECK(r.status == 1);
    CHECK(absl::StrContains(r.err, "invalid mailbox name"));
    CHECK(absl::StrContains(r.err, c.why));
    CHECK(r.err.find('\x01') == std::string::npos);  // shown escaped
  }
  Result create = slot.Run({"create", "user/a/../b"});
  CHECK(create.status == 1);
  CHECK(absl::StrContains(create.err, "invalid mailbox name"));
  CHECK(slot.Fingerprint() == before);
  CHECK(slot.SpoolBytes() == spool_before);
}

TEST_CASE(
    "append to a mailbox that does not exist exits 1 and leaves no body behind",
    "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  const std::string before = slot.Fingerprint();
  const uint64_t spool_before = slot.SpoolBytes();
  Result r = slot.Run({"append", "user/bob"}, Message(1));
  CHECK(r.status == 1);
  CHECK(absl::StrContains(r.err, "'user/bob' does not exist"));
  CHECK(slot.Fingerprint() == before);
  CHECK(slot.SpoolBytes() == spool_before);
}

TEST_CASE(
    "an oversized message exits 1 with the limit in the message and changes "
    "nothing",
    "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  const std::string before = slot.Fingerprint();
  const uint64_t spool_before = slot.SpoolBytes();
  // Just over the limit (the engine refuses) and far over it (mailctl stops
  // reading).
  for (size_t size : {size_t{2000}, size_t{3u << 20}}) {
    INFO("message size " << size);
    Result r = slot.Run({"--max-message-bytes", "1000", "append", "user/alice"},
                        Message(1, size));
    CHECK(r.status == 1);
    CHECK(absl::StrContains(r.err, "exceeds the limit of 1000 bytes"));
  }
  CHECK(slot.Fingerprint() == before);
  CHECK(slot.SpoolBytes() == spool_before);
  // The same message fits under the default limit.
  slot.Ok({"append", "user/alice"}, Message(1, 2000));
}

TEST_CASE(
    "an over-quota append exits 1 with the engine's quota error and changes no "
    "state",
    "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  slot.Ok({"append", "user/alice"}, Message(1, 600));
  const std::string quota = slot.Ok({"quota", "alice", "--storage", "1000"});
  CHECK(absl::StrContains(
      quota,
      absl::StrCat("storage ", Message(1, 600).size(), " of 1000 bytes")));
  CHECK(absl::StrContains(quota, "messages 1 of unlimited"));
  const std::string before = slot.Fingerprint();
  Result r = slot.Run({"append", "user/alice"}, Message(2, 600));
  CHECK(r.status == 1);
  CHECK(absl::StrContains(r.err, "over quota"));
  CHECK(absl::StrContains(r.err, "alice"));
  CHECK(slot.Fingerprint() == before);
  // A message limit is enforced the same way.
  slot.Ok({"quota", "alice", "--storage", "0", "--messages", "1"});
  const std::string before_messages = slot.Fingerprint();
  CHECK(slot.Run({"append", "user/alice"}, Message(3, 100)).status == 1);
  CHECK(slot.Fingerprint() == before_messages);
}

// A refused append must not leave an unreferenced body behind.
TEST_CASE("an over-quota append leaves no body in the spool",
          "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  slot.Ok({"quota", "alice", "--messages", "1"});
  slot.Ok({"append", "user/alice"}, Message(1));
  const uint64_t spool_before = slot.SpoolBytes();
  CHECK(slot.Run({"append", "user/alice"}, Message(2)).status == 1);
  CHECK(slot.SpoolBytes() == spool_before);
}

TEST_CASE("copy, flags and expunge change what list shows", "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  slot.Ok({"create", "user/alice/Archive"});
  for (int i = 1; i <= 4; ++i) slot.Ok({"append", "user/alice"}, Message(i));
  CHECK(absl::StrContains(
      slot.Ok({"copy", "user/alice", "2-3", "user/alice/Archive"}),
      "new UIDs 1,2"));
  CHECK(slot.Ok({"fetch", "user/alice/Archive", "2"}) == Message(3));
  slot.Ok({"flags", "user/alice", "1,3", "--add", "\\Flagged,\\Seen"});
  slot.Ok({"flags", "user/alice", "3", "--remove", "\\Seen"});
  std::string json = slot.Ok({"list", "user/alice", "--json"});
  CHECK(absl::StrContains(json, "\"uid\":3,"));
  CHECK(absl::StrContains(
      json, "\"flags\":[\"\\\\Flagged\",\"\\\\Seen\"]"));  // UID 1
  slot.Ok({"flags", "user/alice", "1", "--set", ""});
  slot.Ok({"expunge", "user/alice", "2,4"});
  const std::string listing = slot.Ok({"list", "user/alice"});
  CHECK_FALSE(absl::StrContains(listing, "expunged"));
  const std::string all = slot.Ok({"list", "user/alice", "--expunged"});
  CHECK(absl::StrContains(all, "(expunged)"));
  json = slot.Ok({"list", "--json"});
  CHECK(absl::StrContains(json, "\"name\":\"user/alice\""));
  // Unknown UIDs are refused by the engine, naming the UID.
  Result r = slot.Run({"expunge", "user/alice", "9"});
  CHECK(r.status == 1);
  CHECK(absl::StrContains(r.err, "UID 9"));
  // Malformed UID sets are usage errors.
  CHECK(slot.Run({"expunge", "user/alice", "3-1"}).status == 2);
  CHECK(slot.Run({"expunge", "user/alice", "x"}).status == 2);
  CHECK(slot.Run({"flags", "user/alice", "1"}).status ==
        2);  // no --set/--add/--remove
}

TEST_CASE("rename and delete act on mailboxes and their children",
          "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  slot.Ok({"create", "user/alice/Sent"});
  slot.Ok({"append", "user/alice/Sent"}, Message(1));
  slot.Ok({"rename", "user/alice/Sent", "user/alice/Old"});
  CHECK(slot.Ok({"fetch", "user/alice/Old", "1"}) == Message(1));
  Result r = slot.Run({"delete", "user/alice"});
  CHECK(r.status == 1);
  CHECK(absl::StrContains(r.err, "has children"));
  slot.Ok({"delete", "user/alice/Old"});
  slot.Ok({"delete", "user/alice"});
  CHECK_FALSE(absl::StrContains(slot.Ok({"list"}), "user/alice"));
}

TEST_CASE("list --json escapes names so the output stays valid JSON",
          "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  slot.Ok({"create", "user/alice/say \"hi\" \\ now"});
  const std::string json = slot.Ok({"list", "--json"});
  CHECK(absl::StrContains(json,
                          "\"name\":\"user/alice/say \\\"hi\\\" \\\\ now\""));
}

TEST_CASE(
    "verify exits 0 on a clean slot and 1 after one byte of a body in its "
    "pack changes",
    "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  const std::string guid =
      Field(slot.Ok({"append", "user/alice"}, Message(1)), "guid");
  slot.Ok({"append", "user/alice"}, Message(2));
  Result clean = slot.Run({"verify"});
  CHECK(clean.status == 0);
  CHECK(absl::StrContains(clean.out, "problems=0"));

  // Checkpointed, the body is only in the spool (above the checkpoint, the
  // open would restore it from the log). Its entry in the pack: 12 bytes of
  // header before the raw GUID, the body right after it.
  slot.Ok({"checkpoint"});
  const std::string pack = slot.Sub("spool/packs/00000001.pack");
  REQUIRE(fs::exists(pack));
  std::ifstream in(pack, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  const size_t at = bytes.find(absl::HexStringToBytes(guid));
  REQUIRE(at != std::string::npos);
  FlipByte(pack, at + 20 + 10);
  Result damaged = slot.Run({"verify"});
  CHECK(damaged.status == 1);
  CHECK(absl::StrContains(damaged.out, "problems=1"));
  CHECK(absl::StrContains(damaged.out, pack));
  CHECK(absl::StrContains(damaged.err, "verify found 1 problems"));
}

TEST_CASE(
    "verify exits 1 naming file and offset when a byte in the middle of the "
    "log flips",
    "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  for (int i = 1; i <= 4; ++i) slot.Ok({"append", "user/alice"}, Message(i));
  const std::string segment = slot.Sub("log/00000000000000000001.log");
  const std::vector<uint64_t> records = RecordOffsets(segment);
  REQUIRE(records.size() == 5);
  // Inside the payload of the second record: valid records follow it.
  FlipByte(segment, records[1] + 40);
  Result r = slot.Run({"verify"});
  CHECK(r.status == 1);
  CHECK(absl::StrContains(r.err, segment));
  CHECK(absl::StrContains(r.err, absl::StrCat("offset ", records[1])));
  // Other commands cannot open it (exit 2); dump-log shows what is readable
  // and stops with the same diagnosis.
  CHECK(slot.Run({"list"}).status == 2);
  Result dump = slot.Run({"dump-log"});
  CHECK(dump.status == 1);
  CHECK(absl::StrContains(dump.out, "CREATE"));
  CHECK(absl::StrContains(dump.err, absl::StrCat("offset ", records[1])));
}

TEST_CASE("verify reports a missing slot as unable to run (exit 2)",
          "[mailctl]") {
  TestSlot slot;  // never initialized
  Result r = slot.Run({"verify"});
  CHECK(r.status == 2);
  CHECK(absl::StrContains(r.err, slot.dir()));
}

TEST_CASE(
    "reconstruct after deleting the index gives the same digest as before",
    "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  slot.Ok({"create", "user/bob"});
  for (int i = 1; i <= 5; ++i)
    slot.Ok({"append", i % 2 ? "user/alice" : "user/bob"}, Message(i));
  slot.Ok({"flags", "user/alice", "1", "--add", "\\Seen"});
  slot.Ok({"expunge", "user/bob", "1"});
  slot.Ok({"quota", "bob", "--messages", "100"});
  const std::string before = slot.Ok({"digest"});
  fs::remove(slot.Sub("meta/index.sqlite3"));
  Result r = slot.Run({"reconstruct"});
  REQUIRE(r.status == 0);
  CHECK(absl::StrContains(r.out, "records_replayed="));
  const std::string after = slot.Ok({"digest"});
  CHECK(DigestLine(after) == DigestLine(before));
  // Every mailbox digest is the same too (the lines after the header).
  CHECK(after.substr(after.find("mailboxes")) ==
        before.substr(before.find("mailboxes")));
  CHECK(slot.Run({"verify"}).status == 0);
}

TEST_CASE("dump-log lists the records with their types and the epoch history",
          "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  slot.Ok({"append", "user/alice", "--flags", "\\Seen"}, Message(1));
  slot.Ok({"flags", "user/alice", "1", "--add", "\\Flagged"});
  slot.Ok({"expunge", "user/alice", "1"});
  slot.Ok({"quota", "alice", "--storage", "5000"});
  slot.Ok({"rename", "user/alice", "user/alice2"});
  slot.Ok({"delete", "user/alice2"});
  const std::string text = slot.Ok({"dump-log"});
  const std::vector<std::string> lines = absl::StrSplit(text, '\n');
  REQUIRE(lines.size() >= 7);
  CHECK(absl::StartsWith(lines[0], "lsn=1 epoch=0 CREATE "));
  CHECK(absl::StrContains(lines[0], "name=user/alice"));
  CHECK(absl::StartsWith(lines[1], "lsn=2 epoch=0 APPEND "));
  CHECK(absl::StrContains(lines[1], "uid=1"));
  CHECK(absl::StrContains(lines[1], "has_body=true"));
  CHECK(absl::StrContains(lines[1], "flags=\\Seen"));
  CHECK(absl::StartsWith(lines[2], "lsn=3 epoch=0 FLAGS "));
  CHECK(absl::StartsWith(lines[3], "lsn=4 epoch=0 EXPUNGE "));
  CHECK(absl::StartsWith(lines[4], "lsn=5 epoch=0 QUOTA "));
  CHECK(absl::StartsWith(lines[5], "lsn=6 epoch=0 RENAME "));
  CHECK(absl::StartsWith(lines[6], "lsn=7 epoch=0 DELETE "));
  CHECK(absl::StrContains(text, "epoch history:\n  epoch 0 from LSN 1\n"));

  const std::string from = slot.Ok({"dump-log", "--from", "6"});
  CHECK(absl::StartsWith(from, "lsn=6 "));
  CHECK_FALSE(absl::StrContains(from, "lsn=5 "));

  const std::string json = slot.Ok({"dump-log", "--json"});
  const std::vector<std::string> json_lines =
      absl::StrSplit(json, '\n', absl::SkipEmpty());
  REQUIRE(json_lines.size() == 8);  // 7 records + the history
  for (const std::string& l : json_lines) {
    CHECK(absl::StartsWith(l, "{"));
    CHECK(absl::EndsWith(l, "}"));
  }
  CHECK(absl::StartsWith(json_lines[1],
                         "{\"lsn\":2,\"epoch\":0,\"type\":\"APPEND\""));
  CHECK(absl::StrContains(json_lines[7],
                          "\"epoch_history\":[{\"epoch\":0,\"first_lsn\":1}]"));
}

TEST_CASE("snapshot export then import into a fresh slot gives the same state",
          "[mailctl]") {
  TestSlot source;
  source.Init();
  source.Ok({"create", "user/alice"});
  for (int i = 1; i <= 3; ++i) source.Ok({"append", "user/alice"}, Message(i));
  source.Ok({"quota", "alice", "--storage", "100000"});
  // A limit set and then lifted again must survive the round trip too.
  source.Ok({"quota", "bob", "--messages", "10"});
  source.Ok({"quota", "bob", "--messages", "0"});
  const std::string file = source.scratch().Sub("alice.snapshot");
  source.Ok({"snapshot", "export", file});

  TestSlot target;
  target.Init();
  target.Ok({"snapshot", "import", file});
  CHECK(DigestLine(target.Ok({"digest"})) == DigestLine(source.Ok({"digest"})));
  CHECK(target.Ok({"fetch", "user/alice", "2"}) == Message(2));
  CHECK(target.Run({"verify"}).status == 0);
  // A slot that already holds state refuses an import and stays as it was.
  const std::string before = target.Fingerprint();
  Result again = target.Run({"snapshot", "import", file});
  CHECK(again.status == 1);
  CHECK(target.Fingerprint() == before);
  CHECK(target.Run({"snapshot", "frobnicate", file}).status == 2);
}

TEST_CASE("retain drops whole log segments below an LSN and keeps the state",
          "[mailctl]") {
  TestSlot slot;
  slot.Init();
  slot.Ok({"create", "user/alice"});
  for (int i = 1; i <= 6; ++i) {
    slot.Ok({"--segment-bytes", "1000", "append", "user/alice"},
            Message(i, 600));
  }
  const std::string before = slot.Ok({"digest"});
  const std::string out = slot.Ok({"checkpoint"});
  CHECK(absl::StrContains(out, "spool checkpoint at LSN 7"));
  const std::string retained = slot.Ok({"retain", "--below", "5"});
  CHECK(absl::StrContains(retained, "dropped "));
  CHECK_FALSE(absl::StrContains(retained, "dropped 0 "));
  CHECK(DigestLine(slot.Ok({"digest"})) == DigestLine(before));
  CHECK_FALSE(absl::StrContains(slot.Ok({"dump-log"}), "lsn=1 "));
  CHECK(slot.Ok({"fetch", "user/alice", "1"}) == Message(1, 600));
  CHECK(slot.Run({"retain"}).status == 2);  // --below is required
}

TEST_CASE("--help works globally and for every command", "[mailctl]") {
  ScratchDir scratch;
  Result global = RunProgram(scratch, "mailctl", {"--help"});
  CHECK(global.status == 0);
  CHECK(absl::StrContains(global.out, "Usage: mailctl"));
  for (const std::string& command : kCommands) {
    INFO("command " << command);
    CHECK(absl::StrContains(global.out, absl::StrCat("\n  ", command)));
    Result r = RunProgram(scratch, "mailctl", {command, "--help"});
    CHECK(r.status == 0);
    CHECK(absl::StartsWith(
        r.out, absl::StrCat("Usage: mailctl --slot DIR ", command)));
    CHECK(r.err.empty());
  }
}

TEST_CASE("usage errors exit 2 and name the problem", "[mailctl]") {
  TestSlot slot;
  slot.Init();
  ScratchDir scratch;
  Result no_command = RunProgram(scratch, "mailctl", {"--slot", slot.dir()});
  CHECK(no_command.status == 2);
  Result no_slot = RunProgram(scratch, "mailctl", {"list"});
  CHECK(no_slot.status == 2);
  CHECK(absl::StrContains(no_slot.err, "--slot"));
  Result unknown = slot.Run({"frobnicate"});
  CHECK(unknown.status == 2);
  CHECK(absl::StrContains(unknown.err, "unknown command 'frobnicate'"));
  Result option = slot.Run({"list", "--bogus"});
  CHECK(option.status == 2);
  CHECK(absl::StrContains(option.err, "--bogus"));
  CHECK(slot.Run({"create"}).status == 2);
  CHECK(slot.Run({"create", "user/a", "user/b"}).status == 2);
  CHECK(slot.Run({"fetch", "user/a", "one"}).status == 2);
  CHECK(slot.Run({"dump-log", "--from"}).status == 2);
  CHECK(slot.Run({"--max-message-bytes", "lots", "list"}).status == 2);
}

TEST_CASE("an unknown command exits 2 whatever follows it, --help included",
          "[mailctl]") {
  ScratchDir scratch;
  const std::vector<std::vector<std::string>> lines = {
      {"frobnicate"},
      {"frobnicate", "--help"},
      {"frobnicate", "-h"},
      {"--help", "frobnicate"},
      {"--slot", scratch.Sub("slot"), "frobnicate", "--help"},
      {"frobnicate", "user/alice", "--json"},
  };
  for (const std::vector<std::string>& args : lines) {
    INFO("mailctl " << absl::StrJoin(args, " "));
    Result r = RunProgram(scratch, "mailctl", args);
    CHECK(r.status == 2);
    CHECK(r.err ==
          "mailctl: unknown command 'frobnicate'; see mailctl --help\n");
    CHECK(r.out.empty());
  }
}

TEST_CASE("a slot held open elsewhere is refused, pointing to replctl mail",
          "[mailctl]") {
  TestSlot slot;
  slot.Init();
  // What replicad holds while it has the slot open (docs/formats.md).
  const int fd =
      ::open(slot.Sub("LOCK").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"list"}, {"verify"}}) {
    INFO("mailctl " << absl::StrJoin(args, " "));
    Result r = slot.Run(args);
    CHECK(r.status == 2);
    CHECK(absl::StrContains(r.err, "another process"));
    CHECK(absl::StrContains(r.err, "'replctl mail ...'"));
    CHECK_FALSE(absl::StrContains(r.err, "read-only command"));
  }
  // reconstruct too, and it leaves the open slot's index where it is.
  const std::string index = slot.Sub("meta/index.sqlite3");
  REQUIRE(std::filesystem::exists(index));
  Result rebuild = slot.Run({"reconstruct"});
  CHECK(rebuild.status == 2);
  CHECK(absl::StrContains(rebuild.err, "another process"));
  CHECK(std::filesystem::exists(index));
  ::close(fd);
  CHECK(slot.Run({"list"}).status == 0);
}

TEST_CASE("a directory that holds no slot cannot be opened (exit 2)",
          "[mailctl]") {
  TestSlot slot;
  Result r = slot.Run({"list"});
  CHECK(r.status == 2);
  CHECK(absl::StrContains(r.err, "cannot open slot"));
  CHECK(absl::StrContains(r.err, "mailctl init"));
}

TEST_CASE("workload deliver appends the messages to the users' INBOXes",
          "[mailctl][workload]") {
  TestSlot slot;
  slot.Init();
  Result r = RunProgram(slot.scratch(), "workload",
                        {"deliver", "--slot", slot.dir(), "--count", "60",
                         "--users", "5", "--threads", "3", "--seed", "7"});
  REQUIRE(r.status == 0);
  CHECK(absl::StartsWith(r.out, "{\"count\": 60, \"bytes\": "));
  CHECK(absl::StrContains(r.out, "\"threads\": 3"));
  CHECK(
      absl::StrContains(r.out, "\"last_lsn\": 65"));  // 5 INBOXes + 60 appends
  const std::string json = slot.Ok({"list", "--json"});
  uint64_t total = 0;
  for (absl::string_view part : absl::StrSplit(json, "\"messages\":")) {
    uint64_t n = 0;
    if (absl::SimpleAtoi(part.substr(0, part.find_first_of(",}")), &n))
      total += n;
  }
  CHECK(total == 60);
  CHECK(absl::StrContains(json, "\"name\":\"user/user4\""));
  // A second run continues the stream; the INBOXes exist already.
  Result more = RunProgram(slot.scratch(), "workload",
                           {"deliver", "--slot", slot.dir(), "--start", "60",
                            "--count", "10", "--users", "5", "--seed", "7"});
  REQUIRE(more.status == 0);
  CHECK(absl::StrContains(more.out, "\"last_lsn\": 75"));
  CHECK(slot.Run({"verify"}).status == 0);
}

}  // namespace
}  // namespace mailrepl
