#include "transport/auth.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace mailrepl::transport {
namespace {

constexpr char kSecret[] = "correct horse battery staple";

// A fresh directory, removed with its contents on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr ? tmp : "/tmp") + "/auth_test.XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  // Writes contents to a new file with exactly the given mode.
  std::string Write(const std::string& name, const std::string& contents,
                    mode_t mode) {
    const std::string path = path_ + "/" + name;
    std::ofstream(path, std::ios::binary) << contents;
    REQUIRE(::chmod(path.c_str(), mode) == 0);
    return path;
  }

 private:
  std::string path_;
};

TEST_CASE("LoadSecret refuses files readable or writable by group or others",
          "[auth]") {
  ScratchDir dir;
  for (mode_t mode : {0644, 0640, 0604, 0620, 0602, 0660}) {
    const std::string path = dir.Write("secret", kSecret, mode);
    const absl::StatusOr<std::string> secret = LoadSecret(path);
    INFO("mode " << std::oct << mode << ": " << secret.status().ToString());
    REQUIRE(secret.status().code() == absl::StatusCode::kFailedPrecondition);
    const std::string message(secret.status().message());
    CHECK(message.find("chmod 600 " + path) != std::string::npos);
    CHECK(message.find(path) < message.find("chmod"));  // names the file first
  }
  const std::string path = dir.Write("secret", kSecret, 0644);
  CHECK(std::string(LoadSecret(path).status().message()).find("mode 0644") !=
        std::string::npos);
}

TEST_CASE("LoadSecret accepts files only the owner can read", "[auth]") {
  ScratchDir dir;
  for (mode_t mode : {0600, 0400}) {
    const absl::StatusOr<std::string> secret =
        LoadSecret(dir.Write("secret", kSecret, mode));
    REQUIRE(secret.ok());
    CHECK(*secret == kSecret);
  }
}

TEST_CASE("LoadSecret strips exactly one trailing newline", "[auth]") {
  ScratchDir dir;
  CHECK(*LoadSecret(dir.Write("one", std::string(kSecret) + "\n", 0600)) ==
        kSecret);
  CHECK(*LoadSecret(dir.Write("two", std::string(kSecret) + "\n\n", 0600)) ==
        std::string(kSecret) + "\n");
}

TEST_CASE("LoadSecret refuses an empty or short secret", "[auth]") {
  ScratchDir dir;
  for (const std::string& contents :
       {std::string(), std::string("\n"), std::string(15, 'k'),
        std::string(15, 'k') + "\n"}) {
    const absl::StatusOr<std::string> secret =
        LoadSecret(dir.Write("s", contents, 0600));
    INFO(secret.status().ToString());
    CHECK(secret.status().code() == absl::StatusCode::kFailedPrecondition);
  }
  CHECK(LoadSecret(dir.Write("s", std::string(16, 'k'), 0600)).ok());
}

TEST_CASE("LoadSecret refuses an oversized file and a directory", "[auth]") {
  ScratchDir dir;
  const std::string big =
      dir.Write("big", std::string(kMaxSecretSize + 1, 'k'), 0600);
  CHECK(LoadSecret(big).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(LoadSecret(dir.Write("max", std::string(kMaxSecretSize, 'k'), 0600))
            .ok());
  const std::string sub = dir.Write("unused", "", 0600) + ".d";
  REQUIRE(::mkdir(sub.c_str(), 0700) == 0);
  CHECK(LoadSecret(sub).status().code() ==
        absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("LoadSecret reports a missing file as not found", "[auth]") {
  ScratchDir dir;
  const std::string path = dir.Write("present", kSecret, 0600) + ".missing";
  const absl::StatusOr<std::string> secret = LoadSecret(path);
  CHECK(secret.status().code() == absl::StatusCode::kNotFound);
  CHECK(std::string(secret.status().message()).find(path) != std::string::npos);
}

TEST_CASE("challenges are 32 fresh random bytes", "[auth]") {
  const std::string a = NewChallenge();
  const std::string b = NewChallenge();
  CHECK(a.size() == kChallengeSize);
  CHECK(b.size() == kChallengeSize);
  CHECK(a != b);
}

TEST_CASE("AuthResponse matches HMAC-SHA256 of the documented message",
          "[auth]") {
  // Computed independently:
  //   printf 'client\0ctx\0AB' | openssl dgst -sha256 -hmac 0123456789abcdef
  const std::string mac =
      AuthResponse("0123456789abcdef", kClientRole, "ctx", "A", "B");
  REQUIRE(mac.size() == kAuthResponseSize);
  std::string hex;
  for (unsigned char c : mac) {
    static constexpr char kDigits[] = "0123456789abcdef";
    hex += kDigits[c >> 4];
    hex += kDigits[c & 15];
  }
  CHECK(hex ==
        "667685f801aaab1b1f07c161c671c06ae295bc43860fcb7614f63f41a8ae235a");
}

TEST_CASE("AuthResponse differs by role, secret, either challenge and context",
          "[auth]") {
  const std::string a = NewChallenge();
  const std::string b = NewChallenge();
  const std::string base = AuthResponse(kSecret, kClientRole, "store=7", a, b);
  CHECK(base == AuthResponse(kSecret, kClientRole, "store=7", a, b));
  CHECK(base != AuthResponse(kSecret, kServerRole, "store=7", a, b));
  CHECK(base !=
        AuthResponse("another shared secret", kClientRole, "store=7", a, b));
  CHECK(base !=
        AuthResponse(kSecret, kClientRole, "store=7", NewChallenge(), b));
  CHECK(base !=
        AuthResponse(kSecret, kClientRole, "store=7", a, NewChallenge()));
  CHECK(base != AuthResponse(kSecret, kClientRole, "store=8", a, b));
  CHECK(base != AuthResponse(kSecret, kClientRole, "store=7", b, a));
}

TEST_CASE("ResponsesEqual compares whole responses", "[auth]") {
  const std::string r =
      AuthResponse(kSecret, kServerRole, "ctx", NewChallenge(), NewChallenge());
  CHECK(ResponsesEqual(r, std::string(r)));
  std::string flipped = r;
  flipped[31] = static_cast<char>(flipped[31] ^ 1);
  CHECK_FALSE(ResponsesEqual(r, flipped));
  CHECK_FALSE(ResponsesEqual(r, r.substr(0, 31)));
  CHECK_FALSE(ResponsesEqual(r, r + "x"));
  CHECK_FALSE(ResponsesEqual("", ""));
}

}  // namespace
}  // namespace mailrepl::transport
