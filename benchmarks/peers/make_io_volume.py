#!/usr/bin/env python3
"""The input of the I/O pipeline benchmark: one 512 x 512 x 300 int16 CT-like volume (0.7 x 0.7 x
2.5 mm, HU with rescale intercept -1024), written as OUTDIR/ct.nii.gz (nibabel) and as a DICOM
series OUTDIR/dicom/ of 300 files (pydicom, explicit VR little endian), names shuffled.
    make_io_volume.py OUTDIR
"""
import os
import sys

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

out = sys.argv[1]
os.makedirs(os.path.join(out, "dicom"), exist_ok=True)
rng = np.random.default_rng(0)
nx, ny, nz = 512, 512, 300
# a body-like ellipse of soft tissue with noise, air outside, some bone: stored = HU + 1024
x, y = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), indexing="xy")
body = (x / 0.85) ** 2 + (y / 0.65) ** 2 <= 1
bone = (x / 0.15) ** 2 + ((y + 0.4) / 0.12) ** 2 <= 1
volume = np.empty((nz, ny, nx), dtype=np.int16)  # [k, j, i]
for k in range(nz):
    hu = np.where(body, 40.0, -1000.0) + np.where(bone, 660.0, 0.0) + rng.normal(0, 20, (ny, nx))
    volume[k] = (hu + 1024).astype(np.int16)
spacing = (0.7, 0.7, 2.5)
affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # RAS of an LPS-aligned axial series
img = nib.Nifti1Image(np.transpose(volume, (2, 1, 0)), affine)
img.header.set_slope_inter(1.0, -1024.0)
nib.save(img, os.path.join(out, "ct.nii.gz"))

series, study = generate_uid(), generate_uid()
order = rng.permutation(nz)
for n, k in enumerate(order):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", study, series
    ds.InstanceNumber = int(k) + 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0.0, 0.0, float(k) * spacing[2]]
    ds.PixelSpacing = [spacing[1], spacing[0]]
    ds.SliceThickness = spacing[2]
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = ny, nx
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = volume[k].tobytes()
    ds.save_as(os.path.join(out, "dicom", f"{rng.integers(1 << 40):x}.dcm"), write_like_original=False)
print(f"wrote {out}/ct.nii.gz and {nz} files in {out}/dicom")
