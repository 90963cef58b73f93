// Rejoin with salvage end to end (docs/operations.md "Rejoin and salvage"):
// an async store whose master takes mail its replica never got, the
// master's whole host SIGKILLed, `replctl promote --force`, more mail to
// the new master, and the old host restarted. Every message the old master
// acknowledged (the 250s smtplib.LMTP recorded) must end up on the new
// master exactly once, with its flags, and the old master must follow.
#include <signal.h>

#include <cstdio>

#include <map>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"
#include "test/cluster_harness.h"
#include "test/process_util.h"

namespace mailrepl::testing {
namespace {

// The value of a header of a message (up to the line's end), "" if none.
std::string Header(const std::string& body, const std::string& name) {
  const std::string head = "\r\n" + body.substr(0, body.find("\r\n\r\n") + 2);
  const std::string key = "\r\n" + name + ": ";
  const size_t at = head.find(key);
  if (at == std::string::npos) return "";
  const size_t start = at + key.size();
  return head.substr(start, head.find("\r\n", start) - start);
}

struct Held {
  int copies = 0;
  int index = -1;  // X-Bench-Index
  uint32_t uid = 0;
  std::vector<std::string> flags;
};

// Every message in USER's INBOX on the slot, by Message-ID.
std::map<std::string, Held> HeldOn(Cluster& c, uint64_t slot, const std::string& user) {
  std::map<std::string, Held> out;
  apipb::Request list;
  list.mutable_list_messages()->set_mailbox("user/" + user);
  absl::StatusOr<apipb::Response> messages = c.Api(slot, list);
  if (messages.status().code() == absl::StatusCode::kNotFound) return out;  // no mail yet
  INFO("slot " << slot << ": " << messages.status());
  REQUIRE(messages.ok());
  for (const apipb::Message& m : messages->messages()) {
    apipb::Request fetch;
    fetch.mutable_fetch_body()->set_mailbox("user/" + user);
    fetch.mutable_fetch_body()->set_uid(m.uid());
    absl::StatusOr<apipb::Response> body = c.Api(slot, fetch);
    REQUIRE(body.ok());
    Held& h = out[Header(body->body(), "Message-ID")];
    ++h.copies;
    CHECK(absl::SimpleAtoi(Header(body->body(), "X-Bench-Index"), &h.index));
    h.flags.assign(m.flags().begin(), m.flags().end());
    h.uid = m.uid();
  }
  return out;
}

bool HostAlive(Cluster& c, const std::string& host) {
  auto s = c.Status();
  if (!s.ok()) return false;
  for (const auto& h : s->hosts()) {
    if (h.host() == host) return h.alive();
  }
  return false;
}

uint64_t MasterOf(Cluster& c, uint64_t store) {
  auto s = c.Status();
  REQUIRE(s.ok());
  for (const auto& st : s->stores()) {
    if (st.store().store_id() == store) return st.store().master_slot_id();
  }
  FAIL("no store " << store);
  return 0;
}

TEST_CASE("in async, salvage on rejoin brings back everything the old master had acknowledged "
          "past the fork point, once each, flags kept, and the old master follows the new one",
          "[salvage][failover]") {
  Cluster c({.net = "127.0.17", .hosts = 2, .slots_per_host = 2, .replicas = 1,
             .lease_ms = 1500, .durability = "async"});
  const std::string eml = WorkloadEml(400);
  // The stores mastered on host1, and their users.
  std::map<uint64_t, uint64_t> old_master;  // store -> slot on host1
  {
    auto s = c.Status();
    REQUIRE(s.ok());
    for (const auto& st : s->stores()) {
      for (const auto& m : st.store().members()) {
        if (m.slot_id() == st.store().master_slot_id() && m.host() == "host1") {
          old_master[st.store().store_id()] = m.slot_id();
        }
      }
    }
  }
  REQUIRE(!old_master.empty());
  std::set<std::string> users;  // of those stores
  for (const auto& [user, store] : c.info().users()) {
    if (old_master.contains(store)) users.insert(user);
  }
  REQUIRE(!users.empty());

  // 1. Mail that replicates.
  std::map<int, Cluster::Outcome> acked = c.Deliver(eml, 0, 100, 2, 30);
  REQUIRE(Cluster::Count(acked, 250) == 100);
  REQUIRE(c.WaitCaughtUp(absl::Seconds(60)));

  // Each user's last UID on the old master at the fork point.
  std::map<std::string, uint32_t> fork_uid;
  for (const std::string& user : users) {
    for (const auto& [id, h] : HeldOn(c, old_master.at(c.StoreOf(user)), user)) {
      fork_uid[user] = std::max(fork_uid[user], h.uid);
    }
  }

  // 2. The replicas' host dies; host1's masters go on taking mail (the
  // coordinator renews their leases) that no replica has.
  c.Signal("host2", SIGKILL);
  std::map<int, Cluster::Outcome> past_fork = c.Deliver(eml, 100, 150, 2, 0);
  int acked_past_fork = 0;
  for (const auto& [i, o] : past_fork) {
    if (o.code == 250 && users.contains(o.user)) ++acked_past_fork;
    if (o.code == 250) acked[i] = o;
  }
  REQUIRE(acked_past_fork > 10);
  int flagged = 0;
  // Flags set on the old master, on messages past the fork point: salvage
  // keeps them.
  std::map<std::string, std::vector<std::string>> flags_on_old;  // Message-ID -> flags
  for (const auto& [store, slot] : old_master) {
    for (const std::string& user : users) {
      if (c.StoreOf(user) != store) continue;
      apipb::Request list;
      list.mutable_list_messages()->set_mailbox("user/" + user);
      auto messages = c.Api(slot, list);
      if (messages.status().code() == absl::StatusCode::kNotFound) continue;
      REQUIRE(messages.ok());
      auto st = c.Status();
      REQUIRE(st.ok());
      uint64_t epoch = 0;
      for (const auto& s : st->stores()) {
        if (s.store().store_id() == store) epoch = s.store().epoch();
      }
      apipb::Request flag;
      flag.set_epoch(epoch);
      flag.mutable_set_flags()->set_mailbox("user/" + user);
      flag.mutable_set_flags()->set_op(apipb::SetFlags::ADD);
      flag.mutable_set_flags()->add_flags("\\Flagged");
      flag.mutable_set_flags()->add_flags("$Salvaged");
      for (const apipb::Message& m : messages->messages()) {
        if (m.uid() > fork_uid[user] && m.uid() % 2 == 0) {
          flag.mutable_set_flags()->add_uids(m.uid());
        }
      }
      flagged += flag.set_flags().uids_size();
      if (flag.set_flags().uids_size() > 0) {
        auto flagged = c.Api(slot, flag);
        INFO(flagged.status());
        REQUIRE(flagged.ok());
      }
      for (const auto& [id, h] : HeldOn(c, slot, user)) {
        if (h.uid > fork_uid[user]) flags_on_old[id] = h.flags;
      }
    }
  }

  REQUIRE(flagged > 0);

  // 3. host1 dies; host2 comes back; its replicas are promoted.
  c.Signal("host1", SIGKILL);
  c.Restart("host2");
  REQUIRE(WaitFor([&] { return !HostAlive(c, "host1") && HostAlive(c, "host2"); },
                  absl::Seconds(30), absl::Milliseconds(50)));
  for (const auto& [store, slot] : old_master) {
    RunResult p = c.Replctl({"promote", absl::StrCat(store), "--force"});
    INFO(p.out << p.err);
    REQUIRE(p.exit == 0);
    REQUIRE(MasterOf(c, store) != slot);
  }
  // The fork is real: the new masters lack mail the old ones acknowledged.
  int missing_before = 0;
  for (const std::string& user : users) {
    std::set<int> on_new = c.IndexesOn(MasterOf(c, c.StoreOf(user)), user);
    for (const auto& [i, o] : past_fork) {
      if (o.code == 250 && o.user == user && !on_new.contains(i)) ++missing_before;
    }
  }
  INFO("acknowledged past the fork point: " << acked_past_fork);
  REQUIRE(missing_before > 0);

  // 4. More mail, to the new masters.
  std::map<int, Cluster::Outcome> after = c.Deliver(eml, 250, 100, 2, 30);
  CHECK(Cluster::NearlyAllAcked(after));
  for (const auto& [i, o] : after) {
    if (o.code == 250) acked[i] = o;
  }

  // 5. The old host returns: its slots follow the new masters, and what
  // they had set aside is salvaged and reported.
  c.Restart("host1");
  for (const auto& [store, slot] : old_master) {
    INFO("store " << store);
    REQUIRE(WaitFor(
        [&] {
          RunResult h = c.Replctl({"history", "--store", absl::StrCat(store)});
          return absl::StrContains(h.out, "salvage") &&
                 absl::StrContains(h.out, absl::StrCat("slot ", slot, " LSN"));
        },
        absl::Seconds(90), absl::Milliseconds(200)));
  }
  REQUIRE(c.WaitCaughtUp(absl::Seconds(60)));

  // Every acknowledged message of those users is on the new master exactly
  // once; those flagged on the old master kept their flags.
  int checked = 0;
  for (const std::string& user : users) {
    const uint64_t store = c.StoreOf(user);
    const uint64_t master = MasterOf(c, store);
    std::map<std::string, Held> held = HeldOn(c, master, user);
    std::map<int, const Held*> by_index;
    for (const auto& [id, h] : held) {
      INFO("message " << id << " to " << user << " on slot " << master);
      CHECK(h.copies == 1);
      by_index[h.index] = &h;
      auto f = flags_on_old.find(id);
      if (f != flags_on_old.end()) CHECK(h.flags == f->second);
    }
    for (const auto& [i, o] : acked) {
      if (o.user != user) continue;
      INFO("acknowledged message " << i << " to " << user << " on slot " << master);
      CHECK(by_index.contains(i));
      ++checked;
    }
    // The old master's slot, now a replica, holds the same.
    const uint64_t old = old_master.at(store);
    std::map<std::string, Held> on_old = HeldOn(c, old, user);
    CHECK(on_old.size() == held.size());
  }
  CHECK(checked >= acked_past_fork);
  RunResult history = c.Replctl({"history"});
  INFO(history.out);
  for (absl::string_view line : absl::StrSplit(history.out, '\n')) {
    if (absl::StrContains(line, "salvage")) std::printf("%.*s\n", int(line.size()), line.data());
  }
  std::printf("acknowledged past the fork point: %d, flagged there: %d, acknowledged in all: %d\n",
              acked_past_fork, flagged, checked);
  CHECK(absl::StrContains(history.out, "appended to master slot"));
}

}  // namespace
}  // namespace mailrepl::testing
