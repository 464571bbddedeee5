#!/usr/bin/env python3
"""NIfTI fixtures, made at test time by Debian's python3-nibabel (never committed).

nibabel's own test files are read where the package installs them. Beside them this writes, with
nibabel, a file for every datatype in both byte orders, scaled data, 4-D data, qform-only and
code-less geometry, a .hdr/.img pair and NIfTI-2. For every file, expected.safetensors holds what
nibabel reads: "data.<name>" (get_fdata(), f64, in vox's [k, j, i(, t)] order) and
"affine.<name>" (4x4, RAS); the metadata gives each file's path and nibabel's orientation code.
    make_nifti_fixtures.py OUTDIR
"""
import os
import struct
import sys

import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parity"))
import torch  # noqa: E402  (the safetensors writer takes torch tensors)
from safetensors_writer import save  # noqa: E402

NIBABEL_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")
NIBABEL_FILES = ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "functional.nii",
                 "reoriented_anat_moved.nii", "resampled_anat_moved.nii", "standard.nii.gz"]


def vox_order(data):
    axes = (2, 1, 0) if data.ndim == 3 else (2, 1, 0, 3)
    return np.ascontiguousarray(np.transpose(data, axes))


def oblique_affine():
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.8, 1.25, 2.5])
    aff[:3, 3] = [-40.5, 12.25, 7.0]
    return aff


def generated(out):
    rng = np.random.default_rng(3)
    files = []
    for dtype in ["u1", "i1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"]:
        for order in "<>":
            info = np.iinfo(dtype) if dtype[0] in "iu" else None
            lo, hi = (max(info.min, -1000), min(info.max, 1000)) if info else (-1e3, 1e3)
            data = (rng.integers(lo, hi, (5, 4, 3)) if info else rng.uniform(lo, hi, (5, 4, 3))).astype(dtype)
            hdr = nib.Nifti1Header(endianness=order)
            img = nib.Nifti1Image(data, oblique_affine(), header=hdr)
            img.set_data_dtype(np.dtype(dtype))
            name = f"dtype_{dtype}_{'le' if order == '<' else 'be'}.nii"
            img.to_filename(os.path.join(out, name))
            files.append(name)
    # scaled int16: slope and intercept written into the header after saving
    data = rng.integers(-300, 300, (6, 5, 4)).astype(np.int16)
    nib.Nifti1Image(data, oblique_affine()).to_filename(os.path.join(out, "scaled.nii"))
    with open(os.path.join(out, "scaled.nii"), "r+b") as f:
        f.seek(112)
        f.write(struct.pack("<ff", 2.5, -10.0))
    files.append("scaled.nii")
    # 4-D
    nib.Nifti1Image(rng.normal(size=(6, 5, 4, 3)).astype(np.float32), oblique_affine()).to_filename(os.path.join(out, "four_d.nii.gz"))
    files.append("four_d.nii.gz")
    # qform only, and no codes at all (nibabel's fallback affine)
    img = nib.Nifti1Image(rng.normal(size=(4, 6, 5)).astype(np.float32), None)
    img.set_qform(oblique_affine(), code=1)
    img.set_sform(None, code=0)
    img.to_filename(os.path.join(out, "qform_only.nii"))
    files.append("qform_only.nii")
    img = nib.Nifti1Image(rng.normal(size=(4, 6, 5)).astype(np.float32), None)
    img.header.set_zooms((1.5, 2.0, 3.0))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    img.to_filename(os.path.join(out, "no_codes.nii"))
    files.append("no_codes.nii")
    # a left-handed qform (qfac -1)
    flipped = oblique_affine() @ np.diag([1, 1, -1, 1])
    img = nib.Nifti1Image(rng.normal(size=(4, 6, 5)).astype(np.float32), None)
    img.set_qform(flipped, code=1)
    img.set_sform(None, code=0)
    img.to_filename(os.path.join(out, "qform_left_handed.nii"))
    files.append("qform_left_handed.nii")
    # .hdr/.img pair, NIfTI-2
    nib.Nifti1Pair(rng.integers(0, 100, (5, 6, 7)).astype(np.int16), oblique_affine()).to_filename(os.path.join(out, "pair.hdr"))
    files.append("pair.hdr")
    nib.Nifti2Image(rng.normal(size=(7, 6, 5)).astype(np.float64), oblique_affine()).to_filename(os.path.join(out, "nifti2.nii.gz"))
    files.append("nifti2.nii.gz")
    return [os.path.join(out, f) for f in files]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(NIBABEL_DATA, f) for f in NIBABEL_FILES] + generated(out)
    tensors, meta = {}, {}
    for i, path in enumerate(paths):
        img = nib.load(path)
        tensors[f"data.{i}"] = torch.from_numpy(vox_order(img.get_fdata()))
        tensors[f"affine.{i}"] = torch.from_numpy(np.asarray(img.affine, dtype=np.float64))
        meta[f"path.{i}"] = path
        meta[f"code.{i}"] = "".join(nib.aff2axcodes(img.affine))
    meta["count"] = str(len(paths))
    save(os.path.join(out, "expected.safetensors"), tensors, meta)
    print(f"wrote {len(paths)} NIfTI cases to {out}")


if __name__ == "__main__":
    main()
