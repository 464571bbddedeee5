#!/usr/bin/env python3
"""PyTorch parity fixtures for vox's ops.

Writes one safetensors file per case into OUTDIR, with the inputs (x0, x1, ...) in PyTorch's own
layout, the output (out), a random upstream gradient (grad_out) and the gradients of the inputs
that require grad (grad_x0, ...). tests/test_parity.cpp runs the same case names through vox,
converting layouts with vox's public functions.

Run with Debian's interpreter, which has python3-torch: /usr/bin/python3 make_fixtures.py OUTDIR
"""
import os
import sys

import torch
import torch.nn.functional as F

from safetensors_writer import save

# Fixtures are f64 so that parity is checked to ~1e-10.
torch.manual_seed(0)
torch.set_default_dtype(torch.float64)

CASES = []


def case(name, inputs, grads, fn):
    CASES.append((name, inputs, grads, fn))


def r(*shape):
    return torch.randn(*shape)


def pos(*shape):
    return torch.rand(*shape) * 1.5 + 0.5


def away(*shape):
    return (torch.rand(*shape) + 0.5) * torch.where(torch.rand(*shape) > 0.5, 1.0, -1.0)


# ---- elementwise (plain layout)
A, B = (2, 3, 1, 5), (3, 4, 1)
case("add", [r(*A), r(*B)], [1, 1], lambda a, b: a + b)
case("sub", [r(*A), r(*B)], [1, 1], lambda a, b: a - b)
case("mul", [r(*A), r(*B)], [1, 1], lambda a, b: a * b)
case("div", [r(*A), away(*B)], [1, 1], lambda a, b: a / b)
case("pow", [pos(*A), r(*B)], [1, 1], lambda a, b: torch.pow(a, b))
case("where", [torch.rand(*B) > 0.5, r(*A), r(5)], [0, 1, 1], lambda c, a, b: torch.where(c, a, b))
case("eq", [torch.randint(0, 3, A).double(), torch.randint(0, 3, B).double()], [0, 0], lambda a, b: a == b)
case("lt", [r(*A), r(*B)], [0, 0], lambda a, b: a < b)
case("ge", [r(*A), r(*B)], [0, 0], lambda a, b: a >= b)
U = (3, 1, 4, 7)
case("neg", [r(*U)], [1], lambda x: -x)
case("exp", [r(*U)], [1], torch.exp)
case("log", [pos(*U)], [1], torch.log)
case("sqrt", [pos(*U)], [1], torch.sqrt)
case("abs", [away(*U)], [1], torch.abs)
case("pow_scalar", [pos(*U)], [1], lambda x: torch.pow(x, 2.5))
case("clamp", [r(*U)], [1], lambda x: torch.clamp(x, -0.5, 0.7))
case("sigmoid", [r(*U)], [1], torch.sigmoid)
case("tanh", [r(*U)], [1], torch.tanh)
case("relu", [away(*U)], [1], F.relu)
case("leaky_relu", [away(*U)], [1], lambda x: F.leaky_relu(x, 0.1))
case("gelu", [r(*U)], [1], F.gelu)
case("gelu_tanh", [r(*U)], [1], lambda x: F.gelu(x, approximate="tanh"))

# ---- reductions
R = (3, 4, 1, 5)
case("sum_axes", [r(*R)], [1], lambda x: x.sum(dim=(1, 3)))
case("sum_all", [r(*R)], [1], lambda x: x.sum())
case("mean_keepdim", [r(*R)], [1], lambda x: x.mean(dim=(0, 2), keepdim=True))
case("amax", [r(*R)], [1], lambda x: x.amax(dim=1))
case("amin", [r(*R)], [1], lambda x: x.amin(dim=(0, 3), keepdim=True))
case("amax_ties", [torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])], [1], lambda x: x.amax(dim=1))
case("argmax", [r(*R)], [0], lambda x: x.argmax(dim=1))
case("var", [r(*R)], [1], lambda x: x.var(dim=(1, 3)))
case("std", [r(*R)], [1], lambda x: x.std())

# ---- linear algebra
case("matmul", [r(2, 1, 3, 4), r(3, 4, 5)], [1, 1], torch.matmul)
case("matmul_vector", [r(4), r(2, 4, 3)], [1, 1], torch.matmul)
case("linear", [r(2, 3, 7), r(5, 7), r(5)], [1, 1, 1], F.linear)

