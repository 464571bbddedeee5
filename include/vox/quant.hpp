#pragma once
// Floor 6: INT8. The scheme (s8 per-channel weights, u8 per-tensor activations), calibration,
// quantized layers on the CPU's VNNI kernels, and quantizing, saving and loading whole networks;
// structured channel pruning.
#include "vox/quant/calibration.hpp"
#include "vox/quant/prune.hpp"
#include "vox/quant/quantize_model.hpp"
#include "vox/quant/quantized_layer.hpp"
#include "vox/quant/scheme.hpp"
