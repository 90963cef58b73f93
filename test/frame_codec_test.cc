#include "transport/frame_codec.h"

#include <zstd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"

// Records the largest single allocation, to prove that a decompression bomb
// is refused without allocating its declared size. Every non-aligned form is
// replaced so that sanitizers see matching allocation and release.
static std::atomic<size_t> g_largest_allocation{0};
static void* TrackedAlloc(size_t n) noexcept {
  size_t seen = g_largest_allocation.load();
  while (n > seen && !g_largest_allocation.compare_exchange_weak(seen, n)) {
  }
  return std::malloc(n == 0 ? 1 : n);
}
void* operator new(size_t n) {
  if (void* p = TrackedAlloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  return TrackedAlloc(n);
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  return TrackedAlloc(n);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}

namespace mailrepl::transport {
namespace {

// Mail-like text, which zstd compresses well.
std::string MailText(size_t bytes, int seed = 0) {
  std::string text;
  for (int i = 0; text.size() < bytes; ++i) {
    absl::StrAppend(&text, "Received: from mx", (i * 7 + seed) % 13,
                    ".example.org by slot", i % 5, ".example.net; id ", i,
                    "\r\nSubject: quarterly report ", i % 11, "\r\n");
  }
  text.resize(bytes);
  return text;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string bytes(n, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  return bytes;
}

std::string Encode(absl::string_view payload, bool compress) {
  std::string out;
  REQUIRE(EncodeFrame(payload, compress, &out).ok());
  return out;
}

// Byte surgery: a frame with any header fields, and a valid checksum.
std::string RawFrame(absl::string_view wire_payload, uint8_t flags,
                     uint32_t length) {
  std::string frame(kFrameHeaderSize, '\0');
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>(length >> (8 * i));
  frame[4] = static_cast<char>(flags);
  uint32_t crc = crc32c::Extend(0, frame.data(), 5);
  crc = crc32c::Mask(
      crc32c::Extend(crc, wire_payload.data(), wire_payload.size()));
  for (int i = 0; i < 4; ++i) frame[5 + i] = static_cast<char>(crc >> (8 * i));
  frame.append(wire_payload.data(), wire_payload.size());
  return frame;
}

std::string RawFrame(absl::string_view wire_payload, uint8_t flags) {
  return RawFrame(wire_payload, flags,
                  static_cast<uint32_t>(wire_payload.size()));
}

// A hand-made zstd frame: single segment, 4-byte declared content size, one
// RLE block of block_size copies of byte.
std::string RleZstdFrame(uint32_t declared, uint32_t block_size, char byte) {
  std::string f = "\x28\xb5\x2f\xfd\xa0";
  for (int i = 0; i < 4; ++i)
    f.push_back(static_cast<char>(declared >> (8 * i)));
  const uint32_t block_header = 1 | (1 << 1) | (block_size << 3);  // last, RLE
  for (int i = 0; i < 3; ++i)
    f.push_back(static_cast<char>(block_header >> (8 * i)));
  f.push_back(byte);
  return f;
}

// zero_bytes of zeros, compressed from a 1 MiB buffer; declares its content
// size when declare_size is true.
std::string CompressedZeros(size_t zero_bytes, bool declare_size) {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  REQUIRE(cctx != nullptr);
  if (declare_size)
    REQUIRE(!ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(cctx, zero_bytes)));
  const std::string zeros(1 << 20, '\0');
  std::string out;
  std::string chunk(ZSTD_CStreamOutSize(), '\0');
  for (size_t left = zero_bytes;;) {
    const size_t n = std::min(left, zeros.size());
    left -= n;
    ZSTD_inBuffer in{zeros.data(), n, 0};
    const ZSTD_EndDirective mode = left == 0 ? ZSTD_e_end : ZSTD_e_continue;
    size_t remaining;
    do {
      ZSTD_outBuffer o{chunk.data(), chunk.size(), 0};
      remaining = ZSTD_compressStream2(cctx, &o, &in, mode);
      REQUIRE(!ZSTD_isError(remaining));
      out.append(chunk.data(), o.pos);
    } while (mode == ZSTD_e_end ? remaining != 0 : in.pos < in.size);
    if (left == 0) break;
  }
  ZSTD_freeCCtx(cctx);
  return out;
}

TEST_CASE("frames round-trip without compression", "[frame]") {
  for (const std::string& payload : {std::string(), std::string("x"),
                                     MailText(5000), RandomBytes(3000, 1)}) {
    const std::string wire = Encode(payload, false);
    REQUIRE(wire.size() == kFrameHeaderSize + payload.size());
    DecodedFrame frame;
    std::string error;
    REQUIRE(DecodeFrame(wire, false, &frame, &error) == FrameResult::kGood);
    CHECK(frame.payload == payload);
    CHECK(frame.wire_bytes == wire.size());
    CHECK_FALSE(frame.was_compressed);
  }
}

TEST_CASE("compressed frames round-trip and are much smaller for text",
          "[frame]") {
  const std::string payload = MailText(64 << 10);
  const std::string wire = Encode(payload, true);
  CHECK(wire.size() < payload.size() / 4);
  CHECK(wire[4] == static_cast<char>(kFrameFlagZstd));
  DecodedFrame frame;
  std::string error;
  REQUIRE(DecodeFrame(wire, true, &frame, &error) == FrameResult::kGood);
  CHECK(frame.payload == payload);
  CHECK(frame.wire_bytes == wire.size());
  CHECK(frame.was_compressed);
}

TEST_CASE("short and incompressible payloads are sent uncompressed",
          "[frame]") {
  for (const std::string& payload :
       {MailText(kMinCompressSize - 1), RandomBytes(4096, 2)}) {
    const std::string wire = Encode(payload, true);
    CHECK(wire[4] == 0);
    CHECK(wire.size() == kFrameHeaderSize + payload.size());
  }
}

TEST_CASE("payloads at the limit round-trip and one byte more is refused",
          "[frame]") {
  std::string payload(kMaxFramePayload, 'z');
  for (bool compress : {false, true}) {
    const std::string wire = Encode(payload, compress);
    DecodedFrame frame;
    std::string error;
    REQUIRE(DecodeFrame(wire, true, &frame, &error) == FrameResult::kGood);
    CHECK(frame.was_compressed == compress);
    CHECK(frame.payload == payload);
  }
  payload.push_back('z');
  std::string out = "kept";
  const absl::Status status = EncodeFrame(payload, true, &out);
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(out == "kept");
}

TEST_CASE("a stream fed in pieces of any size yields the same frames",
          "[frame]") {
  std::vector<std::string> payloads = {
      MailText(1000, 1),  "",    RandomBytes(90000, 4), RandomBytes(700, 3),
      MailText(20000, 2), "tail"};
  std::string stream;
  for (size_t i = 0; i < payloads.size(); ++i) {
    REQUIRE(EncodeFrame(payloads[i], i % 2 == 0, &stream).ok());
  }
  // Pieces of 100003 bytes make the reader compact a partly consumed buffer.
  for (size_t piece :
       {size_t{1}, size_t{7}, size_t{4096}, size_t{100003}, stream.size()}) {
    FrameReader reader(/*allow_compressed=*/true);
    std::vector<std::string> got;
    for (size_t pos = 0; pos < stream.size(); pos += piece) {
      reader.Feed(absl::string_view(stream).substr(pos, piece));
      DecodedFrame frame;
      std::string error;
      FrameResult r;
      while ((r = reader.Next(&frame, &error)) == FrameResult::kGood) {
        got.push_back(frame.payload);
      }
      REQUIRE(r == FrameResult::kNeedMore);
    }
    CHECK(got == payloads);
    CHECK(reader.buffered() == 0);
  }
}

TEST_CASE("a truncated frame needs more bytes", "[frame]") {
  for (bool compress : {false, true}) {
    const std::string wire = Encode(MailText(2000), compress);
    for (size_t n = 0; n < wire.size(); ++n) {
      DecodedFrame frame;
      std::string error;
      REQUIRE(DecodeFrame(wire.substr(0, n), true, &frame, &error) ==
              FrameResult::kNeedMore);
    }
  }
}

TEST_CASE("garbage bytes are a bad frame, never a crash", "[frame]") {
  DecodedFrame frame;
  std::string error;
  // An HTTP client on the replication port: "GET " is a 542 MB length.
  REQUIRE(DecodeFrame("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true, &frame,
                      &error) == FrameResult::kBad);
  CHECK(error == "frame of 542393671 bytes exceeds the limit of 68157440");
  for (uint32_t seed = 0; seed < 2000; ++seed) {
    const std::string junk = RandomBytes(1 + seed % 300, seed);
    REQUIRE(DecodeFrame(junk, seed % 2 == 0, &frame, &error) !=
            FrameResult::kGood);
  }
}

TEST_CASE("every single-bit flip in a frame is detected", "[frame]") {
  for (bool compress : {false, true}) {
    const std::string wire = Encode(MailText(600), compress);
    const std::string next = Encode("next frame", false);
    REQUIRE(wire[4] == (compress ? 1 : 0));
    for (size_t bit = 0; bit < wire.size() * 8; ++bit) {
      std::string bad = wire;
      bad[bit / 8] = static_cast<char>(bad[bit / 8] ^ (1 << (bit % 8)));
      DecodedFrame frame;
      std::string error;
      INFO("compress=" << compress << " bit=" << bit);
      REQUIRE(DecodeFrame(bad, true, &frame, &error) != FrameResult::kGood);
      REQUIRE(DecodeFrame(bad + next, true, &frame, &error) !=
              FrameResult::kGood);
    }
  }
}

TEST_CASE("a header declaring 100 MiB is bad before any payload arrives",
          "[frame]") {
  const std::string header = RawFrame("", 0, 100u << 20);
  DecodedFrame frame;
  std::string error;
  REQUIRE(DecodeFrame(header.substr(0, 4), true, &frame, &error) ==
          FrameResult::kBad);
  CHECK(error == "frame of 104857600 bytes exceeds the limit of 68157440");
  FrameReader reader(/*allow_compressed=*/false);
  reader.Feed(header);
  REQUIRE(reader.Next(&frame, &error) == FrameResult::kBad);
  // The limit itself is allowed: the reader waits for the payload.
  REQUIRE(DecodeFrame(RawFrame("", 0, kMaxFramePayload), true, &frame,
                      &error) == FrameResult::kNeedMore);
}

TEST_CASE("a compressed frame is bad when compression was not negotiated",
          "[frame]") {
  const std::string wire = Encode(MailText(4000), true);
  DecodedFrame frame;
  std::string error;
  REQUIRE(DecodeFrame(wire.substr(0, 5), false, &frame, &error) ==
          FrameResult::kBad);
  CHECK(error == "compressed frame but compression was not negotiated");
  FrameReader reader(/*allow_compressed=*/false);
  reader.Feed(wire);
  REQUIRE(reader.Next(&frame, &error) == FrameResult::kBad);
}

TEST_CASE("unknown flag bits are a bad frame", "[frame]") {
  for (int bit = 1; bit < 8; ++bit) {
    const std::string wire =
        RawFrame("payload", static_cast<uint8_t>(1 << bit));
    DecodedFrame frame;
    std::string error;
    REQUIRE(DecodeFrame(wire.substr(0, 5), true, &frame, &error) ==
            FrameResult::kBad);
    CHECK(error == absl::StrCat("unknown flags 0x",
                                absl::Hex(1 << bit, absl::kZeroPad2)));
  }
}

TEST_CASE("a zstd bomb is refused without allocating its content", "[frame]") {
  const std::string declared =
      RawFrame(CompressedZeros(70 << 20, true), kFrameFlagZstd);
  const std::string undeclared =
      RawFrame(CompressedZeros(70 << 20, false), kFrameFlagZstd);
  CHECK(declared.size() < (1 << 20));
  DecodedFrame frame;
  std::string error;
  g_largest_allocation = 0;
  REQUIRE(DecodeFrame(declared, true, &frame, &error) == FrameResult::kBad);
  CHECK(error ==
        "zstd: content of 73400320 bytes exceeds the limit of 68157440");
  REQUIRE(DecodeFrame(undeclared, true, &frame, &error) == FrameResult::kBad);
  CHECK(error == "zstd: content size not declared");
  // 60 MiB is within the limit, but 13 bytes cannot hold that many blocks.
  REQUIRE(DecodeFrame(
              RawFrame(RleZstdFrame(60 << 20, 100 << 10, 'a'), kFrameFlagZstd),
              true, &frame, &error) == FrameResult::kBad);
  CHECK(error == "zstd: content of 62914560 bytes is impossible in 13 bytes");
  CHECK(g_largest_allocation.load() < (1 << 20));
  // The tracker does see the buffer of a decompression that gets that far.
  REQUIRE(DecodeFrame(
              RawFrame(RleZstdFrame(500 << 10, 100 << 10, 'a'), kFrameFlagZstd),
              true, &frame, &error) == FrameResult::kBad);
  CHECK(g_largest_allocation.load() >= (500 << 10));
}

TEST_CASE(
    "compressed payloads must be exactly one zstd frame of the declared size",
    "[frame]") {
  DecodedFrame frame;
  std::string error;
  const std::string rle = RleZstdFrame(100 << 10, 100 << 10, 'a');
  REQUIRE(DecodeFrame(RawFrame(rle, kFrameFlagZstd), true, &frame, &error) ==
          FrameResult::kGood);
  CHECK(frame.payload == std::string(100 << 10, 'a'));
  REQUIRE(DecodeFrame(RawFrame(rle + rle, kFrameFlagZstd), true, &frame,
                      &error) == FrameResult::kBad);
  CHECK(error == "zstd: 13 bytes after the compressed frame");
  REQUIRE(DecodeFrame(
              RawFrame(RleZstdFrame(100 << 10, 50 << 10, 'a'), kFrameFlagZstd),
              true, &frame, &error) == FrameResult::kBad);
  REQUIRE(DecodeFrame(RawFrame("not zstd at all", kFrameFlagZstd), true, &frame,
                      &error) == FrameResult::kBad);
  CHECK(error == "zstd: not a zstd frame");
}

TEST_CASE("a reader stays bad after a bad frame", "[frame]") {
  FrameReader reader(/*allow_compressed=*/true);
  reader.Feed(Encode("first", false));
  reader.Feed(RawFrame("x", 0x80));
  DecodedFrame frame;
  std::string error;
  REQUIRE(reader.Next(&frame, &error) == FrameResult::kGood);
  CHECK(frame.payload == "first");
  REQUIRE(reader.Next(&frame, &error) == FrameResult::kBad);
  CHECK(error == "unknown flags 0x80");
  reader.Feed(Encode("valid", false));
  error.clear();
  REQUIRE(reader.Next(&frame, &error) == FrameResult::kBad);
  CHECK(error == "unknown flags 0x80");
  CHECK(reader.buffered() == 0);
}

}  // namespace
}  // namespace mailrepl::transport
