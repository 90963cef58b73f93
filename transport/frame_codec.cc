#include "transport/frame_codec.h"

#include <zstd.h>

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"

namespace mailrepl::transport {
namespace {

// Level 1: the stream is latency-bound, and level 1 already shrinks mail
// text several times at several hundred MB/s.
constexpr int kZstdLevel = 1;
// A zstd block decompresses to at most 128 KiB and costs at least a 3-byte
// block header, so a frame of n bytes cannot hold more than (n / 3) blocks.
constexpr uint64_t kZstdMaxBlockContent = 128 << 10;
constexpr uint64_t kZstdMinBlockBytes = 3;
// A reader keeps at most this much capacity once it has drained its buffer.
constexpr size_t kMaxIdleCapacity = 1 << 20;
// A reader compacts consumed bytes once there are at least this many.
constexpr size_t kCompactThreshold = 64 << 10;

void PutFixed32(char* dst, uint32_t value) {
  for (int i = 0; i < 4; ++i) dst[i] = static_cast<char>(value >> (8 * i));
}

uint32_t GetFixed32(const char* src) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) {
    value |= static_cast<uint32_t>(static_cast<uint8_t>(src[i])) << (8 * i);
  }
  return value;
}

// The CRC covers the length and flags bytes of the header and the payload as
// sent, so that no single-bit error anywhere in a frame goes unnoticed (a
// flipped compression flag would otherwise deliver zstd bytes as a payload).
uint32_t FrameCrc(const char* header, absl::string_view wire_payload) {
  uint32_t crc = crc32c::Extend(0, header, 5);
  return crc32c::Mask(
      crc32c::Extend(crc, wire_payload.data(), wire_payload.size()));
}

void WriteHeader(char* header, uint32_t length, uint8_t flags,
                 absl::string_view wire_payload) {
  PutFixed32(header, length);
  header[4] = static_cast<char>(flags);
  PutFixed32(header + 5, FrameCrc(header, wire_payload));
}

struct ZstdFree {
  void operator()(ZSTD_CCtx* ctx) const { ZSTD_freeCCtx(ctx); }
  void operator()(ZSTD_DCtx* ctx) const { ZSTD_freeDCtx(ctx); }
};

// Per-thread zstd contexts, created on first use and reused: creating a
// context costs more than compressing a small payload.
class ZstdContexts {
 public:
  static ZstdContexts& ForThisThread() {
    thread_local ZstdContexts contexts;
    return contexts;
  }
  // Both return nullptr when zstd cannot allocate.
  ZSTD_CCtx* compressor() {
    if (cctx_ == nullptr) cctx_.reset(ZSTD_createCCtx());
    return cctx_.get();
  }
  ZSTD_DCtx* decompressor() {
    if (dctx_ == nullptr) dctx_.reset(ZSTD_createDCtx());
    return dctx_.get();
  }

 private:
  std::unique_ptr<ZSTD_CCtx, ZstdFree> cctx_;
  std::unique_ptr<ZSTD_DCtx, ZstdFree> dctx_;
};

// Compresses payload into a new frame appended to *out. Returns false, with
// *out unchanged, when zstd fails or compression saves nothing.
bool AppendCompressedFrame(absl::string_view payload, std::string* out) {
  ZSTD_CCtx* cctx = ZstdContexts::ForThisThread().compressor();
  if (cctx == nullptr) return false;
  const size_t start = out->size();
  const size_t bound = ZSTD_compressBound(payload.size());
  out->resize(start + kFrameHeaderSize + bound);
  char* dst = out->data() + start + kFrameHeaderSize;
  // One-shot compression records the content size in the zstd frame header,
  // which the decoder requires.
  const size_t n = ZSTD_compressCCtx(cctx, dst, bound, payload.data(),
                                     payload.size(), kZstdLevel);
  if (ZSTD_isError(n) || n >= payload.size()) {
    out->resize(start);
    return false;
  }
  out->resize(start + kFrameHeaderSize + n);
  char* header = out->data() + start;
  WriteHeader(header, static_cast<uint32_t>(n), kFrameFlagZstd,
              absl::string_view(header + kFrameHeaderSize, n));
  return true;
}

std::string ZstdError(size_t code) {
  return absl::StrCat("zstd: ", ZSTD_getErrorName(code));
}

