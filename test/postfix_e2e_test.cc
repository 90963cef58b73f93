// A real Postfix (Debian's postfix, scripts/deps.sh) routed only by the
// coordinator's socketmap (docs/operations.md "Routing mail with Postfix"):
// a private instance with its own configuration, queue, data and log
// accepts the standard workload over SMTP (Python's smtplib) and delivers
// it over LMTP into a 3-host dev cluster. The first part goes through as
// it comes; the second waits on hold in Postfix's queue while `replctl
// drain` moves every master off one host. The first switch is held open by
// a demote hook (docs/operations.md "Promote and demote hooks") until the
// released backlog has met it: Postfix's log shows a deferral, so the test
// never depends on hitting a 100 ms switch by chance. Meanwhile, and after
// the drain, a third part is submitted live, a new SMTP connection per
// message: every one is accepted (250) at the SMTP edge, none is refused
// with 451 because a store is switching. Every message ends in its user's
// mailbox exactly once (by Message-ID) on every slot of the store, none
// bounced, Postfix's log shows deliveries deferred during the switch and
// retried until sent, and Postfix empties its queue by its own retries
// (the settings of docs/operations.md "A Postfix main.cf") within seconds
// of the drain's end: that time is printed.
//
// Postfix starts a non-default configuration directory only if the default
// /etc/postfix/main.cf lists it in alternate_config_directories: the test
// adds its own fixed directory there once (and leaves the default instance
// alone otherwise). The instance is stopped even when the test fails.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "catch2/catch.hpp"
#include "test/cluster_harness.h"
#include "test/process_util.h"

namespace mailrepl::testing {
namespace {

constexpr char kDomain[] = "example.test";

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The value of header `name` ("Message-ID") in a message, "" if none.
std::string Header(const std::string& message, const std::string& name) {
  const std::string needle = "\r\n" + name + ": ";
  size_t at = message.find(needle);
  if (at == std::string::npos) return "";
  at += needle.size();
  return message.substr(at, message.find("\r\n", at) - at);
}

// Runs a command under a pseudo-terminal (`script -qc`): Postfix's
// commands print their errors only to a terminal or syslog.
RunResult RunTty(const std::string& command) {
  return Run({"/usr/bin/script", "-qec", command, "/dev/null"}, absl::Seconds(60));
}

// A private Postfix instance: configuration in a fixed directory (so that
// alternate_config_directories needs one entry, ever), queue, data and log
// in a fresh directory. Routes come only from the socketmap.
class PrivatePostfix {
 public:
  PrivatePostfix(const std::string& net, const std::string& socketmap)
      : config_dir_("/var/tmp/mailrepl-postfix-e2e-" + net),
        smtp_(net + ".250:2525"),
        smtp_hold_(net + ".250:2526") {
    REQUIRE(::access("/usr/sbin/postfix", X_OK) == 0);  // scripts/deps.sh installs it
    REQUIRE(::chmod(tmp_.path().c_str(), 0755) == 0);   // the postfix user reads the log dir
    AllowConfigDir();
    // A previous run that died may have left this instance running.
    RunTty("/usr/sbin/postfix -c " + config_dir_ + " stop");
    std::filesystem::remove_all(config_dir_);
    std::filesystem::create_directories(config_dir_);
    std::filesystem::create_directories(tmp_.Sub("queue"));
    std::filesystem::create_directories(tmp_.Sub("data"));
    REQUIRE(Run({"/bin/chown", "postfix", tmp_.Sub("data")}).exit == 0);
    {
      std::ofstream master(config_dir_ + "/master.cf");
      // Two SMTP services: one delivers as mail comes, the other puts
      // every message on hold (released all at once later).
      master << smtp_ << " inet n - n - - smtpd\n"
             << smtp_hold_ << " inet n - n - - smtpd -o smtpd_recipient_restrictions="
             << "check_recipient_access,static:HOLD,permit_mynetworks,reject_unauth_destination\n"
             << R"(pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n - 0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
smtp       unix  - - n - - smtp
relay      unix  - - n - - smtp
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
lmtp       unix  - - n - - lmtp
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
)";
      std::ofstream main(config_dir_ + "/main.cf");
    }
    const std::string map = "socketmap:inet:" + socketmap;
    RunResult set =
        Run({"/usr/sbin/postconf", "-c", config_dir_, "-e", "compatibility_level=3.6",
             "queue_directory=" + tmp_.Sub("queue"), "data_directory=" + tmp_.Sub("data"),
             "maillog_file=" + log(), "maillog_file_prefixes=" + tmp_.path(),
             "inet_interfaces=loopback-only", "inet_protocols=ipv4",
             "myhostname=postfix-e2e.localdomain", "mydestination=", "local_recipient_maps=",
             "alias_maps=", "alias_database=", "mynetworks=127.0.0.0/8", "smtpd_peername_lookup=no",
             "smtputf8_enable=no", std::string("relay_domains=") + kDomain,
             "transport_maps=" + map + ":transport", "relay_recipient_maps=" + map + ":mailbox",
             // Retries come fast, so the test ends soon after the drain.
             "queue_run_delay=1s", "minimal_backoff_time=1s", "maximal_backoff_time=2s",
             "lmtp_connect_timeout=5s", "message_size_limit=52428800"});
    INFO(set.out << set.err);
    REQUIRE(set.exit == 0);
  }

