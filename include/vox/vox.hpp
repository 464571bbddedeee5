#pragma once
// vox: a header-only engine for deep learning on 3-D medical images.
// Include this one header; see README.md for the layout of the library.
#include "vox/amp.hpp"
#include "vox/autograd.hpp"
#include "vox/core.hpp"
#include "vox/dist.hpp"
#include "vox/nn.hpp"
#include "vox/ops.hpp"
#include "vox/optim.hpp"
#include "vox/quant.hpp"
#include "vox/train.hpp"
