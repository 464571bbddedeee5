#!/usr/bin/env python3
"""PyTorch's conv3d timings for the shape vox_conv3d_timing uses: median milliseconds of forward,
input gradient and weight gradient (each backward pass alone: the graph is built outside the
timer), in NCDHW and in channels_last_3d, on the given number of threads."""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--size", type=int, default=64)
p.add_argument("--channels", type=int, default=32)
p.add_argument("--batch", type=int, default=1)
p.add_argument("--repeats", type=int, default=11)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)


def median_ms(timed, setup=lambda: None):
    times = []
    for r in range(a.repeats + 1):
        state = setup()
        t = time.perf_counter()
        timed(state)
        if r > 0:
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


flops = 2.0 * a.batch * a.size ** 3 * a.channels * a.channels * 27
print(f"torch version {torch.__version__} threads {torch.get_num_threads()} mkldnn {torch.backends.mkldnn.is_available()}")
for layout in ("ncdhw", "channels_last_3d"):
    fmt = torch.channels_last_3d if layout == "channels_last_3d" else torch.contiguous_format
    x = torch.randn(a.batch, a.channels, a.size, a.size, a.size).contiguous(memory_format=fmt)
    w = (torch.randn(a.channels, a.channels, 3, 3, 3) * 0.05).contiguous(memory_format=fmt)
    dy = torch.randn(a.batch, a.channels, a.size, a.size, a.size).contiguous(memory_format=fmt)
    with torch.no_grad():
        forward = median_ms(lambda _: F.conv3d(x, w, padding=1))
    xg = x.clone().requires_grad_()
    input_grad = median_ms(lambda y: torch.autograd.grad(y, xg, dy), lambda: F.conv3d(xg, w, padding=1))
    wg = w.clone().requires_grad_()
    weight_grad = median_ms(lambda y: torch.autograd.grad(y, wg, dy), lambda: F.conv3d(x, wg, padding=1))
    for name, ms in (("forward", forward), ("input_grad", input_grad), ("weight_grad", weight_grad)):
        print(f"torch-{layout} {name} {ms:.3f} ms {flops / ms / 1e6:.1f} GFLOP/s")
