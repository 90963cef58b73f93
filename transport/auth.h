// File: transport/auth.h
//
// Mutual authentication of a sync client and a sync server that share a
// secret: HMAC-SHA256 challenge-response. Each side sends a fresh
// NewChallenge(); each proves it knows the secret by answering
// AuthResponse(secret, its own role, context, first, second) over both
// challenges. Because the role is part of the MAC, a server's response can
// never be reflected back as a client's, and the other way round.
//
// Example (client side; the server mirrors it with kServerRole):
//   ASSIGN_OR_RETURN(std::string secret, LoadSecret(secret_path));
//   std::string mine = NewChallenge();
//   ... send mine, receive theirs (reject it unless kChallengeSize bytes) ...
//   Send(AuthResponse(secret, kClientRole, context, mine, theirs));
//   ... receive the server's response ...
//   if (!ResponsesEqual(response,
//                       AuthResponse(secret, kServerRole, context, mine,
//                                    theirs))) {
//     return absl::UnauthenticatedError("server failed authentication");
//   }
//
// Thread safety: every function is thread-safe (no shared state beyond
// OpenSSL's own thread-safe random generator).
#ifndef MAILREPL_TRANSPORT_AUTH_H_
#define MAILREPL_TRANSPORT_AUTH_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mailrepl::transport {

inline constexpr size_t kChallengeSize = 32;
inline constexpr size_t kAuthResponseSize = 32;  // SHA-256
inline constexpr size_t kMinSecretSize = 16;
inline constexpr size_t kMaxSecretSize = 64 << 10;
inline constexpr absl::string_view kClientRole = "client";
inline constexpr absl::string_view kServerRole = "server";

// Reads the shared secret from path, stripping one trailing newline.
// Errors: kNotFound if the file is missing; kFailedPrecondition if it is
// readable or writable by group or others (the message names the file, its
// mode and says "chmod 600 FILE"), is not a regular file, or holds fewer than
// kMinSecretSize or more than kMaxSecretSize bytes; other I/O errors as
// mailrepl::ErrnoStatus chooses.
absl::StatusOr<std::string> LoadSecret(const std::string& path);

// kChallengeSize bytes from OpenSSL's RAND_bytes. Aborts the process if the
// random generator fails, as no safe challenge can be made then.
std::string NewChallenge();

// HMAC-SHA256(secret, role || 0x00 || context || 0x00 || first_challenge ||
// second_challenge): kAuthResponseSize bytes.
// REQUIRES: role is kClientRole or kServerRole; context holds no NUL byte;
// both challenges are kChallengeSize bytes (the fixed sizes keep the
// concatenation unambiguous, so callers must reject a peer's challenge of
// any other size).
std::string AuthResponse(absl::string_view secret, absl::string_view role,
                         absl::string_view context,
                         absl::string_view first_challenge,
                         absl::string_view second_challenge);

// Whether a == b, in time that depends only on their sizes (CRYPTO_memcmp).
// Empty strings never match, so a missing response cannot equal another.
bool ResponsesEqual(absl::string_view a, absl::string_view b);

}  // namespace mailrepl::transport

#endif  // MAILREPL_TRANSPORT_AUTH_H_