  // Starts the instance and waits until it answers SMTP. The destructor
  // stops it, also when this fails half way.
  void Start() {
    started_ = true;
    RunResult start = RunTty("/usr/sbin/postfix -c " + config_dir_ + " start");
    INFO(start.out << start.err << ReadWhole(log()));
    REQUIRE(start.exit == 0);
    // Accepting SMTP: the greeting comes (polled with a deadline).
    REQUIRE(WaitFor(
        [&] {
          return Run({"/usr/bin/python3", "-c",
                      "import smtplib,sys\nh,p=sys.argv[1].rsplit(':',1)\n"
                      "s=smtplib.SMTP(h,int(p),timeout=5)\ns.quit()\n",
                      smtp_},
                     absl::Seconds(10))
                     .exit == 0;
        },
        absl::Seconds(30), absl::Milliseconds(100)));
  }

  ~PrivatePostfix() {
    if (!started_) return;
    RunResult stop = RunTty("/usr/sbin/postfix -c " + config_dir_ + " stop");
    if (stop.exit != 0) {
      // Stop it by its pid rather than leave it running.
      int pid = 0;
      std::string text = ReadWhole(tmp_.Sub("queue/pid/master.pid"));
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &pid) && pid > 1) ::kill(pid, SIGKILL);
    }
  }

  const std::string& config_dir() const { return config_dir_; }
  const std::string& smtp() const { return smtp_; }
  const std::string& smtp_hold() const { return smtp_hold_; }
  std::string log() const { return tmp_.Sub("maillog"); }
  std::string Log() const { return ReadWhole(log()); }

  // `postqueue -p`'s output.
  std::string Queue() const { return Run({"/usr/sbin/postqueue", "-c", config_dir_, "-p"}).out; }
  void Flush() const { Run({"/usr/sbin/postqueue", "-c", config_dir_, "-f"}); }
  // Messages on hold (`postqueue -p` marks their queue ids with '!').
  int Held() const {
    int n = 0;
    for (absl::string_view line : absl::StrSplit(Queue(), '\n')) {
      const size_t end = line.find(' ');
      n += end != absl::string_view::npos && end > 0 && line[end - 1] == '!';
    }
    return n;
  }
  // Releases every held message and asks for delivery now.
  void ReleaseAll() const {
    RunResult r = Run({"/usr/sbin/postsuper", "-c", config_dir_, "-H", "ALL"});
    INFO(r.out << r.err);
    REQUIRE(r.exit == 0);
    Flush();
  }
  // `postmap -q KEY MAP` against this instance's configuration.
  std::string Query(const std::string& key, const std::string& map) const {
    return std::string(absl::StripAsciiWhitespace(
        Run({"/usr/sbin/postmap", "-c", config_dir_, "-q", key, map}).out));
  }

 private:
  // Adds config_dir_ to the default instance's alternate_config_directories
  // unless it is there.
  void AllowConfigDir() {
    RunResult get = Run({"/usr/sbin/postconf", "-h", "alternate_config_directories"});
    REQUIRE(get.exit == 0);
    const std::string now(absl::StripAsciiWhitespace(get.out));
    for (absl::string_view d : absl::StrSplit(now, absl::ByAnyChar(", \t"), absl::SkipEmpty())) {
      if (d == config_dir_) return;
    }
    const std::string value = now.empty() ? config_dir_ : now + ", " + config_dir_;
    RunResult set = Run({"/usr/sbin/postconf", "-e", "alternate_config_directories=" + value});
    INFO(set.out << set.err);
    REQUIRE(set.exit == 0);
  }

  TempDir tmp_;
  std::string config_dir_;
  std::string smtp_;
  std::string smtp_hold_;
  bool started_ = false;
};

