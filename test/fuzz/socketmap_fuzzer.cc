// libFuzzer target for the coordinator's Postfix socketmap: the netstring
// reader (coordinator/netstring.h) and the answers (RoutingMaps::Answer,
// coordinator/routing_maps.h), run as SocketmapServer::Session
// (coordinator/socketmap_server.cc) runs them on one connection, without
// the socket: parse what is buffered; a good netstring is answered and
// taken off the buffer, a bad one gets "PERM <error>: closing the
// connection" and ends the connection, as does an answer that says close;
// need-more reads the next piece. The lookup is a fixed directory behind
// the coordinator's own user-name rules (NormalizeUser, ValidateUser, as
// Coordinator::UserStore applies them): alice (store 1, master's LMTP),
// bob (store 2, a service address), carol (store 3 whose master is not
// among its members: TEMP), dbfail (a database error whose message holds
// control bytes: TEMP); every other valid name is in no store.
//
// Input: 2 control bytes, then the bytes the MTA sends.
//   byte 0: bits 0-1 max_request (4096, the default; 0; 16; 300), bit 2
//           the cluster's domain list (none, or example.com and Mail.Test);
//   byte 1: the size of the pieces the stream is read in (0 = 4096).
//
// Invariants: every reply is one netstring whose payload is "OK <data>",
// "NOTFOUND " or "TEMP <reason>" (connection stays open) or "PERM <reason>"
// (the connection closes right after), printable and bounded; the known
// users get their route; ParseNetstring's good result is a whole netstring
// (payload within max_request, ',' after it, re-encodes to the same
// payload), need-more holds less than the longest netstring allowed and
// every prefix of a good one needs more; bad has a printable reason; the
// maps' counters add up (lookups = found + not_found + temp; every request
// is a lookup or a PERM). The stream fed in pieces gives the same replies
// as fed whole (but for the bytes a bad netstring's reason quotes).
//
// Seeds (test/fuzz/corpus/socketmap_fuzzer/) were written once with
// EncodeNetstring, by running this fuzzer with MAILREPL_FUZZ_WRITE_SEEDS=DIR
// (see WriteSeeds below): Postfix's requests for both maps, several
// pipelined, leading zeros, and the malformed cases of
// test/socketmap_test.cc.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "coordinator/coordinator.h"
#include "coordinator/netstring.h"
#include "coordinator/routing_maps.h"
#include "coordinator/socketmap_server.h"
#include "proto/coord.pb.h"

namespace mailrepl::coord {
namespace {

constexpr size_t kMaxDigits = 9;  // netstring.cc

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

bool Printable(absl::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) return false;
  }
  return true;
}

coordpb::StoreInfo Store(uint64_t id, uint64_t master, std::string service_lmtp) {
  coordpb::StoreInfo s;
  s.set_store_id(id);
  s.set_master_slot_id(master);
  s.set_service_lmtp(std::move(service_lmtp));
  for (uint64_t slot : {2 * id - 1, 2 * id}) {
    coordpb::SlotInfo* m = s.add_members();
    m->set_slot_id(slot);
    m->set_lmtp_address(absl::StrCat("127.0.0.", slot, ":2400"));
  }
  return s;
}

absl::StatusOr<std::optional<coordpb::StoreInfo>> Lookup(absl::string_view name) {
  const std::string user = NormalizeUser(name);
  if (absl::Status s = ValidateUser(user); !s.ok()) return absl::InvalidArgumentError(s.message());
  if (user == "alice") return Store(1, 1, "");
  if (user == "bob") return Store(2, 4, "10.0.0.2:24");
  if (user == "carol") return Store(3, 99, "");
  if (user == "dbfail") return absl::UnavailableError("database is locked\n\x01\xff");
  return std::nullopt;
}

// What a user of the directory gets from each map (nullopt: not found).
std::optional<std::string> Expected(bool transport, const std::string& user) {
  if (user == "alice") return transport ? "OK lmtp:inet:127.0.0.1:2400" : "OK store-1";
  if (user == "bob") return transport ? "OK lmtp:inet:10.0.0.2:24" : "OK store-2";
  return std::nullopt;
}

