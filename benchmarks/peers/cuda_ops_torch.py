"""The ops of benchmarks/gpu/cuda_ops_timing.cpp in PyTorch, timed the same way (median of
synchronised calls after three warm-ups, random inputs, TF32 off so matmul and convolution are
full f32). Convolutions run through cuDNN on channels_last_3d tensors with cudnn.benchmark on,
the data and weight gradients through aten's convolution_backward, in f32 and f16; then
scaled-dot-product attention, forward and backward."""
import argparse
import time

import torch


def median_ms(iters, op):
    for _ in range(3):
        op()
    torch.cuda.synchronize()
    ms = []
    for _ in range(iters):
        start = time.perf_counter()
        op()
        torch.cuda.synchronize()
        ms.append((time.perf_counter() - start) * 1e3)
    return sorted(ms)[len(ms) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=30)
    iters = parser.parse_args().iters
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    torch.set_grad_enabled(False)
    dev = torch.device("cuda")
    print(f"# device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    n = 1 << 26
    a, b = torch.randn(n, device=dev), torch.randn(n, device=dev)
    t = median_ms(iters, lambda: a + b)
    print(f"torch add_f32_2^26 {t:.4f} {3 * 4 * n / (t * 1e6):.1f} GB/s")
    t = median_ms(iters, lambda: torch.relu(a))
    print(f"torch relu_f32_2^26 {t:.4f} {2 * 4 * n / (t * 1e6):.1f} GB/s")
    rows = torch.randn(1024, 1024, 3, device=dev)
    t = median_ms(iters, lambda: rows + torch.randn(3).to(dev))
    print(f"torch add_broadcast_f32_3M {t:.4f} {2 * 4 * rows.numel() / (t * 1e6):.1f} GB/s")
    t = median_ms(iters, lambda: a.sum())
    print(f"torch sum_f32_2^26 {t:.4f} {4 * n / (t * 1e6):.1f} GB/s")
    channels = torch.randn(64, 64, 64, 32, device=dev)
    t = median_ms(iters, lambda: channels.sum(dim=(0, 1, 2)))
    print(f"torch sum_channels_last_64^3x32 {t:.4f} {4 * channels.numel() / (t * 1e6):.1f} GB/s")
    for s in (1024, 4096):
        x, y = torch.randn(s, s, device=dev), torch.randn(s, s, device=dev)
        t = median_ms(iters, lambda: x @ y)
        print(f"torch matmul_f32_{s} {t:.4f} {2 * s ** 3 / (t * 1e9):.2f} TFLOP/s")
    shapes = [("1x128^3->16_s2", 1, 128, 16, 2), ("16x64^3->16", 16, 64, 16, 1), ("16x64^3->32_s2", 16, 64, 32, 2),
              ("32x32^3->32", 32, 32, 32, 1), ("64x16^3->64", 64, 16, 64, 1), ("128x8^3->256", 128, 8, 256, 1)]
    cl = torch.channels_last_3d
    for (dtype, suffix) in ((torch.float32, ""), (torch.float16, "_f16")):
        for name, cin, size, cout, stride in shapes:
            x = torch.randn(2, cin, size, size, size, device=dev, dtype=dtype).to(memory_format=cl)
            w = torch.randn(cout, cin, 3, 3, 3, device=dev, dtype=dtype).to(memory_format=cl)
            out = (size + 2 - 3) // stride + 1
            y = torch.randn(2, cout, out, out, out, device=dev, dtype=dtype).to(memory_format=cl)
            flops = 2.0 * 2 * out ** 3 * cout * 27 * cin

            def backward(mask):
                return torch.ops.aten.convolution_backward(y, x, w, None, [stride] * 3, [1] * 3, [1] * 3, False, [0] * 3, 1,
                                                           mask)

            for pass_name, op in (("fwd", lambda: torch.nn.functional.conv3d(x, w, None, stride, 1)),
                                  ("dgrad", lambda: backward([True, False, False])),
                                  ("wgrad", lambda: backward([False, True, False]))):
                t = median_ms(iters, op)
                print(f"torch conv3d_{pass_name}_{name}{suffix} {t:.4f} {flops / (t * 1e9):.2f} TFLOP/s")
    # Self-attention over 4096 tokens, 8 heads of 32 (as vox_cuda_ops_timing): PyTorch picks its
    # fused kernel for f32 (memory-efficient attention).
    q, k, v = (torch.randn(2, 8, 4096, 32, device=dev) for _ in range(3))
    flops = 4.0 * 2 * 8 * 4096 * 4096 * 32
    sdpa = torch.nn.functional.scaled_dot_product_attention
    t = median_ms(iters, lambda: sdpa(q, k, v))
    print(f"torch sdpa_fwd_2x8x4096x32 {t:.4f} {flops / (t * 1e9):.2f} TFLOP/s")
    with torch.enable_grad():
        ql, kl, vl = (t.detach().requires_grad_() for t in (q, k, v))
        t = median_ms(iters, lambda: sdpa(ql, kl, vl).sum().backward())
    print(f"torch sdpa_fwd_bwd_2x8x4096x32 {t:.4f} {3.5 * flops / (t * 1e9):.2f} TFLOP/s")


if __name__ == "__main__":
    main()
