"""Reading what a slot holds once its replicad is stopped: `mailctl --slot
DIR list --json` per mailbox. Returns GUID -> count of live (not expunged)
messages, plus the raw rows."""
import json
import os
import subprocess


def read_slot(mailctl, data_dir):
    def run(*args):
        r = subprocess.run([mailctl, "--slot", data_dir] + list(args),
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("mailctl --slot %s %s: exit %d: %s" %
                               (data_dir, " ".join(args), r.returncode, r.stderr.strip()))
        return json.loads(r.stdout)
    counts = {}
    rows = []
    for mb in run("list", "--json")["mailboxes"]:
        for m in run("list", mb["name"], "--json")["messages"]:
            if m.get("expunged"):
                continue
            counts[m["guid"]] = counts.get(m["guid"], 0) + 1
            rows.append({"mailbox": mb["name"], "uid": m["uid"], "guid": m["guid"]})
    return counts, rows


def pending_salvage(data_dirs):
    """Salvage files not yet finished (SLOT/salvage/*.salvage)."""
    out = []
    for d in data_dirs:
        sd = os.path.join(d, "salvage")
        try:
            out += [os.path.join(sd, f) for f in os.listdir(sd) if f.endswith(".salvage")]
        except FileNotFoundError:
            pass
    return out
