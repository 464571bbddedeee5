#!/usr/bin/env bash
# The vox program on real files: `vox info` reports what nibabel reports, `vox convert`
# reorients and windows with the geometry kept, DICOM series (written by pydicom) convert to
# NIfTI files nibabel reads with the expected voxels and affine, and bad input ends with
# status 1 and one line.
#   test_cli.sh VOX_BINARY NIFTI_FIXTURE_DIR DICOM_FIXTURE_DIR MONAI_VENV_PYTHON
set -euo pipefail
vox="$1"; fixtures="$2"; dicom="$3"; monai_python="$4"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
nibabel_data="$(/usr/bin/python3 -c 'import nibabel, os; print(os.path.join(os.path.dirname(nibabel.__file__), "tests", "data"))')"
fail() { echo "FAIL: $*"; exit 1; }

out="$("$vox" info "$nibabel_data/anatomical.nii")"
echo "$out"
grep -q "^dims: *33 x 41 x 25 (i x j x k)" <<<"$out" || fail "dims"
grep -q "^orientation: LAS" <<<"$out" || fail "orientation"
grep -q "big-endian" <<<"$out" || fail "byte order"
grep -q "^spacing: *2 x 2 x 2 mm" <<<"$out" || fail "spacing"
out="$("$vox" info "$nibabel_data/functional.nii")"
grep -q "20 volumes" <<<"$out" || fail "4-D"
grep -q "^scaling:" <<<"$out" || fail "scaling"

"$vox" convert "$nibabel_data/anatomical.nii" "$tmp/ras.nii.gz" --orient RAS
out="$("$vox" info "$tmp/ras.nii.gz")"
grep -q "^orientation: RAS" <<<"$out" || fail "convert --orient"
grep -q "gzip" <<<"$out" || fail "gzip output"
/usr/bin/python3 - "$nibabel_data/anatomical.nii" "$tmp/ras.nii.gz" <<'PY' || fail "nibabel disagrees with vox's output"
import sys
import nibabel as nib
import numpy as np
a, b = nib.load(sys.argv[1]), nib.load(sys.argv[2])
ras = nib.as_closest_canonical(a)
assert "".join(nib.aff2axcodes(b.affine)) == "RAS"
assert np.allclose(b.affine, ras.affine, atol=1e-4), (b.affine, ras.affine)
assert np.array_equal(np.asarray(b.dataobj), np.asarray(ras.dataobj))
print("nibabel reads vox's output as its own RAS reorientation")
PY
"$vox" convert "$nibabel_data/anatomical.nii" "$tmp/iso.nii" --spacing 1.5
out="$("$vox" info "$tmp/iso.nii")"
grep -q "^dims: *44 x 55 x 33 (i x j x k)" <<<"$out" || fail "--spacing size"
grep -q "^spacing: *1.5 x 1.5 x 1.5 mm" <<<"$out" || fail "--spacing spacing"
"$vox" convert "$nibabel_data/anatomical.nii" "$tmp/labels.nii" --spacing 4,4,4 --labels
grep -q "read as i32" <<<"$("$vox" info "$tmp/labels.nii")" || fail "--labels keeps the dtype"
"$vox" convert "$fixtures/dtype_i2_le.nii" "$tmp/lung.nii" --window lung --nifti2
out="$("$vox" info "$tmp/lung.nii")"
grep -q "NIfTI-2" <<<"$out" || fail "--nifti2"
grep -q "read as f32" <<<"$out" || fail "windowed output type"

# bad input: status 1 and a single line starting with "vox: "
set +e
err="$("$vox" info "$tmp/missing.nii" 2>&1)"; status=$?
set -e
[ "$status" -eq 1 ] || fail "missing file gave status $status"
[ "$(wc -l <<<"$err")" -eq 1 ] && grep -q "^vox: .*cannot open" <<<"$err" || fail "missing file message: $err"
head -c 200 "$nibabel_data/anatomical.nii" > "$tmp/truncated.nii"
set +e
err="$("$vox" info "$tmp/truncated.nii" 2>&1)"; status=$?
set -e
[ "$status" -eq 1 ] && grep -q "^vox: nifti: .*too short" <<<"$err" || fail "truncated file: $status $err"
set +e
"$vox" convert "$nibabel_data/anatomical.nii" "$tmp/x.nii" --window nosuch > /dev/null 2>&1; status=$?
set -e
[ "$status" -eq 1 ] || fail "unknown window preset gave status $status"

