// Offload: runs blocking work on a worker pool from a coroutine on an io
// thread, and resumes the coroutine on its own executor with the result.
//
// Example (on the io thread):
//   uint64_t last = co_await Offload(pool, [&] { return slot.last_lsn(); });
//
// The work may use the coroutine's locals by reference: the coroutine is
// suspended until it returns. It must not throw (absl::Status carries
// errors); an exception would end the awaiting coroutine.
//
// With the executor of an io_context, the work runs on that io_context's
// thread: Offload(pool, ...) is only off the io thread if `pool` is a
// thread pool's executor (see common/io_thread.h for the rule and its check).
#ifndef MAILREPL_COMMON_OFFLOAD_H_
#define MAILREPL_COMMON_OFFLOAD_H_

#include <type_traits>
#include <utility>

#include "asio.hpp"

namespace mailrepl {

template <typename Executor, typename Fn>
asio::awaitable<std::invoke_result_t<Fn&>> Offload(Executor pool, Fn fn) {
  using Result = std::invoke_result_t<Fn&>;
  co_return co_await asio::co_spawn(
      pool, [&fn]() -> asio::awaitable<Result> { co_return fn(); }, asio::use_awaitable);
}

// For a void fn: Offload(pool, [&] { slot.WaitApplied(); }) works as well.

}  // namespace mailrepl

#endif  // MAILREPL_COMMON_OFFLOAD_H_
