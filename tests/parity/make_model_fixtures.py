#!/usr/bin/env python3
"""Fixtures for model and optimizer parity, from MONAI's, nnU-Net's and PyTorch's own classes.

monai_unet_{instance,batch}.safetensors: the state_dict ("state.<key>"), an input x (NCDHW,
non-cubic), the output, a target, the cross-entropy loss and every parameter's gradient
("grad.<key>") after one backward; for batch norm also the running statistics after the pass.
model_<name>.safetensors: AttentionUnet, ResNets, nnU-Net's PlainConvUNet, torch's
MultiheadAttention and the MLPerf 3D U-Net (written here from its published layout, with its
state_dict keys), in f64: the state_dict, input, outputs, fixed random projections r<i> of the outputs
(loss = sum_i mean(out_i * r_i)), every parameter's gradient and the buffers after the pass.
optim_{sgd_nesterov,adam,adamw}.safetensors: initial parameters, five gradients per parameter and
the parameters after five steps of the PyTorch optimizer, in f64.
"""
import os
import sys

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss, FocalLoss
from monai.networks.nets import AttentionUnet, UNet, resnet10, resnet18, resnet34, resnet50
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mlperf_unet3d import MLPerfUNet3D  # noqa: E402
from safetensors_writer import save  # noqa: E402


def unet_case(out_dir, name, norm):
    torch.manual_seed(3)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
               num_res_units=2, norm=norm)
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(1, 1, 32, 48, 64)
    target = torch.randint(0, 2, (1, 32, 48, 64))
    out = net(x)
    loss = F.cross_entropy(out, target)
    loss.backward()
    tensors = {"state." + k: v for k, v in state.items()}
    tensors.update({"x": x, "out": out, "target": target, "loss": loss.reshape(1)})
    for k, p in net.named_parameters():
        tensors["grad." + k] = p.grad
    for k, b in net.named_buffers():
        tensors["after." + k] = b
    save(os.path.join(out_dir, name + ".safetensors"), tensors, {"monai_norm": norm})


def model_case(out_dir, name, net, x, run, meta=None, f32_forward=False):
    """run(net, x) -> list of outputs, each laid out NC... like x.

    By default in f64, with loss = sum_i mean(out_i * r_i) and every gradient: the f32 gradients
    of ReLU networks move by percents when one ReLU input within rounding of zero switches sides,
    and deep norms over few voxels amplify rounding (PyTorch's own f32 gradients of the MLPerf
    U-Net differ from its f64 ones by up to 1.5%), so the arithmetic is compared exactly in f64.
    With f32_forward, the f32 outputs and buffers only."""
    if not f32_forward:
        net, x = net.double(), x.double()
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    outputs = run(net, x)
    tensors = {"state." + k: v for k, v in state.items()}
    tensors["x"] = x
    for i, o in enumerate(outputs):
        tensors[f"out{i}"] = o
    if not f32_forward:
        projections = [torch.randn_like(o) for o in outputs]
        sum((o * r).mean() for o, r in zip(outputs, projections)).backward()
        for i, r in enumerate(projections):
            tensors[f"r{i}"] = r
        for k, p in net.named_parameters():
            tensors["grad." + k] = p.grad
    for k, b in net.named_buffers():
        tensors["after." + k] = b
    meta = dict(meta or {})
    meta["parameters"] = str(sum(p.numel() for p in net.parameters()))
    save(os.path.join(out_dir, "model_" + name + ".safetensors"), tensors, meta)


