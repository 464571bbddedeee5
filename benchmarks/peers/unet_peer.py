"""MONAI's UNet (vox's seed U-Net) on random data in a peer runtime, timed as `vox bench` times it.

    python unet_peer.py --runtime torch|onnxruntime|openvino --mode train|infer
                        [--size 96] [--batch 1] [--iters 10] [--warmup 2] [--threads 2]

A training iteration: forward, MONAI's DiceCELoss(to_onehot_y=True, softmax=True), backward, Adam
step. An inference iteration: the forward pass (torch.inference_mode, or the exported ONNX graph
in ONNX Runtime / OpenVINO). Prints the median as `ms_per_iter=<value>` and the peak resident
memory as `peak_rss_mib=<value>`.
"""
import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet


def make_model():
    torch.manual_seed(0)
    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)


def timed(step, iters, warmup):
    for _ in range(warmup):
        step()
    times = []
    for i in range(iters):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
        print(f"iteration {i + 1}: {times[-1]:.1f} ms", flush=True)
    return statistics.median(times)


def export_onnx(model, x, directory):
    path = os.path.join(directory, "unet.onnx")
    model.eval()
    try:
        torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False)
    except TypeError:  # exporters without the dynamo switch
        torch.onnx.export(model, (x,), path, opset_version=17)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime", "openvino"])
    ap.add_argument("--mode", default="train", choices=["train", "infer"])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = make_model()
    x = torch.randn(a.batch, 1, a.size, a.size, a.size)
    version = f"torch {torch.__version__}"
    if a.runtime == "torch" and a.mode == "train":
        y = torch.randint(0, 2, (a.batch, 1, a.size, a.size, a.size))
        loss = DiceCELoss(to_onehot_y=True, softmax=True)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step():
            opt.zero_grad()
            loss(model(x), y).backward()
            opt.step()
    elif a.runtime == "torch":
        model.eval()

        def step():
            with torch.inference_mode():
                model(x)
    else:
        assert a.mode == "infer", "ONNX Runtime and OpenVINO run inference only"
        directory = tempfile.mkdtemp()
        path = export_onnx(model, x, directory)
        feed = x.numpy()
        if a.runtime == "onnxruntime":
            import onnxruntime as ort
            options = ort.SessionOptions()
            options.intra_op_num_threads = a.threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            version = f"onnxruntime {ort.__version__}"

            def step():
                session.run(None, {name: feed})
        else:
            import openvino as ov
            core = ov.Core()
            core.set_property("CPU", {"INFERENCE_NUM_THREADS": a.threads})
            compiled = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()
            version = f"openvino {ov.__version__}"

            def step():
                request.infer({0: feed})
    print(f"{a.runtime} ({version}), {a.mode}, input {a.batch}x{a.size}^3x1, {a.threads} threads", flush=True)
    median = timed(step, a.iters, a.warmup)
    print(f"peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
    print(f"ms_per_iter={median:.3f}")


if __name__ == "__main__":
    sys.exit(main())
