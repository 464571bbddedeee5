"""Calibration fixture: ONNX Runtime's calibrators (onnxruntime.quantization.calibrate, from
PyPI) on fixed batches of values, one collect_data call per batch (so that the histograms merge
batch by batch, as vox's observers see a network's windows), with the defaults quantize_static
gives them, and
compute_scale_zp's uint8 parameters of each range. Writes batches.f32 (the values, little-endian
f32, batch after batch) and calibration.json (batch sizes; per case the range and parameters,
floats as f32 bit patterns).

    python make_calibration_fixture.py OUTDIR
"""
import json
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper
from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator
from onnxruntime.quantization.quant_utils import compute_scale_zp


def bits(v):
    return int(np.asarray(v, dtype=np.float32).reshape(-1)[0].view(np.uint32))


class Batches(CalibrationDataReader):
    def __init__(self, batches):
        self.items = iter([{"x": b} for b in batches])

    def get_next(self):
        return next(self.items, None)


def batches():
    rng = np.random.default_rng(7)
    out = []
    # widening ranges (the histograms grow), skewed values (an asymmetric range), an outlier, a
    # batch of one sign: what a network's activations look like over calibration windows
    for i, (n, scale, shift) in enumerate([(5000, 1.0, 0.3), (7001, 2.5, 0.0), (3000, 0.5, 1.0), (6000, 4.0, -0.5), (4099, 3.0, 2.0)]):
        b = (rng.standard_normal(n) * scale + shift).astype(np.float32)
        if i == 3:
            b[17] = 35.0
        if i == 4:
            b = np.abs(b)
        out.append(b)
    return out


def model_path(directory, n_max):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "zero"], ["y"])], "calibration", [x], [y], [zero])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = os.path.join(directory, "add.onnx")
    onnx.save(m, path)
    return path


def main(out):
    os.makedirs(out, exist_ok=True)
    data = batches()
    with open(os.path.join(out, "batches.f32"), "wb") as f:
        for b in data:
            f.write(b.astype("<f4").tobytes())
    cases = {
        "minmax": (CalibrationMethod.MinMax, {}),
        "percentile": (CalibrationMethod.Percentile, {}),
        "percentile_asymmetric": (CalibrationMethod.Percentile, {"symmetric": False}),
        "entropy": (CalibrationMethod.Entropy, {}),
        "entropy_2048": (CalibrationMethod.Entropy, {"num_bins": 2048}),
    }
    fixture = {"onnxruntime": onnxruntime.__version__, "batch_sizes": [len(b) for b in data], "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(tmp, max(len(b) for b in data))
        for name, (method, extra) in cases.items():
            calibrator = create_calibrator(path, ["Add"], augmented_model_path=os.path.join(tmp, name + ".onnx"),
                                           calibrate_method=method, extra_options=extra)
            for b in data:  # one collect_data per batch: the histograms merge batch by batch, as vox observes them
                calibrator.collect_data(Batches([b]))
            r = calibrator.compute_data()["x"]
            lo, hi = np.float32(r.range_value[0]), np.float32(r.range_value[1])
            zp, scale = compute_scale_zp(np.array(lo, np.float32), np.array(hi, np.float32), np.array(0, np.uint8), np.array(255, np.uint8))
            fixture["cases"][name] = {"low": bits(lo), "high": bits(hi), "scale": bits(scale), "zero_point": int(np.asarray(zp).reshape(-1)[0])}
            del calibrator
    with open(os.path.join(out, "calibration.json"), "w") as f:
        json.dump(fixture, f, indent=1)
    print("calibration fixture from onnxruntime", onnxruntime.__version__, "->", out)


if __name__ == "__main__":
    main(sys.argv[1])