def model_cases(out_dir):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    single = lambda net, x: [net(x)]  # noqa: E731
    torch.manual_seed(11)
    model_case(out_dir, "attention_unet", AttentionUnet(3, 1, 2, channels=(4, 8, 16, 32), strides=(2, 2, 2)),
               torch.randn(2, 1, 16, 24, 8), single)
    torch.manual_seed(12)
    model_case(out_dir, "resnet18", resnet18(n_input_channels=2, num_classes=3, widen_factor=0.25),
               torch.randn(2, 2, 20, 24, 28), single)
    torch.manual_seed(13)
    model_case(out_dir, "resnet50", resnet50(n_input_channels=1, num_classes=2, widen_factor=0.125, conv1_t_size=3,
                                             conv1_t_stride=2), torch.randn(2, 1, 24, 20, 16), single)
    torch.manual_seed(14)
    model_case(out_dir, "resnet10_shortcut_a", resnet10(n_input_channels=1, num_classes=2, widen_factor=0.25,
                                                        shortcut_type="A", no_max_pool=True),
               torch.randn(2, 1, 12, 12, 12), single)
    torch.manual_seed(15)
    model_case(out_dir, "unet3d", MLPerfUNet3D(filters=(8, 16, 32, 64, 80)), torch.randn(1, 1, 32, 64, 32), single)
    # f32 forward on non-cubic inputs: the full-width ResNet-18 and the MLPerf U-Net.
    torch.manual_seed(18)
    model_case(out_dir, "resnet18_f32", resnet18(n_input_channels=1, num_classes=2), torch.randn(2, 1, 32, 48, 64), single,
               f32_forward=True)
    torch.manual_seed(19)
    model_case(out_dir, "unet3d_f32", MLPerfUNet3D(), torch.randn(1, 1, 32, 64, 96), single, f32_forward=True)
    torch.manual_seed(16)
    nnunet = PlainConvUNet(1, 4, (8, 16, 32, 64), nn.Conv3d, [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                           [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], 2, 3, (1, 2, 2), conv_bias=True,
                           norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                           nonlin=nn.LeakyReLU, nonlin_kwargs={"negative_slope": 1e-2, "inplace": True},
                           deep_supervision=True)
    model_case(out_dir, "nnunet_plain", nnunet, torch.randn(2, 1, 8, 16, 24), lambda net, x: list(net(x)))
    torch.manual_seed(17)
    attention = nn.MultiheadAttention(12, 3, batch_first=True)

    def tokens(net, x):  # NCDHW volume -> tokens [N, DHW, C] -> back to NCDHW
        t = x.flatten(2).transpose(1, 2)
        out = net(t, t, t, need_weights=False)[0]
        return [out.transpose(1, 2).reshape(x.shape)]

    model_case(out_dir, "mhsa", attention, torch.randn(2, 12, 3, 4, 5), tokens)
    for depth, make in ((10, resnet10), (18, resnet18), (34, resnet34), (50, resnet50)):
        net = make(n_input_channels=1, num_classes=2)
        save(os.path.join(out_dir, f"count_resnet{depth}.safetensors"), {"dummy": torch.zeros(1)},
             {"parameters": str(sum(p.numel() for p in net.parameters()))})


def optim_case(out_dir, name, make):
    torch.manual_seed(5)
    params = [torch.randn(7, 3, dtype=torch.float64, requires_grad=True), torch.randn(5, dtype=torch.float64, requires_grad=True)]
    tensors = {f"p{i}": p.detach().clone() for i, p in enumerate(params)}
    opt = make(params)
    for step in range(5):
        for i, p in enumerate(params):
            g = torch.randn_like(p)
            tensors[f"g{i}.{step}"] = g
            p.grad = g.clone()
        opt.step()
    for i, p in enumerate(params):
        tensors[f"final{i}"] = p.detach().clone()
    save(os.path.join(out_dir, name + ".safetensors"), tensors, {"torch": torch.__version__})


def loss_case(out_dir, name, loss):
    """Logits [2, 4, 3, 5, 6] (NCDHW, f64) and labels [2, 3, 5, 6]; the loss, and d(sum loss)/dx."""
    torch.manual_seed(7)
    x = torch.randn(2, 4, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (2, 3, 5, 6))
    out = loss(x, labels.unsqueeze(1))
    out.sum().backward()
    if out.dim() > 2:  # reduction "none" keeps singleton spatial axes: [N, C, 1, 1, 1] -> [N, C]
        out = out.reshape(out.shape[0], out.shape[1])
    save(os.path.join(out_dir, name + ".safetensors"), {"x": x, "labels": labels, "out": out, "grad_x": x.grad},
         {"torch": torch.__version__})


def main():
    out_dir = sys.argv[1]
    unet_case(out_dir, "monai_unet_instance", "instance")
    unet_case(out_dir, "monai_unet_batch", "batch")
    model_cases(out_dir)
    optim_case(out_dir, "optim_sgd_nesterov",
               lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4))
    optim_case(out_dir, "optim_sgd_dampened", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.3))
    optim_case(out_dir, "optim_adam", lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3))
    optim_case(out_dir, "optim_adamw", lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05))
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
    loss_case(out_dir, "loss_dice_softmax", DiceLoss(to_onehot_y=True, softmax=True))
    loss_case(out_dir, "loss_dice_sigmoid_nobg_batch_squared",
              DiceLoss(to_onehot_y=True, sigmoid=True, include_background=False, batch=True, squared_pred=True))
    loss_case(out_dir, "loss_dice_jaccard_none", DiceLoss(to_onehot_y=True, softmax=True, jaccard=True, reduction="none"))
    loss_case(out_dir, "loss_dice_ce", DiceCELoss(to_onehot_y=True, softmax=True, ce_weight=weight, lambda_dice=0.7))
    loss_case(out_dir, "loss_focal_sigmoid", FocalLoss(to_onehot_y=True))
    loss_case(out_dir, "loss_focal_softmax_alpha", FocalLoss(to_onehot_y=True, use_softmax=True, alpha=0.25, gamma=1.5))
    loss_case(out_dir, "loss_focal_softmax_nobg", FocalLoss(to_onehot_y=True, use_softmax=True, include_background=False))
    loss_case(out_dir, "loss_focal_weight_sum", FocalLoss(to_onehot_y=True, weight=[0.5, 1.0, 2.0, 1.5], alpha=0.3, reduction="sum"))
    print(f"wrote model, optimizer and loss fixtures to {out_dir}")


if __name__ == "__main__":
    main()
