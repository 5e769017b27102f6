"""The cost of one gloo all-reduce between two processes on this machine, alone.

    .venv/bin/python benchmarks/allreduce.py [--params 119808]

What `train.processes: 2` pays per optimiser step besides the work: the gradient all-reduce of
every parameter (ML-100K's model: 119,808) and Join's one-element check for uneven shards.
"""

from __future__ import annotations

import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank(rank: int, port: int, sizes: list[int], iters: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    for n in sizes:
        t = torch.zeros(n)
        for _ in range(20):  # warm-up
            dist.all_reduce(t)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(t)
        if rank == 0:
            print(f"all-reduce of {n:>9,} float32 ({4 * n / 1e6:7.3f} MB): {(time.perf_counter() - start) / iters * 1e3:.2f} ms")
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=int, default=119808, help="parameters whose gradient is all-reduced")
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(port, [1, args.params], args.iters), nprocs=2)


if __name__ == "__main__":
    main()