void CheckParse(absl::string_view input, size_t max_length, const NetstringParse& p) {
  switch (p.result) {
    case NetstringResult::kGood: {
      Check(p.consumed <= input.size() && p.payload.size() <= max_length, "good within limits");
      Check(p.payload.data() + p.payload.size() + 1 == input.data() + p.consumed &&
                input[p.consumed - 1] == ',',
            "good ends with the payload and ','");
      const std::string again = EncodeNetstring(p.payload);
      const NetstringParse q = ParseNetstring(again, max_length);
      Check(q.result == NetstringResult::kGood && q.payload == p.payload &&
                q.consumed == again.size(),
            "a good payload re-encodes");
      // Every proper prefix of a good netstring needs more (a few of them).
      for (size_t cut : {size_t{0}, p.consumed / 2, p.consumed - 1}) {
        Check(ParseNetstring(input.substr(0, cut), max_length).result == NetstringResult::kNeedMore,
              "a prefix of a good netstring needs more");
      }
      break;
    }
    case NetstringResult::kNeedMore:
      Check(input.size() < kMaxDigits + 1 + max_length + 1, "need-more holds less than one");
      break;
    case NetstringResult::kBad:
      Check(!p.error.empty() && Printable(p.error) && p.error.size() < 200,
            "bad has a short printable reason");
      break;
  }
}

// The server's session over the stream; returns the replies sent.
std::vector<std::string> Session(absl::string_view stream, size_t piece, size_t max_request,
                                 const std::vector<std::string>& domains) {
  RoutingMaps maps(Lookup, domains);
  std::vector<std::string> replies;
  std::string buffer;
  size_t pos = 0;
  uint64_t requests = 0;
  for (;;) {
    const NetstringParse p = ParseNetstring(buffer, max_request);
    CheckParse(buffer, max_request, p);
    if (p.result == NetstringResult::kBad) {
      const std::string wire =
          EncodeNetstring(absl::StrCat("PERM ", p.error, ": closing the connection"));
      const NetstringParse back = ParseNetstring(wire, 1 << 20);
      Check(back.result == NetstringResult::kGood && back.consumed == wire.size(),
            "the PERM reply is one netstring");
      // Its reason quotes the first bytes buffered, which depend on how
      // the stream was cut: compared without it.
      replies.push_back("PERM (bad netstring)");
      break;
    }
    if (p.result == NetstringResult::kGood) {
      ++requests;
      const std::string request(p.payload);
      const RoutingAnswer answer = maps.Answer(p.payload);
      buffer.erase(0, p.consumed);
      const std::string& r = answer.reply;
      Check(Printable(r) && r.size() <= 2000, "reply printable and bounded");
      const bool perm = absl::StartsWith(r, "PERM ");
      Check(perm == answer.close, "PERM exactly when the connection closes");
      Check(perm || absl::StartsWith(r, "OK ") || r == "NOTFOUND " || absl::StartsWith(r, "TEMP "),
            "reply is OK, NOTFOUND, TEMP or PERM");
      if (absl::StartsWith(request, "transport ") || absl::StartsWith(request, "mailbox ")) {
        Check(!perm, "a request for a known map is answered");
        const bool transport = absl::StartsWith(request, "transport ");
        const std::string key = request.substr(request.find(' ') + 1);
        const std::string user = NormalizeUser(key);
        const size_t at = key.rfind('@');
        const bool other_domain = at != std::string::npos && !domains.empty() &&
                                  !absl::EqualsIgnoreCase(key.substr(at + 1), "example.com") &&
                                  !absl::EqualsIgnoreCase(key.substr(at + 1), "mail.test");
        if (!other_domain && ValidateUser(user).ok()) {
          const std::optional<std::string> want = Expected(transport, user);
          if (want) Check(r == *want, "a user in the directory gets its route");
          if (user == "dbfail" || (user == "carol" && transport)) {
            Check(absl::StartsWith(r, "TEMP "), "a failure is TEMP");
          }
        } else {
          Check(r == "NOTFOUND ", "another domain or not a user name is NOTFOUND");
        }
      }
      const std::string wire = EncodeNetstring(r);
      const NetstringParse back = ParseNetstring(wire, 1 << 20);
      Check(back.result == NetstringResult::kGood && back.payload == r &&
                back.consumed == wire.size(),
            "the reply is one netstring");
      replies.push_back(wire);
      if (answer.close) break;
      continue;
    }
    if (pos >= stream.size()) break;  // the peer closed
    const size_t n = std::min(piece, stream.size() - pos);
    buffer.append(stream.data() + pos, n);
    pos += n;
  }
  const RoutingStats& s = maps.stats();
  Check(s.lookups == s.found + s.not_found + s.temp, "lookups add up");
  Check(s.lookups + s.errors == requests, "every request is a lookup or a PERM");
  return replies;
}

