#pragma once
// Floor 2: dtypes, shapes, devices and CUDA streams, storage, Tensor, threads, RNG, printing.
#include "vox/core/cuda_graph.hpp"
#include "vox/core/cuda_stream.hpp"
#include "vox/core/device.hpp"
#include "vox/core/dtype.hpp"
#include "vox/core/error.hpp"
#include "vox/core/half.hpp"
#include "vox/core/parallel.hpp"
#include "vox/core/print.hpp"
#include "vox/core/rng.hpp"
#include "vox/core/shape.hpp"
#include "vox/core/storage.hpp"
#include "vox/core/tensor.hpp"
