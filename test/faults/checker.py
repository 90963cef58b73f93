"""The checker: from the client history (JSONL attempts), the nemesis log,
the coordinator's event history and each store's master slot contents
after heal and settle, it decides:

  lost        acknowledged (some attempt answered 250) but not on the
              store's master: must be 0
  duplicates  a message id stored more than once on its master; explained
              iff the id was attempted again after a 4xx or a connection
              failure (the client could not know the first attempt's fate)
  one writer  per store, every epoch's 250s come from one slot, and no
              write acknowledged at an older epoch was SENT after a write
              at a newer epoch had been ANSWERED 250 (overlapping writers)
  check       `replctl check --all` exited 0

When the 250 text carries no epoch ("2.1.5 OK uid N"), a write's epoch is
inferred: the latest mastership (coordinator history: create_store,
failover, promote) of the answering slot that began before the answer
arrived. See docs/faults.md "One writer".
"""
import bisect
import re

CREATE_RE = re.compile(r"created at epoch (\d+): master slot (\d+)")
FAILOVER_RE = re.compile(r"-> slot (\d+)@\S+ at LSN \d+, epoch \d+ -> (\d+)")
PROMOTE_RE = re.compile(r"-> slot (\d+)@\S+, epoch (\d+)")


def masterships(events, wall_minus_mono):
    """store -> [(start_mono, epoch, slot)] in order, from the coordinator's
    history (times converted with the offset between the harness's wall
    clock and monotonic clock; the coordinator's clock is real during
    switches: the nemesis never steps it while one runs)."""
    out = {}
    for e in events:
        kind, d = e.get("kind"), e.get("detail", "")
        st = int(e.get("store_id", 0))
        t = int(e.get("time_ms", 0)) / 1000.0 - wall_minus_mono
        if kind == "create_store":
            m = CREATE_RE.search(d)
            if m:
                out.setdefault(st, []).append((float("-inf"), int(m.group(1)), int(m.group(2))))
        elif kind == "failover":
            m = FAILOVER_RE.search(d)
            if m:
                out.setdefault(st, []).append((t, int(m.group(2)), int(m.group(1))))
        elif kind == "promote":
            m = PROMOTE_RE.search(d)
            if m:
                out.setdefault(st, []).append((t, int(m.group(2)), int(m.group(1))))
    return out


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))], 3)


class Result:
    def __init__(self):
        self.violations = []  # (property, message, [history lines])
        self.figures = {}
        self.unsurvivable = []

    def fail(self, prop, msg, lines=()):
        self.violations.append({"property": prop, "message": msg, "lines": list(lines)})