# DICOM: a directory of two series, the larger read and the choice reported on stderr
out="$("$vox" info "$dicom/series/two_series" 2>"$tmp/stderr")"
echo "$out"
grep -q "^series: *2 in this directory" <<<"$out" || fail "dicom info lists the series"
grep -q "^dims: *11 x 7 x 8 (i x j x k), 8 slices" <<<"$out" || fail "dicom info dims"
grep -q "values in HU" <<<"$out" || fail "dicom info rescale"
grep -q "chosen of 2 series" "$tmp/stderr" || fail "the series choice is reported"
for case in oblique enhanced; do
  path="$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]["path"])' "$dicom/series.json" "$case")"
  "$vox" convert "$path" "$tmp/$case.nii.gz"
  /usr/bin/python3 - "$tmp/$case.nii.gz" "$dicom/series.safetensors" "$case" <<'PY' || fail "nibabel disagrees with vox's $case conversion"
import json, struct, sys
import nibabel as nib
import numpy as np
img = nib.load(sys.argv[1])
with open(sys.argv[2], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    blob = f.read()
def tensor(name):
    h = header[name]
    a, b = h["data_offsets"]
    return np.frombuffer(blob[a:b], dtype=np.float64).reshape(h["shape"])
lps = tensor("affine." + sys.argv[3])
ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
assert np.allclose(img.affine, ras, atol=1e-4), (img.affine, ras)
volume = np.transpose(np.asarray(img.dataobj), (2, 1, 0))  # nibabel's [i, j, k] to vox's [k, j, i]
assert np.array_equal(volume, tensor("volume." + sys.argv[3]))
print(sys.argv[3], "converted: nibabel reads the expected voxels and affine")
PY
done
set +e
err="$("$vox" convert "$dicom/series/missing_slice" "$tmp/missing.nii" 2>&1)"; status=$?
set -e
[ "$status" -eq 1 ] && grep -q "^vox: dicom: .*1 missing slice.*--allow-uneven" <<<"$err" || fail "missing slice: $status $err"
"$vox" convert "$dicom/series/missing_slice" "$tmp/missing.nii" --allow-uneven 2>"$tmp/stderr"
grep -q "^vox: warning: .*missing slice" "$tmp/stderr" || fail "--allow-uneven warns"
set +e
err="$("$vox" info "$dicom/series/two_series" --series 1.2.3 2>&1)"; status=$?
set -e
[ "$status" -eq 1 ] && grep -q "no series 1.2.3" <<<"$err" || fail "unknown series: $status $err"

# built-in data: a synthetic MSD dataset and the phantom, read back by nibabel
"$vox" synthetic "$tmp/synthetic" --cases 2 --test 1 --size 24,20,16 --classes 3 --seed 5
/usr/bin/python3 - "$tmp/synthetic" <<'PY' || fail "synthetic dataset"
import json, os, sys
import nibabel as nib
import numpy as np
root = sys.argv[1]
d = json.load(open(os.path.join(root, "dataset.json")))
assert d["numTraining"] == 2 and len(d["training"]) == 2 and len(d["test"]) == 1, d
label = np.asarray(nib.load(os.path.join(root, d["training"][0]["label"])).dataobj)
assert label.shape == (24, 20, 16) and set(np.unique(label)) <= {0, 1, 2} and label.max() == 2, np.unique(label)
print("synthetic dataset read by nibabel")
PY
"$vox" phantom "$tmp/phantom.nii.gz" --size 33
grep -q "^dims: *33 x 33 x 33" <<<"$("$vox" info "$tmp/phantom.nii.gz")" || fail "phantom"
"$vox" convert "$nibabel_data/anatomical.nii" "$tmp/spline.nii" --spacing 1.5 --interpolation bspline
grep -q "^dims: *44 x 55 x 33 (i x j x k)" <<<"$("$vox" info "$tmp/spline.nii")" || fail "--interpolation bspline"
set +e
"$vox" convert "$nibabel_data/anatomical.nii" "$tmp/x.nii" --spacing 2 --interpolation cubic > /dev/null 2>&1; status=$?
set -e
[ "$status" -eq 2 ] || fail "unknown interpolation gave status $status"

# evaluate: a label map against itself (Dice 1, distances 0), and against a shifted copy
label="$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["training"][0]["label"])' "$tmp/synthetic/dataset.json")"
out="$("$vox" evaluate --pred "$tmp/synthetic/$label" --gt "$tmp/synthetic/$label")"
echo "$out"
grep -q '"class": 1, "dice": 1, "hd95_mm": 0, "asd_mm": 0' <<<"$out" || fail "evaluate against itself"
grep -q '"mean_dice": 1' <<<"$out" || fail "evaluate mean"
/usr/bin/python3 - "$tmp/synthetic/$label" "$tmp/shifted.nii.gz" <<'PY'
import sys
import nibabel as nib
import numpy as np
img = nib.load(sys.argv[1])
nib.save(nib.Nifti1Image(np.roll(np.asarray(img.dataobj), 1, axis=0), img.affine), sys.argv[2])
PY
out="$("$vox" evaluate --pred "$tmp/shifted.nii.gz" --gt "$tmp/synthetic/$label" --csv)"
echo "$out"
[ "$(head -1 <<<"$out")" = "class,dice,hd95_mm,asd_mm" ] || fail "evaluate --csv header"
/usr/bin/python3 - "$out" <<'PY' || fail "a one-voxel shift along i gives distances of 1.5 mm at most"
import sys
rows = [line.split(",") for line in sys.argv[1].strip().splitlines()[1:]]
for c, dice, hd95, asd in rows:
    assert 0 < float(dice) < 1 and 0 < float(hd95) <= 1.5 + 1e-6 and 0 < float(asd) <= 1.5, rows
PY

# preview: a valid PNG (every chunk's CRC checked, the pixels inflated) with the label's colour
image="$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["training"][0]["image"])' "$tmp/synthetic/dataset.json")"
"$vox" preview "$tmp/synthetic/$image" "$tmp/preview.png" --label "$tmp/synthetic/$label" --slices 2
/usr/bin/python3 - "$tmp/preview.png" <<'PY' || fail "preview PNG"
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n"
pos, chunks = 8, {}
while pos < len(data):
    n, = struct.unpack(">I", data[pos:pos + 4])
    kind, body, crc = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n], struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
    assert zlib.crc32(kind + body) == crc, kind
    chunks[kind] = chunks.get(kind, b"") + body
    pos += 12 + n
