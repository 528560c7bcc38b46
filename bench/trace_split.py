#!/usr/bin/env python3
"""Splits the time of a traced run (switchyard up --trace DIR, or switchyard-worker
--trace DIR on each machine) into compute, communication, and ranks waiting for each other.

Every wait on a worker's compute thread is cut at the moment the thing it waited for was
ready on the other side:
  - a receive (recv span): when its sender began handing that very message to ZeroMQ
    (the start of the sender's send span with the same step, op, tag, chunk and ranks);
    before that the receiver waited for the sender to get there, after it for the bytes
    to travel and be read;
  - the wait for the gradient all-reduce's last buckets: the last other rank's end of
    backward ("backward done"); after it, the buckets travelling;
  - the wait for the coordinator's next command: the last other rank's report (the end of
    its "step" span); after it, the coordinator's round trip;
  - time inside sends, and waiting for ZeroMQ to let go of sent buffers: communication
    throughout; put-off weight gradients computed inside a wait ("fill",
    wire.fill_waits) are compute.
Two views, per step:
  - exposed communication: the step's critical path, walked back from a rank's next
    command to the step's start, jumping at every wait to the rank and moment that ended
    it; its time with bytes on their way (the parts after "ready" above) is communication
    no compute hid; the rest of the path is some rank's compute (the slowest one's, where
    the ranks differ: that difference is the imbalance, not communication);
  - per rank: its own waits, split at "ready" into communicating and waiting for other ranks.
A step's period on a rank runs from its "step" span to the next one (of the same epoch,
the next step); periods with a checkpoint save are left out, and so is a step any rank
of its epoch has no whole period for. Per step, the means over the ranks; printed:
medians over steps (the first --skip left out). Files cut short (a full disk, a killed
worker) are read up to their last whole event. With --ab the even
and odd steps are reported apart (the A/B benches: SWITCHYARD_OVERLAP_AB and the like).
The files of one machine share a clock. Files of other hosts (the "host" of their
process_name) are moved onto the first file's clock by the least send-to-receive time
each way between the hosts (NTP's estimate: exact when the fastest messages take as long
either way).

usage: bench/trace_split.py DIR [--skip N] [--ab] [--json]
"""
import bisect
import collections
import glob
import json
import os
import statistics
import sys

EPS = 1.0  # us: two times this close are the same moment (the files round to 0.016 us)


def load(path):
    """The events of one file, up to its last whole one: the writer puts one per line."""
    events = []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip().lstrip("[").rstrip(",").rstrip("]").strip()
            if not line:
                continue
            try:
                e = json.loads(line)
            except ValueError:
                break  # cut short: nothing after it was written whole
            if isinstance(e, dict) and "name" in e and "ph" in e:
                events.append(e)
    return events


def msg_key(a):
    """A message's identity in a send's or a receive's args (the epoch: absent in old files)."""
    return (a.get("epoch"), a["step"], a["op"], a["tag"], a["chunk"], a["src"], a["dst"])


def host_of(ev):
    for e in ev:
        if e["name"] == "process_name" and e["ph"] == "M":
            return e.get("args", {}).get("host", "")
    return ""


def align_clocks(loaded):
    """Files of different hosts: each host's clock offset to the first file's host, from
    the messages between them (NTP's way: the least send-to-received time each way is the
    one-way latency plus or minus the offset), and every event of that host shifted by it.
    Files of one host share its clock and are left alone. Returns {host: offset_us}."""
    hosts = [host_of(ev) for ev in loaded]
    if len(set(hosts)) < 2:
        return {}
    sends, least = {}, {}
    for h, ev in zip(hosts, loaded):
        for e in ev:
            if e["name"] == "send" and "args" in e:
                sends[msg_key(e["args"])] = (h, e["ts"])
    for h, ev in zip(hosts, loaded):
        for e in ev:
            if e["name"] == "recv" and "args" in e:
                s = sends.get(msg_key(e["args"]))
                if s and s[0] != h:
                    d = e["ts"] + e["dur"] - s[1]
                    least[(s[0], h)] = min(d, least.get((s[0], h), d))
    off = {hosts[0]: 0.0}
    todo = [hosts[0]]
    while todo:  # through every host linked both ways to one already placed
        a = todo.pop()
        for b in set(hosts) - set(off):
            if (a, b) in least and (b, a) in least:
                off[b] = off[a] + (least[(a, b)] - least[(b, a)]) / 2  # clock(b) - clock(a)
                todo.append(b)
    lost = set(hosts) - set(off)
    if lost:
        sys.stderr.write("trace_split: no messages both ways with %s: their clocks are taken as they are\n"
                         % ", ".join(sorted(lost)))
    for h, ev in zip(hosts, loaded):
        if off.get(h):
            for e in ev:
                if "ts" in e:
                    e["ts"] -= off[h]
    return off


