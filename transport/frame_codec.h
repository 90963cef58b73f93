// File: transport/frame_codec.h
//
// The framing of the replication stream: an I/O-free codec that turns
// payloads (serialized protobufs, which it does not parse) into wire frames
// and back, in the shape of Asio's request_parser: decoding answers good,
// bad or need-more.
//
// Wire frame (all integers little-endian):
//   length  u32  payload bytes as sent on the wire
//   flags   u8   bit 0: payload is zstd-compressed; other bits must be 0
//   crc     u32  crc32c::Mask(CRC-32C of the 5 bytes of length and flags,
//                followed by the payload bytes as sent)
//   payload      `length` bytes
// The CRC covers the header too: were it over the payload alone, flipping
// the compression flag of a compressed frame would deliver its zstd bytes as
// a valid payload.
// Both the wire length and the decompressed size are limited to
// kMaxFramePayload. A compressed payload is exactly one zstd frame that
// declares its content size. A bad frame leaves the stream unsynchronized:
// the connection must be closed.
//
// Example:
//   std::string wire;
//   RETURN_IF_ERROR(EncodeFrame(request.SerializeAsString(), true, &wire));
//   ...
//   FrameReader reader(/*allow_compressed=*/true);
//   reader.Feed(received_bytes);
//   DecodedFrame frame;
//   std::string error;
//   FrameResult r;
//   while ((r = reader.Next(&frame, &error)) == FrameResult::kGood) {
//     Handle(frame.payload);
//   }
//   if (r == FrameResult::kBad) CloseConnection(error);
//
// Thread safety: EncodeFrame and DecodeFrame are thread-safe (each thread
// keeps its own zstd contexts). FrameReader is thread-compatible: a const
// method may be called concurrently, anything else needs external
// synchronization.
#ifndef MAILREPL_TRANSPORT_FRAME_CODEC_H_
#define MAILREPL_TRANSPORT_FRAME_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace mailrepl::transport {

inline constexpr size_t kFrameHeaderSize = 9;
// Limit on both the wire length and the decompressed size of one payload.
inline constexpr uint32_t kMaxFramePayload = (65u << 20);
// Only bit of the flags byte with a meaning; the others must be zero.
inline constexpr uint8_t kFrameFlagZstd = 0x01;
// Payloads shorter than this are never compressed.
inline constexpr size_t kMinCompressSize = 256;

// Appends one frame holding payload to *out. When compress is true and the
// payload is at least kMinCompressSize bytes, the payload is zstd-compressed
// if that makes it smaller; otherwise it is sent as is.
// Returns kInvalidArgument, leaving *out unchanged, if payload is longer than
// kMaxFramePayload.
absl::Status EncodeFrame(absl::string_view payload, bool compress,
                         std::string* out);

enum class FrameResult {
  kGood,      // *frame holds the first frame
  kNeedMore,  // the frame is incomplete; nothing wrong with it so far
  kBad,       // the bytes can never form a valid frame; *error says why
};

struct DecodedFrame {
  std::string payload;    // decompressed when the frame was compressed
  size_t wire_bytes = 0;  // header + payload as sent: bytes to consume
  bool was_compressed = false;
};

// Decodes the first frame in data. allow_compressed is whether zstd was
// negotiated: when false, a compressed frame is bad. A header that declares
// a length above kMaxFramePayload, or bad flags, is reported as kBad as soon
// as those header bytes are present, before any payload arrives.
// On kBad, *error is a short reason such as "frame of N bytes exceeds the
// limit of M", "checksum mismatch", "unknown flags 0x.." or "zstd: ...".
// *frame is written only on kGood, *error only on kBad.
// Decompression allocates the content size the zstd frame declares, after
// checking it against kMaxFramePayload and against what the compressed bytes
// could possibly hold (a zstd block of at least 3 bytes yields at most
// 128 KiB), so a small frame cannot make the decoder allocate much.
// REQUIRES: frame and error are non-null.
FrameResult DecodeFrame(absl::string_view data, bool allow_compressed,
                        DecodedFrame* frame, std::string* error);

// Splits a byte stream into frames: Feed() the bytes as they arrive, then
// call Next() until it stops returning kGood. Once Next() returns kBad it
// keeps returning kBad with the same error, drops its buffer and ignores
// further Feed() calls.
class FrameReader {
 public:
  explicit FrameReader(bool allow_compressed)
      : allow_compressed_(allow_compressed) {}
  FrameReader(const FrameReader&) = delete;
  FrameReader& operator=(const FrameReader&) = delete;
  FrameReader(FrameReader&&) = default;
  FrameReader& operator=(FrameReader&&) = default;

  // Appends bytes to the internal buffer. Memory stays bounded by
  // kFrameHeaderSize + kMaxFramePayload plus one Feed() as long as the caller
  // drains Next() after every Feed().
  void Feed(absl::string_view bytes);

  // Decodes the next buffered frame; see DecodeFrame for the results.
  FrameResult Next(DecodedFrame* frame, std::string* error);

  // Compression is negotiated after the hello exchange.
  void set_allow_compressed(bool allow) { allow_compressed_ = allow; }

  // Bytes fed but not yet returned as frames.
  size_t buffered() const { return buffer_.size() - consumed_; }

 private:
  bool allow_compressed_;
  std::string buffer_;
  size_t consumed_ = 0;  // prefix of buffer_ already returned as frames
  bool bad_ = false;
  std::string bad_error_;
};

}  // namespace mailrepl::transport

#endif  // MAILREPL_TRANSPORT_FRAME_CODEC_H_