w, h, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
assert depth == 8 and colour == 2, (depth, colour)
raw = zlib.decompress(chunks[b"IDAT"])
assert len(raw) == h * (3 * w + 1)
rows = [raw[y * (3 * w + 1) + 1:(y + 1) * (3 * w + 1)] for y in range(h)]
pixels = {tuple(r[x:x + 3]) for r in rows for x in range(0, 3 * w, 3)}
assert any(p[0] > p[1] + 40 and p[0] > p[2] + 40 for p in pixels), "no red label overlay"
print(f"preview {w}x{h}, {len(pixels)} colours")
PY

# train, resume and infer on a tiny dataset: the run directory, the resumed epochs, the outputs
"$vox" synthetic "$tmp/tiny" --cases 4 --test 1 --size 24,24,24 --seed 2 > /dev/null 2>&1
"$vox" train --data "$tmp/tiny" --run "$tmp/run" --epochs 2 --iterations 2 --patch 16,16,16 --channels 4,8,16 --batch 1 > "$tmp/train.log"
cat "$tmp/train.log"
for f in config.json metrics.csv metrics.json checkpoint_latest.safetensors checkpoint_best.safetensors loss.png mean_dice.png; do
  [ -f "$tmp/run/$f" ] || fail "train wrote no $f"
done
[ "$(wc -l < "$tmp/run/metrics.csv")" -eq 3 ] || fail "two epochs in metrics.csv"
"$vox" train --data "$tmp/tiny" --run "$tmp/run" --epochs 3 --iterations 2 --patch 16,16,16 --channels 4,8,16 --batch 1 --resume > "$tmp/resume.log"
grep -q "resuming at epoch 3" "$tmp/resume.log" || fail "resume"
[ "$(wc -l < "$tmp/run/metrics.csv")" -eq 4 ] || fail "the resumed run adds the third epoch"
"$vox" infer --model "$tmp/run" --input "$tmp/tiny/imagesTs/spheres_004.nii.gz" --output "$tmp/pred.nii.gz" --png "$tmp/pred.png" --tta
[ -f "$tmp/pred.png" ] || fail "infer --png"
/usr/bin/python3 - "$tmp/pred.nii.gz" "$tmp/tiny/imagesTs/spheres_004.nii.gz" <<'PY' || fail "the prediction has the input's grid and label values"
import sys
import nibabel as nib
import numpy as np
p, i = nib.load(sys.argv[1]), nib.load(sys.argv[2])
assert p.shape == i.shape and np.allclose(p.affine, i.affine), (p.shape, i.shape)
assert set(np.unique(np.asarray(p.dataobj))) <= {0, 1}
print("prediction on the input grid")
PY
"$vox" infer --model "$tmp/run" --input "$tmp/tiny/imagesTs/spheres_004.nii.gz" --output "$tmp/post.nii.gz" --largest-component --min-size 5 \
  --tta-axes 0,1 --blend constant --sw-batch 2
