"""GradScaler fixture: torch.amp.GradScaler (PyTorch from PyPI, on the CPU) run on a fixed
sequence of losses with injected infs, NaNs and a natural f16-style overflow, with clipping of
the unscaled gradients on even steps. Writes scaler.json: every float as its f32 bit pattern, so
that nothing is lost in text.

    python make_scaler_fixture.py OUTDIR
"""
import json
import os
import sys

import numpy as np
import torch


def bits(t):
    return [int(v) for v in t.detach().numpy().astype(np.float32).view(np.uint32).ravel()]


def main(out):
    torch.manual_seed(0)
    p0 = torch.nn.Parameter(torch.randn(6))
    p1 = torch.nn.Parameter(torch.randn(3))
    params = [p0, p1]
    options = dict(init_scale=1024.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    scaler = torch.amp.GradScaler("cpu", **options)
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    fixture = {"torch": torch.__version__, "options": options, "clip_max_norm": 0.5, "lr": 0.1, "momentum": 0.9,
               "p0": bits(p0), "p1": bits(p1), "steps": [],
               "defaults": {k: v for k, v in torch.amp.GradScaler("cpu").state_dict().items()}}
    for step in range(14):
        c0 = torch.randn(6) * 3
        c1 = torch.randn(3) * 3
        if step == 4:
            c1[1] = float("inf")   # the second parameter's gradient overflows
        if step == 8:
            c0[2] = float("nan")   # the first one's is NaN
        if step == 11:
            c0 = c0 * 1e36         # finite values whose scaled gradient overflows f32
        scale_before = scaler.get_scale()
        opt.zero_grad()
        loss = (p0 * c0).sum() + (p1 * c1).sum()
        scaler.scale(loss).backward()
        clipped = step % 2 == 0
        if clipped:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, fixture["clip_max_norm"])
        found_inf = sum(v.item() for v in scaler._check_inf_per_device(opt).values()) if not clipped else \
            sum(v.item() for v in scaler._found_inf_per_device(opt).values())
        scaler.step(opt)
        scaler.update()
        fixture["steps"].append({"c0": bits(c0), "c1": bits(c1), "clip": clipped, "scale_before": scale_before,
                                 "skipped": bool(found_inf > 0), "scale_after": scaler.get_scale(),
                                 "growth_tracker": int(scaler.state_dict()["_growth_tracker"]),
                                 "p0": bits(p0), "p1": bits(p1)})
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "scaler.json"), "w") as f:
        json.dump(fixture, f)


if __name__ == "__main__":
    main(sys.argv[1])