# ---- convolution: activations NC(D)HW, weights [Cout, Cin/g, k...] (transposed: [Cin, Cout/g, k...])
case("conv3d", [r(2, 3, 5, 4, 6), r(4, 3, 3, 3, 3), r(4)], [1, 1, 1], lambda x, w, b: F.conv3d(x, w, b, padding=1))
case("conv3d_strided_dilated_grouped", [r(1, 4, 7, 6, 5), r(6, 2, 3, 2, 3), r(6)], [1, 1, 1],
     lambda x, w, b: F.conv3d(x, w, b, stride=(2, 1, 2), padding=(1, 0, 2), dilation=(1, 2, 1), groups=2))
case("conv2d", [r(2, 4, 7, 6), r(6, 2, 3, 3), r(6)], [1, 1, 1],
     lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 0), groups=2))
case("conv_transpose3d", [r(2, 4, 3, 4, 2), r(4, 3, 3, 3, 3), r(3)], [1, 1, 1],
     lambda x, w, b: F.conv_transpose3d(x, w, b, stride=2, padding=1, output_padding=1))
case("conv_transpose3d_k2", [r(1, 2, 3, 2, 3), r(2, 5, 2, 2, 2), r(5)], [1, 1, 1],
     lambda x, w, b: F.conv_transpose3d(x, w, b, stride=2))
case("conv_transpose2d_grouped", [r(2, 4, 3, 4), r(4, 3, 2, 3), r(6)], [1, 1, 1],
     lambda x, w, b: F.conv_transpose2d(x, w, b, stride=(2, 3), padding=(1, 0), output_padding=(1, 2), dilation=(2, 1), groups=2))

# ---- pooling and resampling (NCDHW)
V = (2, 3, 5, 6, 3)
case("max_pool3d", [r(*V)], [1], lambda x: F.max_pool3d(x, 3, 2, 1))
case("avg_pool3d_include_pad", [r(*V)], [1], lambda x: F.avg_pool3d(x, (3, 2, 3), (2, 1, 2), 1))
case("avg_pool3d_exclude_pad", [r(*V)], [1], lambda x: F.avg_pool3d(x, 3, 2, 1, count_include_pad=False))
case("adaptive_avg_pool3d", [r(*V)], [1], lambda x: F.adaptive_avg_pool3d(x, (3, 4, 2)))
case("upsample_nearest", [r(*V)], [1], lambda x: F.interpolate(x, size=(7, 12, 5), mode="nearest"))
case("upsample_trilinear", [r(*V)], [1], lambda x: F.interpolate(x, size=(7, 12, 5), mode="trilinear", align_corners=False))
case("upsample_trilinear_align", [r(*V)], [1], lambda x: F.interpolate(x, size=(7, 12, 5), mode="trilinear", align_corners=True))
case("upsample_trilinear_down", [r(*V)], [1], lambda x: F.interpolate(x, size=(3, 4, 2), mode="trilinear", align_corners=False))

# ---- normalisation (NCDHW)
N5 = (2, 6, 3, 2, 4)
case("batch_norm_train", [r(*N5), pos(6), r(6)], [1, 1, 1],
     lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True))
case("batch_norm_eval", [r(*N5), r(6), pos(6), pos(6), r(6)], [1, 0, 0, 1, 1],
     lambda x, m, v, w, b: F.batch_norm(x, m, v, w, b, training=False))
case("instance_norm_affine", [r(*N5), pos(6), r(6)], [1, 1, 1], lambda x, w, b: F.instance_norm(x, weight=w, bias=b))
case("instance_norm", [r(*N5)], [1], F.instance_norm)
case("group_norm", [r(*N5), pos(6), r(6)], [1, 1, 1], lambda x, w, b: F.group_norm(x, 3, w, b))
case("layer_norm", [r(3, 4, 5), pos(4, 5), r(4, 5)], [1, 1, 1], lambda x, w, b: F.layer_norm(x, (4, 5), w, b))
case("prelu_shared", [away(2, 4, 3, 1), pos(1)], [1, 1], F.prelu)
case("prelu_channel", [away(2, 4, 3, 1), pos(4)], [1, 1], F.prelu)
case("softmax_channels", [r(2, 5, 3, 4)], [1], lambda x: F.softmax(x, dim=1))
case("log_softmax_last", [r(2, 5, 3)], [1], lambda x: F.log_softmax(x, dim=-1))