// Decompresses one zstd frame into *out, allocating no more than the content
// size the frame declares, and only once that size is known to be within
// kMaxFramePayload and possible for the compressed size.
bool Decompress(absl::string_view src, std::string* out, std::string* error) {
  if (src.size() < 4 || GetFixed32(src.data()) != ZSTD_MAGICNUMBER) {
    *error = "zstd: not a zstd frame";
    return false;
  }
  const size_t frame_size =
      ZSTD_findFrameCompressedSize(src.data(), src.size());
  if (ZSTD_isError(frame_size)) {
    *error = ZstdError(frame_size);
    return false;
  }
  if (frame_size != src.size()) {
    *error = absl::StrCat("zstd: ", src.size() - frame_size,
                          " bytes after the compressed frame");
    return false;
  }
  const unsigned long long size =
      ZSTD_getFrameContentSize(src.data(), src.size());
  if (size == ZSTD_CONTENTSIZE_ERROR) {
    *error = "zstd: unreadable frame header";
    return false;
  }
  if (size == ZSTD_CONTENTSIZE_UNKNOWN) {
    *error = "zstd: content size not declared";
    return false;
  }
  if (size > kMaxFramePayload) {
    *error = absl::StrCat("zstd: content of ", size,
                          " bytes exceeds the limit of ", kMaxFramePayload);
    return false;
  }
  const uint64_t possible =
      (src.size() / kZstdMinBlockBytes) * kZstdMaxBlockContent;
  if (size > possible) {
    *error = absl::StrCat("zstd: content of ", size, " bytes is impossible in ",
                          src.size(), " bytes");
    return false;
  }
  ZSTD_DCtx* dctx = ZstdContexts::ForThisThread().decompressor();
  if (dctx == nullptr) {
    *error = "zstd: cannot allocate a decompression context";
    return false;
  }
  std::string content(size, '\0');
  const size_t n = ZSTD_decompressDCtx(dctx, content.data(), content.size(),
                                       src.data(), src.size());
  if (ZSTD_isError(n)) {
    *error = ZstdError(n);
    return false;
  }
  if (n != size) {
    *error = absl::StrCat("zstd: content of ", n, " bytes, declared ", size);
    return false;
  }
  *out = std::move(content);
  return true;
}

}  // namespace

absl::Status EncodeFrame(absl::string_view payload, bool compress,
                         std::string* out) {
  if (payload.size() > kMaxFramePayload) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload of ", payload.size(),
                     " bytes exceeds the frame limit of ", kMaxFramePayload));
  }
  if (compress && payload.size() >= kMinCompressSize &&
      AppendCompressedFrame(payload, out)) {
    return absl::OkStatus();
  }
  char header[kFrameHeaderSize];
  WriteHeader(header, static_cast<uint32_t>(payload.size()), 0, payload);
  out->append(header, kFrameHeaderSize);
  out->append(payload.data(), payload.size());
  return absl::OkStatus();
}

FrameResult DecodeFrame(absl::string_view data, bool allow_compressed,
                        DecodedFrame* frame, std::string* error) {
  // Judge each header field as soon as its bytes are present.
  if (data.size() >= 4) {
    const uint32_t length = GetFixed32(data.data());
    if (length > kMaxFramePayload) {
      *error = absl::StrCat("frame of ", length, " bytes exceeds the limit of ",
                            kMaxFramePayload);
      return FrameResult::kBad;
    }
  }
  if (data.size() >= 5) {
    const uint8_t flags = static_cast<uint8_t>(data[4]);
    if ((flags & ~kFrameFlagZstd) != 0) {
      *error =
          absl::StrCat("unknown flags 0x", absl::Hex(flags, absl::kZeroPad2));
      return FrameResult::kBad;
    }
    if ((flags & kFrameFlagZstd) != 0 && !allow_compressed) {
      *error = "compressed frame but compression was not negotiated";
      return FrameResult::kBad;
    }
  }
  if (data.size() < kFrameHeaderSize) return FrameResult::kNeedMore;

  const uint32_t length = GetFixed32(data.data());
  const bool compressed = (static_cast<uint8_t>(data[4]) & kFrameFlagZstd) != 0;
  if (data.size() - kFrameHeaderSize < length) return FrameResult::kNeedMore;
  const absl::string_view wire_payload = data.substr(kFrameHeaderSize, length);
  if (FrameCrc(data.data(), wire_payload) != GetFixed32(data.data() + 5)) {
    *error = "checksum mismatch";
    return FrameResult::kBad;
  }
  std::string payload;
  if (compressed) {
    if (!Decompress(wire_payload, &payload, error)) return FrameResult::kBad;
  } else {
    payload.assign(wire_payload.data(), wire_payload.size());
  }
  frame->payload = std::move(payload);
  frame->wire_bytes = kFrameHeaderSize + length;
  frame->was_compressed = compressed;
  return FrameResult::kGood;
}

void FrameReader::Feed(absl::string_view bytes) {
  if (bad_) return;  // the stream is unsynchronized: nothing more to decode
  if (consumed_ >= kCompactThreshold && consumed_ * 2 >= buffer_.size()) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  buffer_.append(bytes.data(), bytes.size());
}

FrameResult FrameReader::Next(DecodedFrame* frame, std::string* error) {
  if (bad_) {
    *error = bad_error_;
    return FrameResult::kBad;
  }
  const FrameResult result =
      DecodeFrame(absl::string_view(buffer_).substr(consumed_),
                  allow_compressed_, frame, error);
  if (result == FrameResult::kGood) {
    consumed_ += frame->wire_bytes;
    if (consumed_ == buffer_.size()) {
      consumed_ = 0;
      if (buffer_.capacity() > kMaxIdleCapacity) {
        std::string().swap(buffer_);
      } else {
        buffer_.clear();
      }
    }
  } else if (result == FrameResult::kBad) {
    bad_ = true;
    bad_error_ = *error;
    std::string().swap(buffer_);
    consumed_ = 0;
  }
  return result;
}

}  // namespace mailrepl::transport
