"""PyTorch DistributedDataParallel on the CPU (gloo), timed as `vox bench --dist` times vox.

    python ddp_peer.py [--model monai-unet] [--size 96] [--batch 1] [--ranks 2] [--threads 1]
                       [--iters 10] [--warmup 2]

Starts --ranks processes on this machine (torch.multiprocessing, gloo over the loopback), each
with --threads threads and its own --batch of random data. A training iteration is what
model_peer.py times (forward, MONAI's DiceCELoss(to_onehot_y=True, softmax=True), backward with
DDP's bucketed allreduce, Adam step), after a barrier so every rank starts together. DDP keeps its
defaults (25 MiB buckets, the first 1 MiB, broadcast_buffers). Rank 0 prints each iteration and
the median as `ms_per_iter=<value>`.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from monai.losses import DiceCELoss

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_peer import make_model  # noqa: E402


def rank_main(rank, args):
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=args.ranks)
    model = torch.nn.parallel.DistributedDataParallel(make_model(args.model, 2))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(1 + rank)
    x = torch.randn(args.batch, 1, args.size, args.size, args.size, generator=gen)
    y = torch.randint(0, 2, (args.batch, 1, args.size, args.size, args.size), generator=gen)

    def step():
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    times = []
    for i in range(args.iters):
        dist.barrier()
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
        if rank == 0:
            print(f"iteration {i + 1}: {times[-1]:.1f} ms", flush=True)
    if rank == 0:
        print(f"torch {torch.__version__} DDP (gloo), {args.ranks} ranks x {args.threads} threads, batch {args.batch} per rank")
        print(f"ms_per_iter={statistics.median(times):.3f}", flush=True)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="monai-unet")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    mp.spawn(rank_main, args=(args,), nprocs=args.ranks, join=True)


if __name__ == "__main__":
    main()
