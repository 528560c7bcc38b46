#!/usr/bin/python3
"""The PyTorch peer of `switchyard bench allreduce|alltoall`: gloo (torch.distributed)
between N local processes over tcp loopback, the same payload, the same timing (a barrier,
then one collective; two warm-up rounds; median over --iters) and the same bandwidth
definitions (NCCL-tests: all-reduce bus = alg * 2(N-1)/N, all-to-all bus = alg * (N-1)/N).

  bench/torch_collectives.py allreduce|alltoall [--size 16M] [--workers 2] [--iters 20]

Prints one JSON line like `switchyard bench allreduce --json`.
"""
import argparse
import json
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def parse_size(s):
    mult = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    return int(float(s[:-1]) * mult[s[-1].lower()]) if s[-1].lower() in mult else int(s)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child(rank, world, port, op, nbytes, iters, q):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = nbytes // 4
    data = (torch.arange(n, dtype=torch.int64) * 7 + rank).remainder(13).float()
    out = torch.empty_like(data)
    times = []
    for it in range(-2, iters):
        dist.barrier()
        t0 = time.perf_counter()
        if op == "allreduce":
            dist.all_reduce(data)
        else:
            dist.all_to_all_single(out, data)
        if it >= 0:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        q.put(statistics.median(times))
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("op", choices=["allreduce", "alltoall"])
    ap.add_argument("--size", default="16M")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    nbytes = parse_size(a.size)
    if a.workers < 2 or nbytes < 4 * a.workers or nbytes % (4 * a.workers):
        sys.exit("torch_collectives: need --workers >= 2 and a size that splits into 4-byte rows per worker")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=child, args=(r, a.workers, port, a.op, nbytes, a.iters, q)) for r in range(a.workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs) or q.empty():
        sys.exit(f"torch_collectives: a rank failed (exit codes {[p.exitcode for p in procs]})")
    med = q.get()
    alg = nbytes / med / 1e9
    W = a.workers
    bus = alg * 2 * (W - 1) / W if a.op == "allreduce" else alg * (W - 1) / W
    print(json.dumps({"op": a.op, "impl": "gloo", "torch": torch.__version__, "bytes": nbytes, "workers": W,
                      "median_ms": round(med * 1e3, 3), "algbw_gbs": round(alg, 3), "busbw_gbs": round(bus, 3)}))


if __name__ == "__main__":
    main()
