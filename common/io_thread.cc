#include "common/io_thread.h"

#include <cstdlib>

#include "common/log.h"

namespace mailrepl {
namespace {
thread_local bool on_io_thread = false;
}  // namespace

IoThreadScope::IoThreadScope() : was_(on_io_thread) { on_io_thread = true; }
IoThreadScope::~IoThreadScope() { on_io_thread = was_; }

bool OnIoThread() { return on_io_thread; }

void CheckMayBlock(const char* what) {
#ifndef NDEBUG
  if (on_io_thread) {
    LogLine(Severity::kError, "blocking call on an io thread",
            Kv("call", what) + Kv("fix", "run it with Offload() (common/offload.h)"));
    std::abort();
  }
#else
  (void)what;
#endif
}

}  // namespace mailrepl
