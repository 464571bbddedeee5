#pragma once
// Autocast: within the scope of an amp::Autocast, the ops in autocast's table
// (vox/ops/autocast.hpp) cast their inputs as the table says for the device the tensors are on:
// convolutions and matrix products run in 16 bits, softmax, losses, sums and exp/log in f32,
// normalisations compute in f32 and store 16 bits. Parameters stay f32 (the master weights);
// their 16-bit copies are made once per scope and are remade after an optimizer step.
//
//   amp::Autocast autocast;                            // bf16 on the CPU
//   amp::Autocast autocast(Device::cuda());            // f16 on CUDA devices
//   amp::Autocast autocast(DType::bf16, Device::cuda());
//
// Scopes nest (an inner one may switch off with enabled = false) and are per thread, like
// no_grad. The backward pass runs outside autocast whatever scope it is called from: each
// gradient has the dtype its forward value had.
#include <optional>

#include "vox/autograd/autocast_mode.hpp"
#include "vox/core/device.hpp"
#include "vox/core/error.hpp"

namespace vox::amp {

// The low-precision dtype autocast uses by default: bf16 on the CPU (AVX512_BF16's dtype, and
// f32's range: no loss scaling needed), f16 on CUDA (tensor cores; GradScaler keeps its
// gradients in range).
inline DType default_autocast_dtype(Device device) { return device.is_cuda() ? DType::f16 : DType::bf16; }

class Autocast {
 public:
  // Autocast for tensors on `device`'s kind (every CUDA device for a CUDA one), in `dtype`.
  explicit Autocast(Device device = Device::cpu(), std::optional<DType> dtype = std::nullopt, bool enabled = true)
      : previous_(autocast_mode()) {
    const DType d = dtype.value_or(default_autocast_dtype(device));
    VOX_CHECK(d == DType::bf16 || d == DType::f16, "Autocast", "the low precision must be bf16 or f16, got ", d);
    AutocastMode& mode = autocast_mode();
    if (device.is_cuda()) {
      mode.cuda = enabled;
      mode.cuda_dtype = d;
    } else {
      mode.cpu = enabled;
      mode.cpu_dtype = d;
    }
    ++mode.depth;
  }
  explicit Autocast(DType dtype, Device device = Device::cpu()) : Autocast(device, dtype) {}
  ~Autocast() {
    const int depth = autocast_mode().depth - 1;
    autocast_mode() = previous_;
    autocast_mode().depth = depth;
    if (depth == 0) cast_cache() = CastCache{};  // the 16-bit copies of the parameters go with the outermost scope
  }
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  AutocastMode previous_;
};

// Whether autocast is on for tensors on `device` here, and in which dtype.
inline std::optional<DType> autocast_dtype(Device device) {
  const AutocastMode& mode = autocast_mode();
  return mode.depth > 0 ? mode.dtype_for(device) : std::nullopt;
}

}  // namespace vox::amp
