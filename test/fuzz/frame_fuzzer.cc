// libFuzzer target for the frame codec; built and run by scripts/fuzz.sh.
//
// Input: one control byte, then stream bytes. Control bit 0 asks to repair
// the checksums of the frames in the stream, so that mutations reach the
// flag and zstd checks instead of stopping at the CRC; bits 1-7 choose the
// size of the pieces the stream is fed in. Every input also round-trips
// through EncodeFrame.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/crc32c.h"
#include "transport/frame_codec.h"

namespace mailrepl::transport {
namespace {

void Check(bool condition, const char* what) {
  if (!condition) {
    __builtin_printf("invariant violated: %s\n", what);
    std::abort();
  }
}

uint32_t GetFixed32(const std::string& s, size_t pos) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    v |= static_cast<uint32_t>(static_cast<uint8_t>(s[pos + i])) << (8 * i);
  }
  return v;
}

// Rewrites the CRC of each complete frame, walking the declared lengths.
void RepairChecksums(std::string* stream) {
  size_t pos = 0;
  while (stream->size() - pos >= kFrameHeaderSize) {
    const uint32_t length = GetFixed32(*stream, pos);
    if (length > stream->size() - pos - kFrameHeaderSize) break;
    uint32_t crc = crc32c::Extend(0, stream->data() + pos, 5);
    crc = crc32c::Mask(
        crc32c::Extend(crc, stream->data() + pos + kFrameHeaderSize, length));
    for (int i = 0; i < 4; ++i)
      (*stream)[pos + 5 + i] = static_cast<char>(crc >> (8 * i));
    pos += kFrameHeaderSize + length;
  }
}

void ReadStream(const std::string& stream, size_t piece,
                bool allow_compressed) {
  FrameReader reader(allow_compressed);
  size_t fed = 0;
  size_t returned = 0;
  bool bad = false;
  for (size_t pos = 0; pos < stream.size() && !bad; pos += piece) {
    const absl::string_view bytes =
        absl::string_view(stream).substr(pos, piece);
    reader.Feed(bytes);
    fed += bytes.size();
    DecodedFrame frame;
    std::string error;
    FrameResult r;
    while ((r = reader.Next(&frame, &error)) == FrameResult::kGood) {
      Check(frame.payload.size() <= kMaxFramePayload, "payload within limit");
      Check(frame.wire_bytes >= kFrameHeaderSize &&
                frame.wire_bytes <= kFrameHeaderSize + kMaxFramePayload,
            "wire bytes within limit");
      Check(allow_compressed || !frame.was_compressed, "compression allowed");
      returned += frame.wire_bytes;
      Check(returned + reader.buffered() == fed, "bytes accounted for");
    }
    if (r == FrameResult::kBad) {
      Check(!error.empty(), "bad frame has a reason");
      bad = true;
      Check(reader.Next(&frame, &error) == FrameResult::kBad, "bad is sticky");
    } else {
      Check(reader.buffered() < kFrameHeaderSize + kMaxFramePayload,
            "need-more buffers less than one frame");
    }
  }
}

void RoundTrip(absl::string_view payload, bool compress) {
  std::string wire;
  Check(EncodeFrame(payload, compress, &wire).ok(), "encode");
  DecodedFrame frame;
  std::string error;
  Check(DecodeFrame(wire, true, &frame, &error) == FrameResult::kGood,
        "round trip decodes");
  Check(frame.payload == payload, "round trip payload");
  Check(frame.wire_bytes == wire.size(), "round trip size");
}

}  // namespace
}  // namespace mailrepl::transport

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mailrepl::transport;
  if (size == 0) return 0;
  const uint8_t control = data[0];
  std::string stream(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((control & 1) != 0) RepairChecksums(&stream);
  const size_t piece = (control >> 1) == 0 ? stream.size() + 1 : (control >> 1);
  ReadStream(stream, piece, /*allow_compressed=*/true);
  ReadStream(stream, piece, /*allow_compressed=*/false);
  RoundTrip(stream, (control & 2) != 0);
  return 0;
}
