#!/usr/bin/env python3
"""Fixtures for model and optimizer parity, from MONAI's and PyTorch's own classes.

monai_unet_{instance,batch}.safetensors: the state_dict ("state.<key>"), an input x (NCDHW,
non-cubic), the output, a target, the cross-entropy loss and every parameter's gradient
("grad.<key>") after one backward; for batch norm also the running statistics after the pass.
optim_{sgd_nesterov,adam,adamw}.safetensors: initial parameters, five gradients per parameter and
the parameters after five steps of the PyTorch optimizer, in f64.
"""
import os
import sys

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss, FocalLoss
from monai.networks.nets import UNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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
