#!/usr/bin/env python3
"""DICOM fixtures, made at test time by Debian's python3-pydicom (never committed).

1. pydicom's own test files, read where the package installs them. For every file,
   pydicom.json says whether pydicom parses it, how many top-level elements it holds, and, where
   pydicom's numpy or RLE handler decodes its pixels, "pixels.<i>" in pydicom.safetensors holds
   pixel_array (f64, frames first: [frames, rows, columns(, samples)]). Compressed files are
   decoded by GDCM (Debian's python3-gdcm) through pydicom into "gdcm.<i>", where GDCM can.
2. Series written by pydicom into OUTDIR/series/<case>/, with the geometry the test expects:
   axial, oblique and reversed-normal series whose file names and InstanceNumbers are shuffled,
   implicit VR and big-endian ones, two series in one directory, a missing slice, uneven
   spacing, gantry tilt, mixed orientations, and an enhanced multi-frame file whose frames are
   stored out of spatial order. series.safetensors holds each case's expected volume ("volume.
   <case>", f64 [k, j, i], in spatial order, rescaled) and LPS affine ("affine.<case>", 4x4);
   series.json lists the cases and what each must do.
    make_dicom_fixtures.py OUTDIR
"""
import glob
import json
import os
import random
import sys
import warnings

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parity"))
import torch  # noqa: E402  (the safetensors writer takes torch tensors)
from safetensors_writer import save  # noqa: E402

PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
NATIVE_OR_RLE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
                 "1.2.840.10008.1.2.5"}


LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91"}
try:
    from pydicom.pixel_data_handlers import gdcm_handler
    GDCM = gdcm_handler.is_available()
except ImportError:
    GDCM = False


def pydicom_files(out):
    tensors, entries = {}, []
    paths = sorted(p for p in glob.glob(os.path.join(PYDICOM_FILES, "**", "*"), recursive=True)
                   if os.path.isfile(p) and not p.endswith((".txt", ".json", ".dump", ".gz", ".py")))
    for i, path in enumerate(paths):
        entry = {"path": path, "parses": False, "elements": -1, "pixels": False, "gdcm": False}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path, force=True)
                tags = [e.tag for e in ds]  # iterating parses every deferred element
                entry["elements"] = len(tags)
                # force=True makes pydicom "read" any file; a DICOM one has standard groups
                entry["parses"] = bool(getattr(ds, "file_meta", None)) or any(t.group in (0x0004, 0x0008) for t in tags)
            except Exception as e:  # noqa: BLE001  (any failure: vox must then raise, not crash)
                entry["error"] = str(e)[:200]
            if entry["parses"] and "PixelData" in ds:
                syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", ""))
                if syntax not in NATIVE_OR_RLE and GDCM:
                    # compressed: GDCM's decoders (Debian's python3-gdcm) through pydicom
                    try:
                        ds.convert_pixel_data("gdcm")
                        arr = ds.pixel_array
                        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
                        samples = int(getattr(ds, "SamplesPerPixel", 1))
                        shape = (frames, ds.Rows, ds.Columns) + ((samples,) if samples > 1 else ())
                        tensors[f"gdcm.{i}"] = torch.from_numpy(np.asarray(arr, dtype=np.float64).reshape(shape).copy())
                        entry["gdcm"] = True
                        entry["lossy"] = syntax in LOSSY
                    except Exception as e:  # noqa: BLE001
                        entry["gdcm_error"] = str(e)[:200]
                if syntax in NATIVE_OR_RLE:
                    try:
                        arr = ds.pixel_array
                        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
                        samples = int(getattr(ds, "SamplesPerPixel", 1))
                        shape = (frames, ds.Rows, ds.Columns) + ((samples,) if samples > 1 else ())
                        tensors[f"pixels.{i}"] = torch.from_numpy(np.asarray(arr, dtype=np.float64).reshape(shape).copy())
                        entry["pixels"] = True
                    except Exception as e:  # noqa: BLE001
                        entry["pixel_error"] = str(e)[:200]
        entries.append(entry)
    save(os.path.join(out, "pydicom.safetensors"), tensors, {"count": str(len(paths))})
    with open(os.path.join(out, "pydicom.json"), "w") as f:
        json.dump(entries, f, indent=1)