def clamp(x, lo, hi):
    return lo if x < lo else hi if x > hi else x


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    skip, ab, as_json = 3, "--ab" in argv, "--json" in argv
    if "--skip" in argv:
        skip = int(argv[argv.index("--skip") + 1])
        args.remove(argv[argv.index("--skip") + 1])
    if len(args) != 1:
        sys.stderr.write(__doc__)
        return 2
    files = sorted(glob.glob(os.path.join(args[0], "worker-*.json")))
    sent = {}  # (epoch, step, op, tag, chunk, src, dst) -> when the sender began to hand it over (us)
    bwd_done = collections.defaultdict(dict)  # (epoch, step) -> rank -> time
    reported = collections.defaultdict(dict)  # (epoch, step) -> rank -> time
    ranks = collections.defaultdict(set)  # epoch -> ranks that have step spans
    procs = []
    loaded = [load(f) for f in files]
    offsets = align_clocks(loaded)
    for ev in loaded:
        steps = sorted((e for e in ev if e["name"] == "step" and e["ph"] == "X" and "args" in e), key=lambda e: e["ts"])
        if not steps:
            continue
        tid = steps[0]["tid"]
        # periods: a step span to the next one of the same epoch and the next step
        periods = []
        for x, y in zip(steps, steps[1:]):
            ax, ay = x["args"], y["args"]
            ranks[ax["epoch"]].add(ax["rank"])
            reported[(ax["epoch"], ax["step"])][ax["rank"]] = x["ts"] + x["dur"]
            if ay["epoch"] == ax["epoch"] and ay["step"] == ax["step"] + 1:
                periods.append((x["ts"], y["ts"], ax["epoch"], ax["step"], ax["rank"]))
        last = steps[-1]["args"]
        ranks[last["epoch"]].add(last["rank"])
        reported[(last["epoch"], last["step"])][last["rank"]] = steps[-1]["ts"] + steps[-1]["dur"]
        starts = [p[0] for p in periods]

        def period_of(t):
            i = bisect.bisect_right(starts, t) - 1
            return periods[i] if i >= 0 and t < periods[i][1] else None

        spans = []
        for e in ev:
            n = e["name"]
            if n == "send" and "args" in e:
                sent[msg_key(e["args"])] = e["ts"]
            elif n == "backward done":
                p = period_of(e["ts"])
                if p:
                    bwd_done[(p[2], p[3])][p[4]] = e["ts"]
            if e["ph"] == "X" and e["tid"] == tid:
                spans.append(e)
        spans.sort(key=lambda e: e["ts"])
        procs.append((periods, spans))

    kinds = ("expert exchange", "all-reduce (main thread)", "gradient all-reduce tail", "coordinator", "sends", "other")
    opkind = {1: "other", 2: "all-reduce (main thread)", 3: "other", 4: "expert exchange"}
    rows = collections.defaultdict(dict)  # (epoch, step) -> rank -> [period, comm by kind, waiting, path]
    waits = collections.defaultdict(list)  # (epoch, rank) -> [(end, start, ready, ready_rank, kind, filled)]
    step_start = {}  # (epoch, rank, step) -> start of its period
    for periods, spans in procs:
        starts = [e["ts"] for e in spans]
        for t0, t1, epoch, s, r in periods:
            step_start[(epoch, r, s)] = t0
            step_start.setdefault((epoch, r, s + 1), t1)
            lo, hi = bisect.bisect_left(starts, t0), bisect.bisect_left(starts, t1)
            inside = spans[lo:hi]
            if any(e["name"] == "checkpoint" for e in inside):
                continue
            fills = [(e["ts"], e["ts"] + e["dur"]) for e in inside if e["name"] == "fill"]
            comm = collections.Counter()
            peer = 0.0
            for e in inside:
                a, b = e["ts"], e["ts"] + e["dur"]
                n, g = e["name"], e.get("args", {})
                q = None
                if n in ("send", "wait: sent buffers"):
                    ready, kind = a, "sends"
                elif n == "recv":
                    q = g["src"]
                    ready = sent.get(msg_key(g), a)
                    kind = opkind.get(g["op"], "other")
                elif n in ("wait: gradient all-reduce", "wait: coordinator"):
                    other = (bwd_done if n == "wait: gradient all-reduce" else reported).get((epoch, s), {})
                    ready, q = max([(v, k) for k, v in other.items() if k != r] or [(a, None)])
                    kind = "gradient all-reduce tail" if n == "wait: gradient all-reduce" else "coordinator"
                else:
                    continue
                filled = [(max(a, x), min(b, y)) for x, y in fills if min(b, y) > max(a, x)]
                waits[(epoch, r)].append((b, a, ready, q, kind, filled))
                fsum = sum(y - x for x, y in filled)
                p = clamp(ready - a, 0.0, b - a)
                # work done inside the wait is compute: taken off the waiting for the peer first
                fp = min(fsum, p)
                peer += p - fp
                comm[kind] += max(0.0, (b - a - p) - (fsum - fp))
            rows[(epoch, s)][r] = [t1 - t0, comm, peer, None]
    for k in waits:
        waits[k].sort(key=lambda w: (w[0], w[1]))
    ends = {k: [w[0] for w in v] for k, v in waits.items()}

    def critical(epoch, s, r):
        """Walks step s back from rank r's next command to the step's start: at each wait,
        to the rank and moment that ended it. Returns the path's length and its time in
        communication (bytes on their way, the coordinator's round trip) by kind."""
        t_end = step_start.get((epoch, r, s + 1))
        if t_end is None:
            return None
        t, comm = t_end, collections.Counter()
        below = None  # on rank r, only waits before this index (a wait is never taken twice)
        while True:
            start = step_start.get((epoch, r, s))
            if start is None:
                return None
            w, e = waits.get((epoch, r), []), ends.get((epoch, r), [])
            i = bisect.bisect_right(e, t + EPS) - 1
            if below is not None:
                i = min(i, below - 1)
            if i < 0 or e[i] <= start + EPS:
                return t_end - start, comm
            b, a, ready, q, kind, filled = w[i]

            def busy(x0, x1):  # put-off work inside [x0, x1] of the wait
                return sum(max(0.0, min(x1, y) - max(x0, x)) for x, y in filled)

            if q is not None and a < ready < b:
                comm[kind] += (b - ready) - busy(ready, b)
                r, t, below = q, ready, None
            else:
                comm[kind] += (b - a) - busy(a, b)
                t, below = a, i

    for (epoch, s), byrank in rows.items():
        for r in byrank:
            byrank[r][3] = critical(epoch, s, r)

    def summary(keep):
        per = []
        for (epoch, s), byrank in sorted(rows.items()):
            if s < skip or not keep(s) or set(byrank) != ranks[epoch] or len(byrank) < 2:
                continue
            rs = byrank.values()
            if any(x[3] is None for x in rs):
                continue
            n = len(byrank)
            per.append({"period": sum(x[0] for x in rs) / n,
                        "comm": {k: sum(x[1][k] for x in rs) / n for k in kinds},
                        "peer": sum(x[2] for x in rs) / n,
                        "path": sum(x[3][0] for x in rs) / n,
                        "exposed": {k: sum(x[3][1][k] for x in rs) / n for k in kinds}})
        if not per:
            return None
        med = statistics.median
        return {"steps": len(per),
                "period_ms": med(p["period"] for p in per) / 1e3,
                "exposed_ms": med(sum(p["exposed"].values()) for p in per) / 1e3,
                "exposed_pct": 100 * med(sum(p["exposed"].values()) / p["path"] for p in per),
                "exposed_by_kind_ms": {k: med(p["exposed"][k] for p in per) / 1e3 for k in kinds},
                "rank_communication_ms": med(sum(p["comm"].values()) for p in per) / 1e3,
                "rank_communication_pct": 100 * med(sum(p["comm"].values()) / p["period"] for p in per),
                "rank_waiting_for_others_ms": med(p["peer"] for p in per) / 1e3,
                "rank_waiting_for_others_pct": 100 * med(p["peer"] / p["period"] for p in per)}

    if not rows:
        sys.stderr.write("trace_split: no whole step in the traces of %s (%d files)\n" % (args[0], len(files)))
        return 2
    halves = [("even steps", lambda s: s % 2 == 0), ("odd steps", lambda s: s % 2 == 1)] if ab else [("all steps", lambda s: True)]
    result = {name: summary(keep) for name, keep in halves}
    if offsets:
        result["clock_offsets_us"] = offsets
    if as_json:
        print(json.dumps(result, indent=1))
        return 0
    for host, o in offsets.items():
        if o:
            print("clock of %s: %+.1f us from %s's (from the messages between them); shifted" % (host, o, host_of(loaded[0])))
    for name, o in result.items():
        if name == "clock_offsets_us":
            continue
        if not o:
            print("%s: no complete step after the first %d" % (name, skip))
            continue
        kinds_s = ", ".join("%s %.1f" % (k, v) for k, v in o["exposed_by_kind_ms"].items() if v >= 0.05)
        print("%s (%d): step %.0f ms; exposed communication %.1f ms (%.1f%%) [%s]; per rank: communicating %.1f ms "
              "(%.1f%%), waiting for other ranks %.1f ms (%.1f%%)"
              % (name, o["steps"], o["period_ms"], o["exposed_ms"], o["exposed_pct"], kinds_s,
                 o["rank_communication_ms"], o["rank_communication_pct"], o["rank_waiting_for_others_ms"],
                 o["rank_waiting_for_others_pct"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