def check(history, nem_events, coord_events, master_of, master_guids, slot_of_addr,
          wall_minus_mono, check_rc, check_out, data_lost, store_slots):
    """history: list of attempt dicts; master_of: store -> slot; master_guids:
    store -> {guid: count}; slot_of_addr: LMTP addr -> slot id; data_lost:
    [(slot, store, was_master)]; store_slots: store -> [slot ids]."""
    r = Result()
    by_id = {}
    for h in history:
        by_id.setdefault(h["id"], []).append(h)
    for v in by_id.values():
        v.sort(key=lambda h: h["attempt"])

    # Stores that lost every slot's data, or (async) their master's data,
    # cannot keep what they acknowledged: unsurvivable by design.
    unsurvivable = set()
    lost_slots = {s for s, _, _ in data_lost}
    for st, slots in store_slots.items():
        if all(s in lost_slots for s in slots) or any(x == st and m for _, x, m in data_lost):
            unsurvivable.add(st)
    r.unsurvivable = sorted(unsurvivable)

    acked = {i: v for i, v in by_id.items() if any(h["code"] == 250 for h in v)}
    lost, lost_unsurv, dup_expl, dup_unexpl = [], [], [], []
    for i, v in by_id.items():
        st, guid = v[0]["store"], v[0]["guid"]
        n = master_guids.get(st, {}).get(guid, 0)
        if i in acked and n == 0:
            (lost_unsurv if st in unsurvivable else lost).append(i)
        if n > 1:
            retried = any(h["code"] == 0 or 400 <= h["code"] < 500 for h in v[:-1]) and len(v) > 1
            (dup_expl if retried else dup_unexpl).append(i)
    for i in lost:
        r.fail("no loss", "message %s acknowledged 250 but absent from store %d's master slot %s"
               % (i, by_id[i][0]["store"], master_of.get(by_id[i][0]["store"])), by_id[i])
    for i in dup_unexpl:
        st = by_id[i][0]["store"]
        r.fail("no unexplained duplicate", "message %s stored %d times on store %d's master, "
               "never retried after a 4xx or a connection failure"
               % (i, master_guids[st][by_id[i][0]["guid"]], st), by_id[i])

    # --- one writer --------------------------------------------------------
    ms = masterships(coord_events, wall_minus_mono)
    writes = {}
    for h in history:
        if h["code"] == 250:
            writes.setdefault(h["store"], []).append(h)
    overlapping = 0
    overlap_writes = 0
    for st, ws in writes.items():
        ws.sort(key=lambda h: h["answer"])
        m = ms.get(st, [])
        for w in ws:
            w["_slot"] = slot_of_addr.get(w["addr"])
            if w.get("epoch") is not None:
                w["_epoch"] = w["epoch"]
                continue
            cands = [e for (t, e, s) in m if s == w["_slot"] and t <= w["answer"]]
            w["_epoch"] = max(cands) if cands else None
            if w["_epoch"] is None:
                r.fail("one writer", "store %d: 250 from slot %s, which was never its master "
                       "before that answer" % (st, w["_slot"]), [w])
        by_epoch = {}
        for w in ws:
            if w["_epoch"] is not None:
                by_epoch.setdefault(w["_epoch"], []).append(w)
        for e, ew in sorted(by_epoch.items()):
            slots = sorted({w["_slot"] for w in ew})
            if len(slots) > 1:
                r.fail("one writer", "store %d epoch %d: 250s from slots %s" % (st, e, slots),
                       [min((w for w in ew if w["_slot"] == s), key=lambda w: w["answer"]) for s in slots])
        epochs = sorted(by_epoch)
        for idx, e in enumerate(epochs):
            newer = [w for e2 in epochs[idx + 1:] for w in by_epoch[e2]]
            if not newer:
                continue
            first_newer = min(newer, key=lambda w: w["answer"])
            bad = [w for w in by_epoch[e] if w["send"] > first_newer["answer"]]
            if bad:
                overlapping += 1
                overlap_writes += len(bad)
                last = max(bad, key=lambda w: w["send"])
                r.fail("one writer",
                       "store %d: %d writes acknowledged at epoch %d (slot %s) were sent after a "
                       "write at epoch %d (slot %s) had been answered 250; overlap %.3f s (from "
                       "%.3f to %.3f)" % (st, len(bad), e, bad[0]["_slot"], first_newer["_epoch"],
                                          first_newer["_slot"], last["send"] - first_newer["answer"],
                                          first_newer["answer"], last["send"]),
                       [first_newer] + bad[:3] + ([last] if len(bad) > 3 else []))
    if check_rc != 0:
        r.fail("replctl check --all", "exit %s: %s" % (check_rc, check_out[-1500:]))

    # --- figures ------------------------------------------------------------
    answers = {}
    for st, ws in writes.items():
        answers[st] = sorted((w["send"], w["answer"]) for w in ws)
    rec = {}
    for ev in nem_events:
        if ev.get("op") not in ("start", "heal"):
            continue
        for st in ev.get("affected", []):
            lst = answers.get(st, [])
            i = bisect.bisect_left(lst, (ev["t"], 0))
            if i < len(lst):
                key = "%s/%s" % (ev["kind"], "fault" if ev["op"] == "start" else "heal")
                rec.setdefault(key, []).append(lst[i][1] - ev["t"])
    kinds = {}
    for ev in nem_events:
        if ev.get("op") == "start":
            k = ev["kind"] + ("/" + ev["sub"] if ev.get("sub") else "")
            kinds[k] = kinds.get(k, 0) + 1
    r.figures = {
        "attempts": len(history),
        "messages": len(by_id),
        "acknowledged": len(acked),
        "lost": len(lost),
        "lost_unsurvivable_by_design": len(lost_unsurv),
        "duplicated_explained": len(dup_expl),
        "duplicated_unexplained": len(dup_unexpl),
        "overlapping_writer_intervals": overlapping,
        "overlapping_writes": overlap_writes,
        "faults_by_kind": kinds,
        "recovery_s": {k: {"n": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99)}
                       for k, v in sorted(rec.items())},
        "recovery_raw": rec,
    }
    return r
