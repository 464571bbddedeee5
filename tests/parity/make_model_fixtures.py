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


def main():
    out_dir = sys.argv[1]
    unet_case(out_dir, "monai_unet_instance", "instance")
    unet_case(out_dir, "monai_unet_batch", "batch")
    optim_case(out_dir, "optim_sgd_nesterov",
               lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4))
    optim_case(out_dir, "optim_sgd_dampened", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.3))
    optim_case(out_dir, "optim_adam", lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3))
    optim_case(out_dir, "optim_adamw", lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05))
    print(f"wrote model and optimizer fixtures to {out_dir}")


if __name__ == "__main__":
    main()
