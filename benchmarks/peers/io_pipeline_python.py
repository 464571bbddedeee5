#!/usr/bin/env python3
"""The I/O pipeline of issue 4 with nibabel + scipy (and pydicom for the series): read, window
(abdomen 40/400 HU to [0, 1]) and resample to 1.5 mm isotropic with scipy.ndimage.zoom (order 1,
the output size rounded as vox rounds it). Prints lines in vox_io_pipeline_timing's format.
    io_pipeline_python.py NIFTI_PATH DICOM_DIR [RUNS]
"""
import glob
import os
import statistics
import sys
import time

import nibabel as nib
import numpy as np
import pydicom
import scipy.ndimage


def window(hu):
    lo, hi = 40 - 200, 40 + 200
    return np.clip((hu - lo) / (hi - lo), 0, 1).astype(np.float32)


def resample(vol, spacing):
    out = [max(1, round(n * s / 1.5)) for n, s in zip(vol.shape, spacing)]
    return scipy.ndimage.zoom(vol, [o / n for o, n in zip(out, vol.shape)], order=1, mode="nearest", grid_mode=False)


def read_nifti(path):
    img = nib.load(path)
    return np.asarray(img.get_fdata(dtype=np.float32)), img.header.get_zooms()[:3]


def read_dicom(directory):
    slices = [pydicom.dcmread(p) for p in glob.glob(os.path.join(directory, "*"))]
    normal = np.cross(np.array(slices[0].ImageOrientationPatient[:3], float), np.array(slices[0].ImageOrientationPatient[3:], float))
    slices.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, float))))
    vol = np.stack([s.pixel_array.astype(np.float32) * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in slices])
    positions = [float(np.dot(normal, np.array(s.ImagePositionPatient, float))) for s in slices]
    dz = (positions[-1] - positions[0]) / (len(positions) - 1)
    ps = [float(v) for v in slices[0].PixelSpacing]
    return np.transpose(vol, (2, 1, 0)), (ps[1], ps[0], dz)  # (i, j, k) as nibabel gives


def run(name, read, runs):
    times = {"read": [], "window": [], "resample": [], "total": []}
    voxels = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        vol, spacing = read()
        t1 = time.perf_counter()
        w = window(vol)
        t2 = time.perf_counter()
        out = resample(w, spacing)
        t3 = time.perf_counter()
        voxels = out.size
        for key, a, b in (("read", t0, t1), ("window", t1, t2), ("resample", t2, t3), ("total", t0, t3)):
            times[key].append((b - a) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{name} {med['read']:.1f} {med['window']:.1f} {med['resample']:.1f} {med['total']:.1f} {voxels}", flush=True)


def main():
    nifti, dicom = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    run("nifti", lambda: read_nifti(nifti), runs)
    run("dicom", lambda: read_dicom(dicom), runs)


if __name__ == "__main__":
    main()