# ---- assembly
case("concat", [r(2, 1, 3), r(2, 4, 3)], [1, 1], lambda a, b: torch.cat([a, b], dim=1))
case("split", [r(3, 7)], [1], lambda x: torch.split(x, [2, 4, 1], dim=1)[1])
case("pad_constant", [r(2, 3, 4, 5, 2)], [1], lambda x: F.pad(x, (1, 0, 2, 1, 0, 3), mode="constant", value=0.5))
case("pad_reflect", [r(2, 3, 4, 5, 3)], [1], lambda x: F.pad(x, (1, 2, 2, 1, 0, 3), mode="reflect"))
case("pad_replicate", [r(2, 3, 4, 5, 2)], [1], lambda x: F.pad(x, (1, 0, 2, 1, 0, 3), mode="replicate"))
case("flip", [r(2, 3, 4)], [1], lambda x: torch.flip(x, (0, 2)))
case("one_hot", [torch.randint(0, 4, (2, 3, 5))], [0], lambda t: F.one_hot(t, 4))

# ---- losses
case("cross_entropy_seg", [r(2, 4, 3, 2, 3), torch.randint(0, 4, (2, 3, 2, 3)), pos(4)], [1, 0, 0],
     lambda x, t, w: F.cross_entropy(x, t, weight=w))
ignored = torch.randint(-1, 5, (2, 3))
ignored[ignored < 0] = -100
case("cross_entropy_smoothing_ignore", [r(2, 5, 3), ignored, pos(5)], [1, 0, 0],
     lambda x, t, w: F.cross_entropy(x, t, weight=w, ignore_index=-100, label_smoothing=0.1))
case("cross_entropy_smoothing_unweighted", [r(6, 5), ignored.reshape(6)], [1, 0],
     lambda x, t: F.cross_entropy(x, t, label_smoothing=0.2))
case("cross_entropy_sum", [r(6, 5), torch.randint(0, 5, (6,))], [1, 0], lambda x, t: F.cross_entropy(x, t, reduction="sum"))
case("cross_entropy_none", [r(6, 5), torch.randint(0, 5, (6,))], [1, 0], lambda x, t: F.cross_entropy(x, t, reduction="none"))
case("bce_with_logits", [r(3, 4) * 4, torch.rand(3, 4), pos(4), pos(4)], [1, 0, 0, 0],
     lambda x, y, w, pw: F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw))

# ---- attention (PyTorch 1.13 has no fused SDPA; this is its definition)
mask = torch.rand(3, 5) > 0.5
mask[:, 0] = True
case("sdpa_bool_mask", [r(2, 3, 4), r(2, 5, 4), r(2, 5, 3), mask], [1, 1, 1, 0],
     lambda q, k, v, m: torch.softmax((q @ k.transpose(-1, -2) / 2.0).masked_fill(~m, float("-inf")), -1) @ v)
case("sdpa_additive_mask", [r(2, 3, 4), r(2, 5, 4), r(2, 5, 3), r(3, 5)], [1, 1, 1, 1],
     lambda q, k, v, m: torch.softmax(q @ k.transpose(-1, -2) / 2.0 + m, -1) @ v)


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    for name, inputs, grads, fn in CASES:
        inputs = [x.clone().requires_grad_(bool(g)) for x, g in zip(inputs, grads)]
        out = fn(*inputs)
        tensors = {f"x{i}": x for i, x in enumerate(inputs)}
        tensors["out"] = out
        if out.dtype.is_floating_point and any(grads):
            grad_out = torch.randn_like(out)
            out.backward(grad_out)
            tensors["grad_out"] = grad_out
            for i, x in enumerate(inputs):
                if grads[i]:
                    tensors[f"grad_x{i}"] = x.grad
        save(os.path.join(out_dir, name + ".safetensors"), tensors, {"torch": torch.__version__})
    print(f"wrote {len(CASES)} parity fixtures with torch {torch.__version__} to {out_dir}")


if __name__ == "__main__":
    main()
