"""A `vox bench` model on random data in a peer runtime, timed as `vox bench` times it.

    python model_peer.py --model monai-unet|unet3d|resnet3d-18 --runtime torch|onnxruntime|openvino
                         --mode train|infer [--size 96] [--batch 1] [--iters 10] [--warmup 2]
                         [--threads 2] [--classes 2] [--device cpu|cuda] [--precision f32|bf16|int8]

Models, with vox's registry defaults: monai-unet is MONAI's UNet (16-256 channels, 2 residual
units), unet3d the MLPerf KiTS19 3D U-Net (filters 32-320), resnet3d-18 MONAI's resnet18.
A training iteration: forward, the loss (MONAI's DiceCELoss(to_onehot_y=True, softmax=True) for
the U-Nets, cross-entropy for the classifier), backward, Adam step. An inference iteration: the
forward pass (torch.inference_mode, or the exported ONNX graph in ONNX Runtime / OpenVINO).
--precision bf16 is each runtime's own bf16: PyTorch's torch.autocast("cpu", dtype=torch.bfloat16)
around the forward pass and the loss, OpenVINO's INFERENCE_PRECISION_HINT bf16 (its default on a
CPU with bf16 instructions; f32 otherwise, as the hint is set to f32 then).
--precision int8 (inference, ONNX Runtime and OpenVINO): post-training static quantization
calibrated on 4 random inputs of the same shape, each runtime's recommended way: OpenVINO through
NNCF's nncf.quantize (its default preset, then compiled with OpenVINO's default settings, so that
what NNCF leaves in float runs in OpenVINO's default precision), ONNX Runtime through
quantize_static (QDQ, per-channel s8 weights, u8 activations, MinMax calibration).
Prints the median as `ms_per_iter=<value>` and the peak resident memory as `peak_rss_mib=<value>`.
With --device cuda (PyTorch only) the model and data run on the GPU as vox's do there: f32 with
TF32 off, channels_last_3d, cudnn.benchmark on; every iteration ends with a synchronisation, and
the peak of torch.cuda.max_memory_allocated after the warm-up is printed as `peak_gpu_mib=<value>`.
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
from monai.networks.nets import UNet, resnet18

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "parity"))
from mlperf_unet3d import MLPerfUNet3D  # noqa: E402

MODELS = ("monai-unet", "unet3d", "resnet3d-18")


def make_model(name, classes):
    torch.manual_seed(0)
    if name == "monai-unet":
        return UNet(spatial_dims=3, in_channels=1, out_channels=classes, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
                    num_res_units=2)
    if name == "unet3d":
        return MLPerfUNet3D(in_channels=1, n_class=classes)
    return resnet18(spatial_dims=3, n_input_channels=1, num_classes=classes)


def timed(step, iters, warmup, synchronize=lambda: None):
    for _ in range(warmup):
        step()
    synchronize()
    times = []
    for i in range(iters):
        start = time.perf_counter()
        step()
        synchronize()
        times.append((time.perf_counter() - start) * 1000)
        print(f"iteration {i + 1}: {times[-1]:.1f} ms", flush=True)
    return statistics.median(times)


def export_onnx(model, x, directory):
    path = os.path.join(directory, "model.onnx")
    model.eval()
    try:
        torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False)
    except TypeError:  # exporters without the dynamo switch
        torch.onnx.export(model, (x,), path, opset_version=17)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="monai-unet", choices=MODELS)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime", "openvino"])
    ap.add_argument("--mode", default="train", choices=["train", "infer"])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16", "int8"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = make_model(a.model, a.classes)
    classify = a.model.startswith("resnet")
    x = torch.randn(a.batch, 1, a.size, a.size, a.size)
    gpu = a.device == "cuda"
    synchronize = torch.cuda.synchronize if gpu else (lambda: None)
    if gpu:
        assert a.runtime == "torch", "--device cuda runs PyTorch only"
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        model = model.cuda().to(memory_format=torch.channels_last_3d)
        x = x.cuda().to(memory_format=torch.channels_last_3d)
    version = f"torch {torch.__version__}"
    bf16 = a.precision == "bf16"
    int8 = a.precision == "int8"
    assert not (bf16 and a.runtime == "onnxruntime"), "ONNX Runtime has no bf16 CPU path to compare with"
    assert not (int8 and (a.runtime == "torch" or a.mode != "infer")), "int8 is ONNX Runtime's and OpenVINO's inference"
    calibration = [torch.randn(a.batch, 1, a.size, a.size, a.size).numpy() for _ in range(4)]
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
    if a.runtime == "torch" and a.mode == "train":
        if classify:
            y = torch.randint(0, a.classes, (a.batch,))
            loss = torch.nn.CrossEntropyLoss()
        else:
            y = torch.randint(0, a.classes, (a.batch, 1, a.size, a.size, a.size))
            loss = DiceCELoss(to_onehot_y=True, softmax=True)
        y = y.to(x.device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step():
            opt.zero_grad()
            with autocast():
                value = loss(model(x), y)
            value.backward()
            opt.step()
    elif a.runtime == "torch":
        model.eval()

        def step():
            with torch.inference_mode(), autocast():
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
            if int8:
                from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

                class Reader(CalibrationDataReader):
                    def __init__(self, name):
                        self.items = iter([{name: c} for c in calibration])

                    def get_next(self):
                        return next(self.items, None)

                input_name = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()[0].name
                quantized = os.path.join(directory, "model_int8.onnx")
                quantize_static(path, quantized, Reader(input_name), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
                path = quantized
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            version = f"onnxruntime {ort.__version__}"

            def step():
                session.run(None, {name: feed})
        else:
            import openvino as ov
            core = ov.Core()
            core.set_property("CPU", {"INFERENCE_NUM_THREADS": a.threads})
            if int8:
                import nncf
                quantized = nncf.quantize(core.read_model(path), nncf.Dataset(calibration), subset_size=len(calibration))
                compiled = core.compile_model(quantized, "CPU")
                version = f"openvino {ov.__version__}, nncf {nncf.__version__}"
            else:
                compiled = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"})
                version = f"openvino {ov.__version__}"
            request = compiled.create_infer_request()

            def step():
                request.infer({0: feed})
    where = torch.cuda.get_device_name(0) if gpu else "cpu"
    print(f"{a.model}: {a.runtime} ({version}), {a.mode} in {a.precision}, input {a.batch}x{a.size}^3x1, on {where}, {a.threads} threads", flush=True)
    if gpu:
        for _ in range(a.warmup):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    median = timed(step, a.iters, 0 if gpu else a.warmup, synchronize)
    print(f"peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
    if gpu:
        print(f"peak_gpu_mib={torch.cuda.max_memory_allocated() / 2 ** 20:.0f}")
    print(f"ms_per_iter={median:.3f}")


if __name__ == "__main__":
    sys.exit(main())
