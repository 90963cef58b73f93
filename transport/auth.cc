#include "transport/auth.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/log.h"

namespace mailrepl::transport {
namespace {

// Group and others may neither read nor write a secret file.
constexpr mode_t kForbiddenModeBits = S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH;

// The permission bits in octal, as chmod takes them: "0644".
std::string ModeString(mode_t mode) {
  std::string octal(4, '0');
  for (int i = 3; i >= 0; --i, mode >>= 3) {
    octal[i] = static_cast<char>('0' + (mode & 7));
  }
  return octal;
}

// Reads until end of file, or until more than kMaxSecretSize bytes are in:
// an oversized file is detected without reading all of it.
absl::StatusOr<std::string> ReadBounded(int fd, const std::string& path) {
  std::string contents;
  char buf[4096];
  while (contents.size() <= kMaxSecretSize) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      OPENSSL_cleanse(buf, sizeof(buf));
      return ErrnoStatus(err, "read", path);
    }
    if (n == 0) break;
    contents.append(buf, static_cast<size_t>(n));
  }
  OPENSSL_cleanse(buf, sizeof(buf));
  return contents;
}

}  // namespace

absl::StatusOr<std::string> LoadSecret(const std::string& path) {
  // O_NONBLOCK: a FIFO planted at path must not hang the daemon; it is
  // refused below as not a regular file.
  const int fd =
      ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return ErrnoStatus(errno, "open secret file", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "stat secret file", path);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("secret file ", path, " is not a regular file"));
  }
  if ((st.st_mode & kForbiddenModeBits) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "secret file ", path, " has mode ", ModeString(st.st_mode),
        ", readable or writable by group or others: chmod 600 ", path));
  }
  absl::StatusOr<std::string> secret = ReadBounded(fd, path);
  ::close(fd);
  if (!secret.ok()) return secret.status();
  if (!secret->empty() && secret->back() == '\n') secret->pop_back();
  if (secret->size() > kMaxSecretSize) {
    return absl::FailedPreconditionError(absl::StrCat(
        "secret file ", path, " holds more than ", kMaxSecretSize, " bytes"));
  }
  if (secret->size() < kMinSecretSize) {
    return absl::FailedPreconditionError(absl::StrCat(
        "secret file ", path, secret->empty() ? " is empty" : " is too short",
        ": it holds ", secret->size(), " bytes, at least ", kMinSecretSize,
        " are required"));
  }
  return secret;
}

std::string NewChallenge() {
  std::string challenge(kChallengeSize, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(challenge.data()),
                 static_cast<int>(challenge.size())) != 1) {
    LogLine(Severity::kError, "auth random generator failed",
            Kv("function", "RAND_bytes"));
    std::abort();
  }
  return challenge;
}

std::string AuthResponse(absl::string_view secret, absl::string_view role,
                         absl::string_view context,
                         absl::string_view first_challenge,
                         absl::string_view second_challenge) {
  std::string message;
  message.reserve(role.size() + context.size() + first_challenge.size() +
                  second_challenge.size() + 2);
  absl::StrAppend(&message, role, absl::string_view("\0", 1), context,
                  absl::string_view("\0", 1), first_challenge,
                  second_challenge);
  static const char kEmptyKey[1] = {0};
  const void* key = secret.empty() ? kEmptyKey : secret.data();
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_size = 0;
  if (HMAC(EVP_sha256(), key, static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(message.data()),
           message.size(), mac, &mac_size) == nullptr ||
      mac_size != kAuthResponseSize) {
    // Only an allocation failure inside OpenSSL gets here. Returning some
    // fallback value could let a peer guess it, so stop instead.
    LogLine(Severity::kError, "auth HMAC failed", Kv("function", "HMAC"));
    std::abort();
  }
  return std::string(reinterpret_cast<const char*>(mac), mac_size);
}

bool ResponsesEqual(absl::string_view a, absl::string_view b) {
  if (a.empty() || a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace mailrepl::transport