// Message-ID -> how many messages in USER's INBOX on the slot carry it.
std::map<std::string, int> MessageIds(Cluster& c, uint64_t slot_id, const std::string& user) {
  std::map<std::string, int> ids;
  apipb::Request list;
  list.mutable_list_messages()->set_mailbox("user/" + user);
  absl::StatusOr<apipb::Response> messages = c.Api(slot_id, list);
  INFO("slot " << slot_id << " user " << user << ": " << messages.status().ToString());
  REQUIRE(messages.ok());
  for (const apipb::Message& m : messages->messages()) {
    apipb::Request fetch;
    fetch.mutable_fetch_body()->set_mailbox("user/" + user);
    fetch.mutable_fetch_body()->set_uid(m.uid());
    absl::StatusOr<apipb::Response> body = c.Api(slot_id, fetch);
    REQUIRE(body.ok());
    ++ids[Header(body->body(), "Message-ID")];
  }
  return ids;
}

// Postfix log lines "QUEUEID: to=<...>, ... status=WORD": queue ids by word.
std::map<std::string, std::set<std::string>> StatusByQueueId(const std::string& log) {
  std::map<std::string, std::set<std::string>> out;  // status -> queue ids
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    const size_t status = line.find(" status=");
    if (status == absl::string_view::npos || !absl::StrContains(line, " to=<")) continue;
    const size_t colon = line.find(": to=<");
    if (colon == absl::string_view::npos) continue;
    const size_t id_start = line.rfind(' ', colon) + 1;
    const std::string id(line.substr(id_start, colon - id_start));
    const size_t word = status + 8;
    const size_t end = line.find_first_of(" (", word);
    out[std::string(line.substr(word, end - word))].insert(id);
  }
  return out;
}

