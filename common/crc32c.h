// CRC-32C (Castagnoli), as used by every checksum on disk and on the wire.
// Uses the SSE4.2 crc32 instruction when the CPU has it, a table otherwise.
// Thread-safe: pure functions.
#ifndef MAILREPL_COMMON_CRC32C_H_
#define MAILREPL_COMMON_CRC32C_H_

#include <cstddef>
#include <cstdint>
#include "absl/strings/string_view.h"

namespace mailrepl::crc32c {

// Returns the CRC-32C of data, continuing from init_crc (0 for a fresh CRC).
uint32_t Extend(uint32_t init_crc, const void* data, size_t n);

inline uint32_t Value(absl::string_view data) {
  return Extend(0, data.data(), data.size());
}

// A CRC stored next to the data it covers is masked, as LevelDB does, so that
// a CRC computed over a string that itself contains CRCs is not degenerate.
inline uint32_t Mask(uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}
inline uint32_t Unmask(uint32_t masked) {
  uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace mailrepl::crc32c

#endif  // MAILREPL_COMMON_CRC32C_H_
