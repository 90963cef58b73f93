// The replica's refusals: each cause has its own wire code, and the master's
// client reacts to each as docs/protocol.md ("Errors") says: retry, or stop
// and report.
#include <catch2/catch.hpp>

#include "absl/status/status.h"
#include "syncclient/refusal.h"

namespace mailrepl::sync {
namespace {

TEST_CASE("each refusal reaches the client as the reaction its cause needs", "[sync]") {
  struct Row {
    syncpb::ErrorCode code;
    absl::StatusCode reaction;
  };
  const Row row = GENERATE(values<Row>({
      // Retried: reconnecting (the handshake resumes at the replica's LSN,
      // or finds the fork point) or waiting helps.
      {syncpb::GAP, absl::StatusCode::kUnavailable},
      {syncpb::RECORDS_DIFFER, absl::StatusCode::kUnavailable},
      {syncpb::NOT_REPLICA, absl::StatusCode::kUnavailable},
      {syncpb::SHUTTING_DOWN, absl::StatusCode::kUnavailable},
      {syncpb::APPLY_FAILED, absl::StatusCode::kUnavailable},
      {syncpb::DISK_FULL, absl::StatusCode::kResourceExhausted},
      // Stop and report: only a person or a newer epoch changes these.
      {syncpb::STALE_EPOCH, absl::StatusCode::kFailedPrecondition},
      {syncpb::DIVERGED, absl::StatusCode::kFailedPrecondition},
      {syncpb::SLOT_FAILED, absl::StatusCode::kFailedPrecondition},
      {syncpb::WRONG_STORE, absl::StatusCode::kFailedPrecondition},
      {syncpb::PROTOCOL_VERSION, absl::StatusCode::kFailedPrecondition},
      {syncpb::UNAUTHENTICATED, absl::StatusCode::kPermissionDenied},
      {syncpb::BAD_FRAME, absl::StatusCode::kInvalidArgument},
  }));
  INFO(syncpb::ErrorCode_Name(row.code));
  // The server's refusal, as Session() sends it, and the client's reading.
  const absl::Status refused = Refuse(row.code, "why", /*epoch=*/7, /*lsn=*/42);
  const std::optional<syncpb::Error> wire = RefusalFor(refused);
  REQUIRE(wire.has_value());
  CHECK(wire->code() == row.code);
  CHECK(wire->message() == "why");
  CHECK(wire->epoch() == 7);
  CHECK(wire->lsn() == 42);
  const absl::Status client = FromErrorFrame(*wire, "127.0.0.1:1");
  CHECK(client.code() == row.reaction);
  // The operator reads the cause by name, not "stale epoch" for everything.
  CHECK(client.message() ==
        "sync server 127.0.0.1:1: " + syncpb::ErrorCode_Name(row.code) + ": why");
}

TEST_CASE("a failure without a refusal code maps by its status code", "[sync]") {
  CHECK(RefusalFor(absl::InvalidArgumentError("x"))->code() == syncpb::BAD_FRAME);
  CHECK(RefusalFor(absl::ResourceExhaustedError("x"))->code() == syncpb::DISK_FULL);
  CHECK(RefusalFor(absl::DataLossError("x"))->code() == syncpb::APPLY_FAILED);
  // A broken or timed-out connection gets no Error frame: nobody reads it.
  CHECK_FALSE(RefusalFor(absl::UnavailableError("closed")).has_value());
  CHECK_FALSE(RefusalFor(absl::DeadlineExceededError("silent")).has_value());
  CHECK_FALSE(RefusalFor(absl::OkStatus()).has_value());
}

}  // namespace
}  // namespace mailrepl::sync
