#!/usr/bin/env bash
# The issue's headline comparison: the seed U-Net (MONAI UNet) at 96^3, batch 1.
#   benchmarks/peers/unet_vs_peers.sh [ITERS] [THREADS] [VOX_BINARY]
exec bash "$(dirname "$0")/model_vs_peers.sh" monai-unet 96 1 "$@"
