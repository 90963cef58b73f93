// File: common/clock.h
//
// The clock that leases, fencing and every other timeout that decides
// safety are measured with (docs/operations.md "Clocks").
//
// It is CLOCK_BOOTTIME: monotonic, so neither NTP, `date -s` nor a stepped
// wall clock moves it, and unlike CLOCK_MONOTONIC it keeps counting while
// the machine is suspended, so a host (or VM) frozen past its lease sees
// that the lease ran out when it wakes. Its values mean nothing across
// machines or reboots: they are compared only with values from the same
// process (or, for the coordinator's database, the same boot). Wall-clock
// time (absl::Now()) stays in logs, history and what operators read.
//
// Thread-safe.
#ifndef MAILREPL_COMMON_CLOCK_H_
#define MAILREPL_COMMON_CLOCK_H_

#include <time.h>

#include <cstdint>

#include "absl/time/time.h"

namespace mailrepl {

// Nanoseconds since boot (CLOCK_BOOTTIME); never goes back.
inline int64_t BootNanos() {
  timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

inline int64_t BootMillis() { return BootNanos() / 1'000'000; }

// The same as a Duration since boot.
inline absl::Duration SinceBoot() { return absl::Nanoseconds(BootNanos()); }

}  // namespace mailrepl

#endif  // MAILREPL_COMMON_CLOCK_H_
