#!/usr/bin/env python3
"""Learning rates from torch.optim.lr_scheduler (Debian's python3-torch) for test_schedulers:
PolynomialLR, StepLR, CosineAnnealingLR and ReduceLROnPlateau (both modes, both threshold
modes, with cooldown and min_lr) over a fixed metric sequence. Writes OUTDIR/schedulers.json.
    make_scheduler_fixtures.py OUTDIR
"""
import json
import os
import sys

import torch


def lrs(make, epochs, metrics=None):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make(opt)
    out = []
    for e in range(epochs):
        opt.step()
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[e])
        out.append(opt.param_groups[0]["lr"])
    return out


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    metrics = [1.0, 0.9, 0.85, 0.86, 0.86, 0.87, 0.84, 0.84, 0.849, 0.85, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.79, 0.7999,
               0.8, 0.8, 0.8, 0.8, 0.8, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    cases = {
        "metrics": metrics,
        "poly": lrs(lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=20, power=0.9), 25),
        "step": lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.3), 25),
        "cosine": lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=15, eta_min=1e-4), 15),
        "plateau_min_rel": lrs(lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=2, factor=0.5, cooldown=1, min_lr=0.01), 30, metrics),
        "plateau_max_abs": lrs(lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="max", patience=1, factor=0.3,
                                                                                     threshold=0.01, threshold_mode="abs"), 30, metrics),
    }
    with open(os.path.join(out, "schedulers.json"), "w") as f:
        json.dump(cases, f)
    print(f"scheduler fixtures in {out}")


if __name__ == "__main__":
    main()
