"""The MLPerf KiTS19 3D U-Net in PyTorch, for the parity fixtures and the peer benchmarks.

It follows the reference source, github.com/mlcommons/training, image_segmentation/pytorch/model/
unet3d.py (Unet3D) and layers.py (conv_block_factory, InputBlock, DownsampleBlock, UpsampleBlock,
OutputLayer), module for module, so that its state_dict keys are the reference's: every block is
conv_block_factory's Sequential(conv, norm, activation), with Identity where the reference passes
"none" (upsample_conv.0, output.conv.0). The activation is ReLU, as the KiTS19 runs configure it."""
import torch
from torch import nn


class MLPerfUNet3D(nn.Module):
    """The MLPerf KiTS19 3D U-Net's layout and state_dict keys: conv blocks are Sequential(conv
    without bias, InstanceNorm3d(affine), ReLU); upsampling is a k2 s2 transposed conv with bias,
    concatenated before the skip; the output is Sequential(1x1x1 conv with bias, Identity, Identity)."""

    @staticmethod
    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.InstanceNorm3d(cout, affine=True), nn.ReLU())

    class Double(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = MLPerfUNet3D.block(cin, cout, stride)
            self.conv2 = MLPerfUNet3D.block(cout, cout, 1)

        def forward(self, x):
            return self.conv2(self.conv1(x))

    class Up(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.upsample_conv = nn.Sequential(nn.ConvTranspose3d(cin, cout, 2, 2, 0, bias=True), nn.Identity(), nn.Identity())
            self.conv1 = MLPerfUNet3D.block(2 * cout, cout, 1)
            self.conv2 = MLPerfUNet3D.block(cout, cout, 1)

        def forward(self, x, skip):
            return self.conv2(self.conv1(torch.cat((self.upsample_conv(x), skip), dim=1)))

    class Output(nn.Module):
        # the reference's OutputLayer: conv_block_factory(..., kernel_size=1, padding=0,
        # activation="none", normalization="none") = Sequential(conv with bias, Identity, Identity)
        def __init__(self, cin, classes):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv3d(cin, classes, 1, 1, 0, bias=True), nn.Identity(), nn.Identity())

        def forward(self, x):
            return self.conv(x)

    def __init__(self, in_channels=1, n_class=3, filters=(32, 64, 128, 256, 320)):
        super().__init__()
        self.input_block = self.Double(in_channels, filters[0], 1)
        self.downsample = nn.ModuleList([self.Double(i, o, 2) for i, o in zip(filters[:-1], filters[1:])])
        self.bottleneck = self.Double(filters[-1], filters[-1], 2)
        ups = [self.Up(filters[-1], filters[-1])] + [self.Up(i, o) for i, o in zip(reversed(filters[1:]), reversed(filters[:-1]))]
        self.upsample = nn.ModuleList(ups)
        self.output = self.Output(filters[0], n_class)

    def forward(self, x):
        x = self.input_block(x)
        skips = [x]
        for d in self.downsample:
            x = d(x)
            skips.append(x)
        x = self.bottleneck(x)
        for up, skip in zip(self.upsample, reversed(skips)):
            x = up(x, skip)
        return self.output(x)