/usr/bin/python3 - "$tmp/post.nii.gz" <<'PY' || fail "--largest-component leaves one connected part per class"
import sys
import nibabel as nib
import numpy as np
from scipy import ndimage
labels = np.asarray(nib.load(sys.argv[1]).dataobj)
for c in np.unique(labels)[1:]:
    assert ndimage.label(labels == c, structure=np.ones((3, 3, 3)))[1] == 1, c
print("post-processed prediction: one component per class")
PY

# a JSON config gives the same settings as flags; flags override it; the run keeps train.json
cat > "$tmp/train.json" <<JSON
{"data": "$tmp/tiny", "run": "$tmp/run_config", "arch": "unet3d", "channels": [4, 8], "patch": [16, 16, 16],
 "epochs": 3, "iterations": 1, "batch": 1, "seed": 3}
JSON
"$vox" train --config "$tmp/train.json" --epochs 1 > "$tmp/config.log"
grep -q "training unet3d" "$tmp/config.log" || fail "--config arch"
[ "$(wc -l < "$tmp/run_config/metrics.csv")" -eq 2 ] || fail "--epochs after --config overrides it"
/usr/bin/python3 - "$tmp/run_config/train.json" <<'PY' || fail "train.json records the settings"
import json, sys
t = json.load(open(sys.argv[1]))
assert t["arch"] == "unet3d" and t["channels"] == [4, 8] and t["epochs"] == 1 and t["seed"] == 3, t
assert t["device"] == "cpu" and t["cuda_graph"] is False, t
PY

# classification: ResNet3D on the built-in shapes, then one volume classified as JSON
"$vox" train --task classify --synthetic --run "$tmp/classify" --epochs 1 --iterations 2 --batch 2 --channels 4,4,8,8 > "$tmp/classify.log"
cat "$tmp/classify.log"
grep -q "training resnet3d-18 .* to classify" "$tmp/classify.log" || fail "classify trains resnet3d-18"
grep -q "accuracy .*auc" "$tmp/classify.log" || fail "classification validation reports accuracy and AUC"
grep -q "held-out volumes: accuracy" "$tmp/classify.log" || fail "held-out classification scores"
[ -f "$tmp/classify/test_metrics.json" ] || fail "test_metrics.json"
out="$("$vox" infer --model "$tmp/classify" --input "$tmp/classify/synthetic-data/imagesTs/shape_064.nii.gz" --output "$tmp/class.json")"
echo "$out"
/usr/bin/python3 - "$tmp/class.json" <<'PY' || fail "classification output"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["class"] in (0, 1) and r["name"] in ("sphere", "cube") and abs(sum(r["probabilities"]) - 1) < 1e-5, r
PY

# bad input: a last line "vox: ..." and a non-zero status (1 for bad data, 2 for a misused command)
expect_error() {  # STATUS PATTERN COMMAND...
  local want="$1" pattern="$2" status err
  shift 2
  set +e
  err="$("$@" 2>&1 >/dev/null)"; status=$?
  set -e
  [ "$status" -eq "$want" ] || fail "$* gave status $status, not $want: $err"
  # progress lines may come first; the error is the last line, and a single one
  [ "$(grep -c -e "$pattern" <<<"$err")" -eq 1 ] && tail -1 <<<"$err" | grep -q -e "^vox: .*$pattern" || fail "$* said: $err"
  echo "refused as expected: $(tail -1 <<<"$err")"
}
image="$tmp/tiny/imagesTs/spheres_004.nii.gz"
expect_error 1 "not a run directory" "$vox" infer --model "$tmp/nowhere" --input "$image" --output "$tmp/x.nii.gz"
expect_error 1 "cannot open" "$vox" infer --model "$tmp/run" --input "$tmp/missing.nii.gz" --output "$tmp/x.nii.gz"
expect_error 1 "has no dataset.json" "$vox" train --data "$tmp/nowhere" --run "$tmp/bad_run"
expect_error 2 "unknown option --colour" "$vox" train --synthetic --colour red
expect_error 2 "--lr takes a number, got fast" "$vox" train --synthetic --lr fast
expect_error 2 "--arch takes monai-unet" "$vox" train --data "$tmp/tiny" --run "$tmp/bad_run" --arch vgg
expect_error 2 "--tta-axes takes axes 0, 1 and 2" "$vox" infer --model "$tmp/run" --input "$image" --output "$tmp/x.nii.gz" --tta-axes 3
expect_error 2 "--graph needs --device cuda" "$vox" bench --graph --iters 1 --size 16
expect_error 2 "--cuda-graph needs --device cuda" "$vox" train --synthetic --cuda-graph
expect_error 2 "--device takes cpu, cuda or cuda:N, got gpu" "$vox" train --synthetic --device gpu
expect_error 2 "--device takes cpu, cuda or cuda:N, got tpu" "$vox" infer --model "$tmp/run" --input "$image" --output "$tmp/x.nii.gz" --device tpu
# a run fixes its network and grid: --arch, --channels, --classes, --spacing are refused at
# inference, while --patch (like --overlap and --sw-batch) is applied
for option in "--arch unet3d" "--channels 4,8" "--classes 3" "--spacing 2"; do
  expect_error 2 "${option%% *} cannot change at inference" "$vox" infer --model "$tmp/run" --input "$image" --output "$tmp/x.nii.gz" $option
