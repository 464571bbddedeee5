#pragma once
// The hook through which a device backend plugs into the core. The CUDA backend
// (kernels/cuda/backend.cu, compiled by nvcc into programs that link vox::cuda) registers itself
// here at start-up; a program compiled by g++ alone has no backend, and any tensor on a CUDA
// device is refused with an error that says how to get one.
//
// The interface is plain data (pointers, shapes, strides, op codes), so that the header-only ops
// compiled by g++ can call kernels compiled by nvcc.
#include <cstdint>
#include <string>

#include "vox/core/device.hpp"
#include "vox/core/dtype.hpp"
#include "vox/core/error.hpp"
#include "vox/core/shape.hpp"

namespace vox {

enum class BinaryOp : uint8_t { add, sub, mul, div, relu_backward };
enum class UnaryOp : uint8_t { neg, exp, log, sqrt, relu, sigmoid, tanh };

// One device's allocator counters, in bytes. `reserved` is what the device allocator holds
// (cached blocks included); `allocated` what live tensors use.
struct DeviceMemoryStats {
  int64_t allocated_bytes = 0;
  int64_t peak_allocated_bytes = 0;
  int64_t reserved_bytes = 0;
  int64_t peak_reserved_bytes = 0;
  int64_t allocations = 0;  // requests served
  int64_t device_allocations = 0;  // requests that reached the driver (cache misses)
};

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  virtual int device_count() const = 0;
  virtual std::string device_name(int device) const = 0;

  virtual void* allocate(size_t nbytes, int device) = 0;
  virtual void deallocate(void* ptr, size_t nbytes, int device) = 0;
  virtual DeviceMemoryStats memory_stats(int device) const = 0;
  virtual void reset_peak_memory(int device) = 0;
  virtual void empty_cache(int device) = 0;
  virtual void synchronize(int device) = 0;

  // Contiguous bytes between host and device (either direction) or device and device; returns
  // when the host may use the data.
  virtual void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) = 0;
  // dst[i] = convert(src at strides) over `shape`, on one device; stride 0 broadcasts.
  virtual void copy_strided(void* dst, DType dst_dtype, const Strides& dst_strides, const void* src, DType src_dtype,
                            const Strides& src_strides, const Shape& shape, int device) = 0;
  // Contiguous dst over `shape`; a and b at their (broadcast) strides; one floating dtype.
  virtual void binary(BinaryOp op, DType dtype, const Shape& shape, void* dst, const void* a, const Strides& a_strides,
                      const void* b, const Strides& b_strides, int device) = 0;
  virtual void unary(UnaryOp op, DType dtype, int64_t n, void* dst, const void* src, int device) = 0;
  // dst[a, b] = sum over r of src[a, r, b] (all contiguous); scale multiplies the sums (means).
  virtual void sum_middle(DType dtype, int64_t outer, int64_t reduced, int64_t inner, void* dst, const void* src, double scale,
                          int device) = 0;
  // C[batch] = A[batch] (m x k) @ B[batch] (k x n), row-major and contiguous, batch stride m*k,
  // k*n, m*n (a stride of 0 reuses one matrix for every batch entry).
  virtual void matmul(DType dtype, int64_t batch, int64_t m, int64_t n, int64_t k, const void* a, int64_t a_batch_stride,
                      const void* b, int64_t b_batch_stride, void* c, int device) = 0;
};

namespace detail {
inline DeviceBackend*& cuda_backend_slot() {
  static DeviceBackend* backend = nullptr;
  return backend;
}
}  // namespace detail

// True when this program has the CUDA backend and the machine has at least one CUDA device.
inline bool cuda_is_available() {
  const DeviceBackend* b = detail::cuda_backend_slot();
  return b && b->device_count() > 0;
}

inline DeviceBackend& cuda_backend(const char* op) {
  DeviceBackend* b = detail::cuda_backend_slot();
  VOX_CHECK(b, op, "a tensor is on a CUDA device, but this program was built without the CUDA backend; link the "
            "CMake target vox::cuda (or compile kernels/cuda/backend.cu with nvcc)");
  return *b;
}

inline DeviceMemoryStats cuda_memory_stats(int device = 0) { return cuda_backend("cuda_memory_stats").memory_stats(device); }

}  // namespace vox
