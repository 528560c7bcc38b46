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
A step's period on a rank runs from its "step" span to its next one. Per step, the means
over the ranks; printed: medians over steps (the first --skip left out). With --ab the even
and odd steps are reported apart (the A/B benches: SWITCHYARD_OVERLAP_AB and the like).
The files of one machine share a clock; across machines the split is only as good as
their clocks agree, so use it on one machine or with synchronised clocks.

usage: bench/trace_split.py DIR [--skip N] [--ab] [--json]
"""
import bisect
import collections
import glob
import json
import os
import statistics
import sys


def load(path):
    text = open(path).read().rstrip()
    if not text.endswith("]"):  # a process that died: the array is not closed
        text = text.rstrip(",") + "]"
    return json.loads(text)


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
    if len(files) < 2:
        sys.stderr.write("trace_split: need the traces of at least 2 workers in %s, found %d\n" % (args[0], len(files)))
        return 2
    procs = []
    sent = {}  # (step, op, tag, chunk, src, dst) -> when the sender began to hand it over (us)
    bwd_done = collections.defaultdict(dict)  # step -> rank -> time
    reported = collections.defaultdict(dict)  # step -> rank -> time
    epochs = set()
    for f in files:
        ev = load(f)
        steps = [e for e in ev if e.get("name") == "step" and e.get("ph") == "X"]
        if not steps:
            continue
        main_tid = steps[0]["tid"]
        rank_of = {}  # step -> rank (a rank may change with the epoch)
        for e in steps:
            a = e["args"]
            rank_of[a["step"]] = a["rank"]
            epochs.add(a["epoch"])
            reported[a["step"]][a["rank"]] = e["ts"] + e["dur"]
        for e in ev:
            n = e.get("name")
            if n == "send":
                a = e["args"]
                sent[(a["step"], a["op"], a["tag"], a["chunk"], a["src"], a["dst"])] = e["ts"]
            elif n == "backward done" and e["args"]["step"] in rank_of:
                bwd_done[e["args"]["step"]][rank_of[e["args"]["step"]]] = e["ts"]
        procs.append((f, ev, main_tid, rank_of, steps))
    if len(epochs) > 1:
        sys.stderr.write("trace_split: the traces span %d epochs (the mesh changed); steps are matched by number\n"
                         % len(epochs))

    # per (step, rank): period, communication, waiting for others, by kind
    rows = collections.defaultdict(dict)
    kinds = ("expert exchange", "all-reduce (main thread)", "gradient all-reduce tail", "coordinator", "sends", "other")
    opkind = {1: "other", 2: "all-reduce (main thread)", 3: "other", 4: "expert exchange"}
    waits = {}       # rank -> [(end, start, ready, ready_rank, kind, filled)] of its compute thread, by end
    step_start = {}  # (rank, step) -> start
    for f, ev, tid, rank_of, steps in procs:
        starts = sorted((e["ts"], e["args"]["step"]) for e in steps)
        spans = sorted((e for e in ev if e.get("ph") == "X" and e["tid"] == tid), key=lambda e: e["ts"])
        fills = [(e["ts"], e["ts"] + e["dur"]) for e in spans if e["name"] == "fill"]
        for t0, s in starts:
            step_start[(rank_of[s], s)] = t0
        for (t0, s), (t1, _) in zip(starts, starts[1:]):
            r = rank_of[s]
            comm = collections.Counter()
            peer = 0.0
            for e in spans:
                a, b = e["ts"], e["ts"] + e["dur"]
                if a < t0 or a >= t1:
                    continue
                n, g = e["name"], e.get("args", {})
                q = None
                if n in ("send", "wait: sent buffers"):
                    ready, kind = a, "sends"
                elif n == "recv":
                    q = g["src"]
                    ready = sent.get((g["step"], g["op"], g["tag"], g["chunk"], g["src"], g["dst"]), a)
                    kind = opkind.get(g["op"], "other")
                elif n in ("wait: gradient all-reduce", "wait: coordinator"):
                    other = (bwd_done if n[6] == "g" else reported).get(g["step"], {})
                    q, ready = max([(v, k) for k, v in other.items() if k != r] or [(a, None)])[::-1]
                    kind = "gradient all-reduce tail" if n[6] == "g" else "coordinator"
                else:
                    continue
                filled = [(max(a, x), min(b, y)) for x, y in fills if min(b, y) > max(a, x)]
                waits.setdefault(r, []).append((b, a, ready, q, kind, filled))
                fsum = sum(y - x for x, y in filled)
                p = clamp(ready - a, 0.0, b - a)
                # work done inside the wait is compute: taken off the waiting for the peer first
                fp = min(fsum, p)
                peer += p - fp
                comm[kind] += max(0.0, (b - a - p) - (fsum - fp))
            rows[s][r] = [t1 - t0, comm, peer, None]
    for r in waits:
        waits[r].sort()
    ends = {r: [w[0] for w in waits[r]] for r in waits}

    def critical(s, r):
        """Walks step s back from rank r's next command to the step's start: at each wait,
        to the rank and moment that ended it. Returns the path's length, and its time in
        communication (bytes on their way, the coordinator's round trip) by kind."""
        t = step_start.get((r, s + 1))
        if t is None:
            return None
        t_end, comm = t, collections.Counter()
        for _ in range(100000):
            start = step_start.get((r, s))
            if start is None:
                return None
            i = bisect.bisect_right(ends[r], t) - 1
            if i < 0 or ends[r][i] <= start:
                return t_end - start, comm
            b, a, ready, q, kind, filled = waits[r][i]
            def busy(x0, x1):  # put-off work inside [x0, x1] of the wait
                return sum(max(0.0, min(x1, y) - max(x0, x)) for x, y in filled)
            if q is not None and a < ready < b:
                comm[kind] += (b - ready) - busy(ready, b)
                r, t = q, ready
            else:
                comm[kind] += (b - a) - busy(a, b)
                t = a
        return None

    for s in rows:
        for r in rows[s]:
            rows[s][r][3] = critical(s, r)

    def summary(keep):
        per = []
        for s in sorted(rows):
            if s < skip or not keep(s) or len(rows[s]) < len(procs):
                continue
            rs = rows[s].values()
            if any(x[3] is None for x in rs):
                continue
            n = len(rows[s])
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

    halves = [("even steps", lambda s: s % 2 == 0), ("odd steps", lambda s: s % 2 == 1)] if ab else [("all steps", lambda s: True)]
    result = {name: summary(keep) for name, keep in halves}
    if as_json:
        print(json.dumps(result, indent=1))
        return 0
    for name, o in result.items():
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