def rotation(a, b, c):
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


def base_dataset(series_uid, study_uid, syntax):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = syntax != ExplicitVRBigEndian
    ds.is_implicit_VR = syntax == ImplicitVRLittleEndian
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientID = "vox-test"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = "vox synthetic"
    return ds


def set_pixels(ds, arr):
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape[-2], arr.shape[-1]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = arr.astype(np.int16).tobytes() if ds.is_little_endian else arr.astype(">i2").tobytes()


def write_series(directory, rng, slices=9, rows=7, cols=11, spacing=(0.7, 0.9), step=2.5, orient=np.eye(3),
                 origin=(-30.0, -20.0, 50.0), syntax=ExplicitVRLittleEndian, drop=(), uneven=None, tilt=0.0,
                 mixed=False, series_uid=None, study_uid=None, intercept=-1024.0, slope=1.0):
    """Writes a series whose slice k lies at origin + k*step*normal (+ tilt shift); returns the
    expected volume (rescaled, spatial order, the slices actually written) and LPS affine."""
    os.makedirs(directory, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    row_dir, col_dir, normal = orient[:, 0], orient[:, 1], orient[:, 2]
    stored = rng.integers(-600, 1400, size=(slices, rows, cols))
    kept = [k for k in range(slices) if k not in drop]
    positions = {}
    for k in kept:
        along = k * step + (uneven if (uneven is not None and k >= slices // 2) else 0.0)
        shift = np.tan(np.radians(tilt)) * along * col_dir
        positions[k] = np.asarray(origin) + along * normal + shift
    numbers = list(range(1, len(kept) + 1))
    rng.shuffle(numbers)  # InstanceNumbers unrelated to position
    order = list(kept)
    rng.shuffle(order)  # files written, and named, in no spatial order
    for n, k in enumerate(order):
        ds = base_dataset(series_uid, study_uid, syntax)
        ds.InstanceNumber = numbers[n]
        o = orient
        if mixed and k == kept[len(kept) // 2]:
            o = rotation(0.2, 0, 0) @ orient
        ds.ImageOrientationPatient = [float(f"{v:.8f}") for v in np.concatenate([o[:, 0], o[:, 1]])]
        ds.ImagePositionPatient = [float(f"{v:.6f}") for v in positions[k]]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # between rows (j), between columns (i)
        ds.SliceThickness = step
        ds.RescaleIntercept, ds.RescaleSlope = intercept, slope
        set_pixels(ds, stored[k])
        name = f"{rng.integers(1 << 30):x}" + (".dcm" if n % 2 else "")
        ds.save_as(os.path.join(directory, name), write_like_original=False)
    volume = stored[kept].astype(np.float64) * slope + intercept
    affine = np.eye(4)
    affine[:3, 0] = row_dir * spacing[0]
    affine[:3, 1] = col_dir * spacing[1]
    affine[:3, 2] = normal * step
    affine[:3, 3] = origin
    return volume, affine


def write_enhanced(directory, rng, frames=6, rows=5, cols=8):
    """One enhanced multi-frame file whose frames are stored out of spatial order."""
    os.makedirs(directory, exist_ok=True)
    orient = rotation(0.4, -0.3, 0.1)
    spacing, step, origin = (0.8, 1.1), 3.0, np.array([12.0, -7.5, 30.25])
    stored = rng.integers(0, 3000, size=(frames, rows, cols))
    order = list(range(frames))
    rng.shuffle(order)
    ds = base_dataset(generate_uid(), generate_uid(), ExplicitVRLittleEndian)
    ds.Modality = "MR"
    ds.NumberOfFrames = frames
    shared = Dataset()
    plane = Dataset()
    plane.ImageOrientationPatient = [float(f"{v:.8f}") for v in np.concatenate([orient[:, 0], orient[:, 1]])]
    shared.PlaneOrientationSequence = Sequence([plane])
    measures = Dataset()
    measures.PixelSpacing = [spacing[1], spacing[0]]
    measures.SliceThickness = step
    shared.PixelMeasuresSequence = Sequence([measures])
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = 0.5, 2.0, "US"
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in order:
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [float(f"{v:.6f}") for v in origin + k * step * orient[:, 2]]
        item.PlanePositionSequence = Sequence([pos])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored[order].astype(np.uint16).tobytes()
    ds.save_as(os.path.join(directory, "enhanced.dcm"), write_like_original=False)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = orient[:, 0] * spacing[0], orient[:, 1] * spacing[1], orient[:, 2] * step
    affine[:3, 3] = origin
    return stored.astype(np.float64) * 2.0 + 0.5, affine


def series_cases(out):
    rng = np.random.default_rng(20261124)
    root = os.path.join(out, "series")
    tensors, cases = {}, {}

    def case(name, expect, **kwargs):
        path = os.path.join(root, name)
        volume, affine = write_series(path, rng, **kwargs)
        tensors[f"volume.{name}"] = torch.from_numpy(volume)
        tensors[f"affine.{name}"] = torch.from_numpy(affine)
        cases[name] = {"path": path, "expect": expect, "slices": int(volume.shape[0])}

    case("axial", "ok")
    case("oblique", "ok", orient=rotation(0.5, 0.3, -0.2), spacing=(0.6, 0.75), step=1.25, origin=(100.5, -3.25, 7.0))
    flip = np.array([[1, 0, 0], [0, -1, 0], [0, 0, -1]], dtype=float)  # column cosine -y: normal -z
    case("reversed_normal", "ok", orient=flip)
    case("implicit_vr", "ok", syntax=ImplicitVRLittleEndian, orient=rotation(0, 0, np.pi / 2))
    case("big_endian", "ok", syntax=ExplicitVRBigEndian, slope=0.5, intercept=3.0)
    case("missing_slice", "uneven", drop=(4,))
    case("uneven_spacing", "uneven", uneven=0.8)
    case("gantry_tilt", "uneven", tilt=12.0)
    case("mixed_orientation", "error", mixed=True)
    # two series in one directory: the larger is read unless another is asked for
    study = generate_uid()
    big_uid, small_uid = generate_uid(), generate_uid()
    big, big_affine = write_series(os.path.join(root, "two_series"), rng, slices=8, series_uid=big_uid, study_uid=study)
    small, small_affine = write_series(os.path.join(root, "two_series"), rng, slices=5, series_uid=small_uid, study_uid=study,
                                       origin=(1.0, 2.0, 3.0))
    tensors["volume.two_series"], tensors["affine.two_series"] = torch.from_numpy(big), torch.from_numpy(big_affine)
    tensors["volume.two_series_small"], tensors["affine.two_series_small"] = torch.from_numpy(small), torch.from_numpy(small_affine)
    cases["two_series"] = {"path": os.path.join(root, "two_series"), "expect": "ok", "slices": 8, "uid": big_uid,
                           "other_uid": small_uid}
    volume, affine = write_enhanced(os.path.join(root, "enhanced"), rng)
    tensors["volume.enhanced"], tensors["affine.enhanced"] = torch.from_numpy(volume), torch.from_numpy(affine)
    cases["enhanced"] = {"path": os.path.join(root, "enhanced", "enhanced.dcm"), "expect": "ok", "slices": int(volume.shape[0])}
    # a stray non-DICOM file beside a series is skipped
    with open(os.path.join(root, "axial", "README.txt"), "w") as f:
        f.write("not a DICOM file\n")
    save(os.path.join(out, "series.safetensors"), tensors, {"count": str(len(cases))})
    with open(os.path.join(out, "series.json"), "w") as f:
        json.dump(cases, f, indent=1)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    pydicom_files(out)
    series_cases(out)
    print(f"dicom fixtures in {out}")


if __name__ == "__main__":
    main()
