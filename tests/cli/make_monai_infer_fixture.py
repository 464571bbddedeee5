#!/usr/bin/env python3
"""MONAI's UNet (1.2.0) with random weights run by PyTorch on a NIfTI volume, for the CLI test of
`vox infer --arch monai-unet --weights W.safetensors --logits --no-window`. Writes, into OUTDIR:
weights.safetensors (the state_dict), input.nii.gz (nibabel), expected.npy (the logits as
nibabel's axis order plus classes: (i, j, k, 2)).
    make_monai_infer_fixture.py OUTDIR
"""
import os
import sys

import nibabel as nib
import numpy as np
import torch
from monai.networks.nets import UNet

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parity"))
from safetensors_writer import save  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
net.eval()
for p in net.parameters():  # not the init scale: outputs that differ clearly from voxel to voxel
    p.data.normal_(0, 0.2)
save(os.path.join(out, "weights.safetensors"), {k: v.float() for k, v in net.state_dict().items()}, {})
rng = np.random.default_rng(1)
volume = rng.standard_normal((32, 48, 16)).astype(np.float32)  # (i, j, k), as nibabel gives it
nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.9, 2.5, 1.0])), os.path.join(out, "input.nii.gz"))
with torch.no_grad():
    logits = net(torch.from_numpy(volume)[None, None])[0]  # (2, i, j, k)
np.save(os.path.join(out, "expected.npy"), np.moveaxis(logits.numpy(), 0, -1))
print(f"MONAI UNet fixture in {out}")