done
expect_error 2 "--patch sizes must be multiples of 4" "$vox" infer --model "$tmp/run" --input "$image" --output "$tmp/x.nii.gz" --patch 18,18,18
"$vox" infer --model "$tmp/run" --input "$image" --output "$tmp/patch24.nii.gz" --patch 24,24,24 --overlap 0.25 2> /dev/null
expect_error 2 "--classes 3 disagrees with the dataset, whose labels give 2 classes" \
  "$vox" train --data "$tmp/tiny" --run "$tmp/bad_run" --classes 3 --patch 16,16,16 --channels 4,8,16
echo '{"epoch": 3}' > "$tmp/typo.json"
expect_error 1 "unknown key \"epoch\"" "$vox" train --config "$tmp/typo.json"
cp -r "$tmp/tiny" "$tmp/mismatch"
/usr/bin/python3 - "$tmp/mismatch" <<'PY'
import json, os, sys
import nibabel as nib
import numpy as np
root = sys.argv[1]
d = json.load(open(os.path.join(root, "dataset.json")))
first, second = d["training"][0]["label"], d["training"][1]["label"]
img = nib.load(os.path.join(root, first))
nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:20], img.affine), os.path.join(root, first))   # geometry mismatch
img = nib.load(os.path.join(root, second))
data = np.asarray(img.dataobj).copy(); data[0, 0, 0] = 7                                            # a label above the classes
nib.save(nib.Nifti1Image(data, img.affine), os.path.join(root, second))
PY
expect_error 1 "differ in size" "$vox" train --data "$tmp/mismatch" --run "$tmp/bad_run" --patch 16,16,16 --channels 4,8,16
rm -rf "$tmp/mismatch/.vox-cache"; cp "$tmp/tiny/labelsTr/spheres_000.nii.gz" "$tmp/mismatch/labelsTr/"
expect_error 1 "label value 7" "$vox" train --data "$tmp/mismatch" --run "$tmp/bad_run" --patch 16,16,16 --channels 4,8,16
cp -r "$tmp/run" "$tmp/corrupt"
head -c 1000 "$tmp/run/checkpoint_best.safetensors" > "$tmp/corrupt/checkpoint_best.safetensors"
expect_error 1 "safetensors" "$vox" infer --model "$tmp/corrupt" --input "$image" --output "$tmp/x.nii.gz"

# PyTorch/MONAI weights: vox infer --logits --no-window equals MONAI's UNet run by PyTorch on
# the same NIfTI volume (fed in nibabel's axis order), within 1e-4
"$monai_python" "$(dirname "$0")/make_monai_infer_fixture.py" "$tmp/monai" > /dev/null
"$vox" infer --arch monai-unet --classes 2 --weights "$tmp/monai/weights.safetensors" --input "$tmp/monai/input.nii.gz" \
  --output "$tmp/monai/logits.nii.gz" --logits --no-window
/usr/bin/python3 - "$tmp/monai/logits.nii.gz" "$tmp/monai/expected.npy" <<'PY' || fail "vox's logits differ from MONAI's"
import sys
import nibabel as nib
import numpy as np
got, want = np.asarray(nib.load(sys.argv[1]).dataobj), np.load(sys.argv[2])
assert got.shape == want.shape, (got.shape, want.shape)
diff = np.abs(got - want).max()
print(f"largest difference from MONAI's UNet in PyTorch: {diff:.2e} (logits up to {np.abs(want).max():.2f})")
assert diff <= 1e-4, diff
PY

echo "cli ok"
