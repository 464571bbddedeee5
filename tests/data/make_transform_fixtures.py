#!/usr/bin/env python3
"""What MONAI 1.2.0, scipy and numpy make of a small random volume, for test_data.

Volumes are stored in vox's [k, j, i] order; MONAI sees them channel-first as (1, i, j, k), as
its NIfTI loader gives them. transforms.safetensors holds every result; transforms.json lists
the cases (sizes in (i, j, k) order).
    make_transform_fixtures.py OUTDIR
"""
import json
import os
import sys

import numpy as np
import scipy.ndimage
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval
from monai.transforms import CropForeground, DivisiblePad, Resize, ResizeWithPadOrCrop

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parity"))
from safetensors_writer import save  # noqa: E402


def to_monai(vox):  # [k, j, i] -> (1, i, j, k)
    return torch.from_numpy(np.ascontiguousarray(np.transpose(vox, (2, 1, 0))[None]))


def to_vox(monai):  # (1, i, j, k) -> [k, j, i]
    return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(monai)[0], (2, 1, 0)))).double()


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(7)
    volume = rng.standard_normal((9, 10, 11))  # [k, j, i]: 11 x 10 x 9 voxels (i, j, k)
    tensors = {"volume": torch.from_numpy(volume)}
    cases = {"pad_or_crop": [], "divisible": [], "resize": [], "grid": [], "gaussian": []}
    for n, size in enumerate([(8, 13, 9), (11, 7, 12), (5, 10, 4)]):
        tensors[f"pad_or_crop.{n}"] = to_vox(ResizeWithPadOrCrop(size)(to_monai(volume)))
        cases["pad_or_crop"].append(size)
    for n, k in enumerate([(4, 4, 4), (3, 4, 5)]):
        tensors[f"divisible.{n}"] = to_vox(DivisiblePad(k)(to_monai(volume)))
        cases["divisible"].append(k)
    for n, (size, mode) in enumerate([((7, 13, 5), "trilinear"), ((16, 6, 9), "trilinear"), ((7, 13, 5), "nearest-exact")]):
        tensors[f"resize.{n}"] = to_vox(Resize(size, mode=mode, align_corners=None if mode != "trilinear" else False)(to_monai(volume)))
        cases["resize"].append({"size": size, "mode": mode})
    cropper = CropForeground(select_fn=lambda x: x > 1.5, margin=1)
    tensors["foreground"] = to_vox(cropper(to_monai(volume)))
    for n, (size, patch, overlap) in enumerate([((11, 10, 9), (4, 4, 4), 0.5), ((11, 10, 9), (5, 3, 9), 0.25),
                                                ((64, 40, 33), (32, 16, 16), 0.5), ((7, 7, 7), (7, 2, 3), 0.0)]):
        interval = _get_scan_interval(size, patch, 3, (overlap,) * 3)
        starts = [[int(s.start) for s in box] for box in dense_patch_slices(size, patch, interval)]
        cases["grid"].append({"size": size, "patch": patch, "overlap": overlap, "starts": starts})
    for n, sigma in enumerate([(0.7, 0.7, 0.7), (1.3, 0.0, 2.1)]):  # (i, j, k)
        tensors[f"gaussian.{n}"] = torch.from_numpy(
            scipy.ndimage.gaussian_filter(volume, sigma=(sigma[2], sigma[1], sigma[0]), mode="reflect", truncate=4.0))
        cases["gaussian"].append(sigma)
    # cubic B-spline resampling at vox's sample positions: scipy's map_coordinates, order 3, mirror
    def positions(n, old, new):
        m = max(1, round(n * old / new))
        return np.minimum(np.arange(m) * new / old, n - 1)
    old, new = (0.8, 1.3, 2.1), (0.5, 1.6, 1.2)  # (i, j, k)
    pk, pj, pi = (positions(volume.shape[0], old[2], new[2]), positions(volume.shape[1], old[1], new[1]),
                  positions(volume.shape[2], old[0], new[0]))
    grid = np.meshgrid(pk, pj, pi, indexing="ij")
    tensors["bspline"] = torch.from_numpy(scipy.ndimage.map_coordinates(volume, grid, order=3, mode="mirror"))
    cases["bspline"] = {"old": old, "new": new}
    # nnU-Net's anisotropic case: spline in-plane (each k slice), nearest slice along k
    old, new = (0.8, 0.8, 3.2), (0.6, 0.7, 1.5)
    pk, pj, pi = (positions(volume.shape[0], old[2], new[2]), positions(volume.shape[1], old[1], new[1]),
                  positions(volume.shape[2], old[0], new[0]))
    jj, ii = np.meshgrid(pj, pi, indexing="ij")
    in_plane = np.stack([scipy.ndimage.map_coordinates(volume[k], [jj, ii], order=3, mode="mirror") for k in range(volume.shape[0])])
    nearest = np.clip(np.floor(pk + 0.5).astype(int), 0, volume.shape[0] - 1)
    tensors["nnunet"] = torch.from_numpy(in_plane[nearest])
    cases["nnunet"] = {"old": old, "new": new}
    # nnU-Net's CT normalisation: foreground statistics pooled over two cases with numpy
    labels = [(rng.random((9, 10, 11)) > 0.6).astype(np.float64), (rng.random((9, 10, 11)) > 0.3).astype(np.float64)]
    images = [volume * 100 + 40, rng.standard_normal((9, 10, 11)) * 300 - 20]
    pooled = np.concatenate([im[lab > 0] for im, lab in zip(images, labels)])
    stats = {"mean": float(np.mean(pooled)), "std": float(np.std(pooled)), "median": float(np.median(pooled)),
             "p00_5": float(np.percentile(pooled, 0.5)), "p99_5": float(np.percentile(pooled, 99.5)),
             "min": float(np.min(pooled)), "max": float(np.max(pooled)), "voxels": int(pooled.size)}
    for n in range(2):
        tensors[f"ct.image.{n}"] = torch.from_numpy(images[n])
        tensors[f"ct.label.{n}"] = torch.from_numpy(labels[n])
        tensors[f"ct.normalized.{n}"] = torch.from_numpy((np.clip(images[n], stats["p00_5"], stats["p99_5"]) - stats["mean"])
                                                         / max(stats["std"], 1e-8))
    cases["ct"] = stats
    # metrics: MONAI's Dice, Hausdorff (95th percentile and maximum, undirected and directed) and
    # average surface distance (one-way and symmetric) with anisotropic spacing
    from monai.metrics import DiceMetric, compute_average_surface_distance, compute_hausdorff_distance
    from monai.networks.utils import one_hot
    k, j, i = np.meshgrid(np.arange(16), np.arange(20), np.arange(24), indexing="ij")
    def ball(ci, cj, ck, r):
        return ((i - ci) * 0.8) ** 2 + ((j - cj) * 1.2) ** 2 + ((k - ck) * 2.0) ** 2 <= r * r
    truth = np.zeros((16, 20, 24), np.int64)
    truth[ball(12, 10, 8, 6.5)] = 1
    truth[ball(5, 5, 4, 3.5)] = 2
    pred = np.zeros_like(truth)
    pred[ball(13, 9, 8, 6.0)] = 1
    pred[ball(5, 6, 5, 3.0)] = 2
    pred[ball(20, 16, 12, 2.5)] = 2  # a false positive far away
    spacing = (0.8, 1.2, 2.0)  # (i, j, k)
    def hot(v):  # [k, j, i] labels -> (1, 3, i, j, k) one-hot
        return one_hot(to_monai(v)[None], num_classes=3, dim=1)
    results = {}
    for name, kwargs in [("hd95", {"percentile": 95}), ("hd", {}), ("hd95_directed", {"percentile": 95, "directed": True})]:
        results[name] = compute_hausdorff_distance(hot(pred), hot(truth), spacing=spacing, **kwargs)[0].tolist()
    for name, symmetric in [("asd", False), ("asd_symmetric", True)]:
        results[name] = compute_average_surface_distance(hot(pred), hot(truth), symmetric=symmetric, spacing=spacing)[0].tolist()
    dice = DiceMetric(include_background=True, reduction="none")
    results["dice"] = dice(hot(pred), hot(truth))[0].tolist()
    tensors["metrics.truth"] = torch.from_numpy(truth.astype(np.float64))
    tensors["metrics.pred"] = torch.from_numpy(pred.astype(np.float64))
    cases["metrics"] = {"spacing": spacing, **results}
    # sliding-window inference: a predictor whose output depends on the whole window (its mean),
    # so that the blending weights matter
    from monai.inferers import sliding_window_inference
    scan = rng.random((13, 17, 21)).astype(np.float32)  # [k, j, i]
    tensors["window.image"] = torch.from_numpy(scan.astype(np.float64))
    def predictor(w):  # (B, 1, i, j, k) -> (B, 2, i, j, k)
        mean = w.mean(dim=(1, 2, 3, 4), keepdim=True)
        return torch.cat([w * mean, 1 - w * w], dim=1)
    cases["window"] = []
    for n, (roi, overlap, mode, batch) in enumerate([((8, 8, 8), 0.5, "gaussian", 1), ((10, 6, 16), 0.25, "constant", 3),
                                                     ((21, 9, 7), 0.5, "gaussian", 4)]):
        with torch.no_grad():
            result = sliding_window_inference(to_monai(scan)[None].float(), roi, batch, predictor, overlap=overlap, mode=mode)
        tensors[f"window.{n}"] = torch.from_numpy(np.ascontiguousarray(np.transpose(result[0].numpy(), (3, 2, 1, 0)))).double()
        cases["window"].append({"patch": roi, "overlap": overlap, "gaussian": mode == "gaussian", "batch": batch})
    save(os.path.join(out, "transforms.safetensors"), tensors, {})
    with open(os.path.join(out, "transforms.json"), "w") as f:
        json.dump(cases, f, indent=1)
    print(f"transform fixtures in {out}")


if __name__ == "__main__":
    main()