TEST_CASE("Postfix routed by the coordinator's socketmap delivers every message exactly once "
          "while a drain moves every master off a host",
          "[postfix]") {
  constexpr int kFirst = 100;     // delivered as they come
  constexpr int kHeld = 200;      // released into the drain
  constexpr int kLive = 100;      // submitted during and after the drain
  constexpr int kMessages = kFirst + kHeld + kLive;
  // The demote hook holds a fenced master's switch open until the test
  // creates `go` (at most 15 s), after telling it by a `demoting-SLOT` file.
  TempDir hook_dir;
  const std::string hook = hook_dir.Sub("demote-hook");
  const std::string go = hook_dir.Sub("go");
  {
    std::ofstream h(hook);
    h << "#!/bin/sh\n"
      << "[ \"$1\" = demote ] || exit 0\n"
      << "touch " << hook_dir.path() << "/demoting-$3\n"
      << "i=0\n"
      << "while [ ! -e " << go << " ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done\n";
  }
  REQUIRE(::chmod(hook.c_str(), 0755) == 0);
  // Whatever happens, the hook stops holding before the cluster stops.
  struct Go {
    std::string path;
    ~Go() { std::ofstream{path}; }
  };
  // 12 slots: 6 stores, 2 masters per host.
  Cluster c({.net = "127.0.22", .hosts = 3, .slots_per_host = 4, .demote_hook = hook});
  Go release_hook{go};
  REQUIRE_FALSE(c.info().socketmap().empty());
  PrivatePostfix postfix("127.0.22", c.info().socketmap());
  postfix.Start();
  // Postfix itself sees the routes: the store's service address.
  const std::string user0 = "user0";
  const std::string route = postfix.Query(absl::StrCat(user0, "@", kDomain),
                                          "socketmap:inet:" + c.info().socketmap() + ":transport");
  CHECK(route == "lmtp:inet:" + c.store(c.StoreOf(user0)).service_lmtp());
  CHECK(postfix
            .Query(absl::StrCat("nobody@", kDomain),
                   "socketmap:inet:" + c.info().socketmap() + ":transport")
            .empty());

  const std::string eml = WorkloadEml(kMessages);
  auto sent_lines = [&] {
    const std::string log = postfix.Log();
    int n = 0;
    for (size_t at = log.find("status=sent"); at != std::string::npos;
         at = log.find("status=sent", at + 1)) {
      ++n;
    }
    return n;
  };
  auto send = [&](const std::string& server, int start, int count, const std::string& rate) {
    Process sender({"/usr/bin/python3", SMTP_SEND_PY, "--server", server, "--eml-dir", eml,
                    "--start", absl::StrCat(start), "--count", absl::StrCat(count), "--rate", rate,
                    "--record", absl::StrCat(c.dir(), "/smtp_record_", start)});
    const std::optional<int> code = sender.Wait(absl::Seconds(180));
    INFO(sender.Describe());
    REQUIRE(code == 0);  // every message accepted (250)
  };

  // Steady state: the first third is delivered as it comes.
  send(postfix.smtp(), 0, kFirst, "100");
  REQUIRE(WaitFor([&] { return sent_lines() >= kFirst; }, absl::Seconds(60),
                  absl::Milliseconds(50)));

  // The rest waits in Postfix's queue (on hold), then is delivered all at
  // once while the drain runs, so that deliveries meet every switch.
  send(postfix.smtp_hold(), kFirst, kHeld, "0");
  REQUIRE(WaitFor([&] { return postfix.Held() == kHeld; }, absl::Seconds(30),
                  absl::Milliseconds(100)));
  Process drain({Bin("replctl"), "--cluster", c.dir(), "drain", "host1", "--timeout-ms", "30000"});
  // The first store's master is fenced and its demote hook waits: the
  // store answers 451 and its service address is released (the transport
  // map keeps answering it). Release the backlog into that, and submit new
  // mail meanwhile.
  auto demoting = [&] {
    for (const auto& e : std::filesystem::directory_iterator(hook_dir.path())) {
      if (absl::StartsWith(e.path().filename().string(), "demoting-")) return true;
    }
    return false;
  };
  REQUIRE(WaitFor(demoting, absl::Seconds(30), absl::Milliseconds(20)));
  postfix.ReleaseAll();
  const std::string live_record = absl::StrCat(c.dir(), "/smtp_record_live");
  Process live({"/usr/bin/python3", SMTP_SEND_PY, "--server", postfix.smtp(), "--eml-dir", eml,
                "--start", absl::StrCat(kFirst + kHeld), "--count", absl::StrCat(kLive),
                "--rate", "25", "--reconnect", "--record", live_record});
  CHECK(WaitFor([&] { return absl::StrContains(postfix.Log(), "status=deferred"); },
                absl::Seconds(10), absl::Milliseconds(50)));
  // Submissions while the switch is held open (every store has users
  // among them).
  auto live_submitted = [&] {
    const std::string r = ReadWhole(live_record);
    return static_cast<int>(std::count(r.begin(), r.end(), '\n'));
  };
  CHECK(WaitFor([&] { return live_submitted() >= kLive / 3; }, absl::Seconds(30),
                absl::Milliseconds(20)));
  std::ofstream{go};
  REQUIRE(drain.Wait(absl::Seconds(120)).has_value());
  const absl::Time drained = absl::Now();
  INFO(drain.Describe());
  REQUIRE(drain.Wait(absl::ZeroDuration()) == 0);
  CHECK(absl::StrContains(drain.Stdout(), "2 of 2 stores moved"));
  const int sent_when_drained = sent_lines();
  WARN(sent_when_drained - kFirst << " of " << kHeld + kLive
                                  << " released and live messages were delivered before the "
                                     "drain ended");
  // Every live submission, during the switch and after it, was accepted at
  // the SMTP edge (250): none refused with a 451 at RCPT.
  REQUIRE(live.Wait(absl::Seconds(60)).has_value());
  INFO(live.Describe() << ReadWhole(live_record));
  CHECK(live.Wait(absl::ZeroDuration()) == 0);
  CHECK(live_submitted() == kLive);

  // Postfix delivers everything queued by its own retries (no flush).
  REQUIRE(WaitFor([&] { return absl::StrContains(postfix.Queue(), "Mail queue is empty"); },
                  absl::Seconds(180), absl::Milliseconds(100)));
  const absl::Duration to_empty = absl::Now() - drained;
  WARN("Postfix's queue was empty " << absl::FormatDuration(to_empty)
                                    << " after the drain ended");
  // Its retry settings (1 s, backing off to 2 s) bound this to seconds; a
  // failure cached for tens of seconds, or a message left for Postfix's
  // default backoff (300 s), would not be.
  CHECK(to_empty < absl::Seconds(30));

  const std::string log = postfix.Log();
  const auto by_status = StatusByQueueId(log);
  INFO(log.substr(log.size() > 20000 ? log.size() - 20000 : 0));
  CHECK_FALSE(by_status.contains("bounced"));
  CHECK_FALSE(absl::StrContains(log, "status=bounced"));
  REQUIRE(by_status.contains("sent"));
  CHECK(by_status.at("sent").size() == kMessages);
  // Deliveries during the switch were deferred, and retried until sent.
  REQUIRE(by_status.contains("deferred"));
  CHECK(!by_status.at("deferred").empty());
  for (const std::string& id : by_status.at("deferred")) {
    INFO("queue id " << id << " was deferred and never sent");
    CHECK(by_status.at("sent").contains(id));
  }
  WARN(by_status.at("deferred").size() << " messages deferred at least once during the drain");
  // No message went out twice (one "sent" line per message).
  CHECK(sent_lines() == kMessages);

  // Every message in its user's mailbox exactly once, on every slot of the
  // store (replicas caught up first).
  std::map<std::string, std::map<std::string, int>> expected;  // user -> Message-ID -> 1
  for (int i = 0; i < kMessages; ++i) {
    const std::string m = ReadWhole(absl::StrCat(eml, "/", i, ".eml"));
    const std::string to = Header("\r\n" + m, "To");
    expected[to.substr(0, to.find('@'))][Header(m, "Message-ID")] = 1;
  }
  REQUIRE(c.WaitCaughtUp(absl::Seconds(60)));
  for (const auto& [user, ids] : expected) {
    for (uint64_t slot_id : c.Members(c.StoreOf(user))) {
      INFO("user " << user << " on slot " << slot_id);
      CHECK(MessageIds(c, slot_id, user) == ids);
    }
  }
}

}  // namespace
}  // namespace mailrepl::testing