// Seeds, made with the project's EncodeNetstring.
void WriteSeeds(const std::string& dir) {
  auto ns = [](absl::string_view s) { return EncodeNetstring(s); };
  const std::vector<std::pair<std::string, std::string>> seeds = {
      {"transport", std::string("\x00\x00", 2) + ns("transport alice@example.com")},
      {"mailbox", std::string("\x04\x00", 2) + ns("mailbox Bob+lists@Mail.Test")},
      {"pipelined", std::string("\x04\x05", 2) + ns("transport alice") + ns("mailbox bob") +
                        ns("transport carol@example.com") + ns("mailbox nobody") +
                        ns("transport dbfail") + ns("transport x@elsewhere.org") +
                        ns("mailbox -bad") + ns("transport " + std::string(70, 'a'))},
      {"leading_zeros", std::string("\x00\x01", 2) + "015:transport alice," + "0:,"},
      {"unknown_map", std::string("\x00\x00", 2) + ns("virtual alice") + ns("mailbox bob")},
      {"no_space", std::string("\x00\x00", 2) + ns("transport")},
      {"bad_length", std::string("\x00\x00", 2) + "3:abcd"},
      {"too_long", std::string("\x02\x00", 2) + "101:" + std::string(101, 'x') + ","},
      {"not_netstring", std::string("\x00\x03", 2) + "hello"},
      {"ten_digits", std::string("\x00\x00", 2) + "0000000001:a,"},
      {"control_bytes",
       std::string("\x03\x00", 2) + ns(std::string("transport al\0ice\r\n\xff", 19))},
  };
  for (const auto& [name, data] : seeds) {
    FILE* f = std::fopen((dir + "/" + name).c_str(), "wb");
    Check(f != nullptr, "open seed file");
    std::fwrite(data.data(), 1, data.size(), f);
    std::fclose(f);
  }
  std::printf("%zu seeds in %s\n", seeds.size(), dir.c_str());
}

}  // namespace
}  // namespace mailrepl::coord

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("MAILREPL_FUZZ_WRITE_SEEDS")) {
    mailrepl::coord::WriteSeeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mailrepl::coord;
  if (size < 2) return 0;
  static const size_t kMaxRequest[] = {kMaxSocketmapRequest, 0, 16, 300};
  const size_t max_request = kMaxRequest[data[0] & 3];
  std::vector<std::string> domains;
  if ((data[0] & 4) != 0) domains = {"example.com", "Mail.Test"};
  const size_t piece = data[1] == 0 ? 4096 : data[1];
  const absl::string_view stream(reinterpret_cast<const char*>(data + 2), size - 2);
  const std::vector<std::string> piecewise = Session(stream, piece, max_request, domains);
  const std::vector<std::string> whole = Session(stream, stream.size() + 1, max_request, domains);
  Check(piecewise == whole, "the same replies fed in pieces and whole");
  return 0;
}
