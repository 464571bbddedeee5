// The CUDA backend: device memory through the caching allocator, copies, and the kernels behind
// vox's ops for tensors on CUDA devices. Compiled by nvcc into every program that links the CMake
// target vox::cuda; it registers itself with the core (vox/core/backend.hpp) at start-up.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>

#include "kernels/cuda/caching_allocator.cuh"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/reduce.cuh"
#include "vox/core/backend.hpp"

namespace vox::cuda {
namespace {

// The device type that stores each vox dtype.
template <class F>
void dispatch_storage(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    case DType::f16: return f.template operator()<__half>();
    case DType::bf16: return f.template operator()<__nv_bfloat16>();
    case DType::i8: return f.template operator()<int8_t>();
    case DType::u8: return f.template operator()<uint8_t>();
    case DType::i32: return f.template operator()<int32_t>();
    case DType::i64: return f.template operator()<int64_t>();
    case DType::boolean: return f.template operator()<bool>();
  }
  fail(op, "unknown dtype");
}

template <class F>
void dispatch_compute(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    default: fail(op, "the CUDA kernels compute in f32 or f64, got ", dtype_name(t));
  }
}

bool is_contiguous(const Strides& strides, const Shape& shape) {
  int64_t expected = 1;
  for (int64_t d = shape.size() - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

class CudaBackend final : public DeviceBackend {
 public:
  int device_count() const override {
    std::call_once(count_once_, [this] {
      int n = 0;
      if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();  // no driver or no device: the backend reports zero devices
        n = 0;
      }
      count_ = n;
    });
    return count_;
  }
  std::string device_name(int device) const override {
    cudaDeviceProp prop{};
    VOX_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    return prop.name;
  }

  void* allocate(size_t nbytes, int device) override {
    // Once the CUDA runtime is up, register the release of caches and handles at exit: atexit
    // handlers run in reverse order, so this one runs before the runtime's own teardown.
    std::call_once(exit_once_, [] { std::atexit([] { release_all_caches(); }); });
    return allocator_.allocate(nbytes, device);
  }
  void deallocate(void* ptr, size_t, int device) override { allocator_.deallocate(ptr, device); }
  DeviceMemoryStats memory_stats(int device) const override { return allocator_.stats(device); }
  void reset_peak_memory(int device) override { allocator_.reset_peak(device); }
  void empty_cache(int device) override { allocator_.empty_cache(device); }
  void synchronize(int device) override {
    VOX_CUDA_CHECK(cudaSetDevice(device));
    VOX_CUDA_CHECK(cudaDeviceSynchronize());
  }

  void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) override {
    if (nbytes == 0) return;
    const cudaMemcpyKind kind = dst_device.is_cpu()   ? cudaMemcpyDeviceToHost
                                : src_device.is_cpu() ? cudaMemcpyHostToDevice
                                                      : cudaMemcpyDeviceToDevice;
    VOX_CUDA_CHECK(cudaSetDevice(dst_device.is_cuda() ? dst_device.index : src_device.index));
    VOX_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, kind));  // synchronous for the host
  }

  void copy_strided(void* dst, DType dst_dtype, const Strides& dst_strides, const void* src, DType src_dtype,
                    const Strides& src_strides, const Shape& shape, int device) override {
    const int64_t n = numel_of(shape);
    if (n == 0) return;
    VOX_CHECK(shape.size() <= kMaxRank, "copy", "rank ", shape.size(), " is above the CUDA kernels' ", kMaxRank);
    VOX_CUDA_CHECK(cudaSetDevice(device));
    const bool flat = is_contiguous(dst_strides, shape) && is_contiguous(src_strides, shape);
    const Indexer ix = make_indexer(shape, {&dst_strides, &src_strides});
    dispatch_storage(dst_dtype, "copy", [&]<class D>() {
      dispatch_storage(src_dtype, "copy", [&]<class S>() {
        if (flat) copy_same_kernel<D, S><<<grid_for(n), 256>>>(static_cast<D*>(dst), static_cast<const S*>(src), n);
        else copy_strided_kernel<D, S><<<grid_for(n), 256>>>(static_cast<D*>(dst), static_cast<const S*>(src), ix, n);
      });
    });
    VOX_CUDA_CHECK_LAUNCH("copy_strided_kernel");
  }

  void binary(BinaryOp op, DType dtype, const Shape& shape, void* dst, const void* a, const Strides& a_strides, const void* b,
              const Strides& b_strides, int device) override {
    const int64_t n = numel_of(shape);
    if (n == 0) return;
    VOX_CHECK(shape.size() <= kMaxRank, "binary op", "rank ", shape.size(), " is above the CUDA kernels' ", kMaxRank);
    VOX_CUDA_CHECK(cudaSetDevice(device));
    const Strides out_strides = contiguous_strides(shape);
    const bool flat = is_contiguous(a_strides, shape) && is_contiguous(b_strides, shape);
    const Indexer ix = make_indexer(shape, {&out_strides, &a_strides, &b_strides});
    dispatch_compute(dtype, "binary op", [&]<class T>() {
      if (flat && vec4_ready<T>(n, {dst, a, b}))
        binary_vec4_kernel<T><<<grid_for(n / 4), 256>>>(op, static_cast<Vec4<T>*>(dst), static_cast<const Vec4<T>*>(a),
                                                        static_cast<const Vec4<T>*>(b), n / 4);
      else if (flat)
        binary_contiguous_kernel<T><<<grid_for(n), 256>>>(op, static_cast<T*>(dst), static_cast<const T*>(a),
                                                          static_cast<const T*>(b), n);
      else
        binary_strided_kernel<T><<<grid_for(n), 256>>>(op, static_cast<T*>(dst), static_cast<const T*>(a),
                                                       static_cast<const T*>(b), ix, n);
    });
    VOX_CUDA_CHECK_LAUNCH("binary kernel");
  }

  void unary(UnaryOp op, DType dtype, int64_t n, void* dst, const void* src, int device) override {
    if (n == 0) return;
    VOX_CUDA_CHECK(cudaSetDevice(device));
    dispatch_compute(dtype, "unary op", [&]<class T>() {
      if (vec4_ready<T>(n, {dst, src}))
        unary_vec4_kernel<T><<<grid_for(n / 4), 256>>>(op, static_cast<Vec4<T>*>(dst), static_cast<const Vec4<T>*>(src), n / 4);
      else
        unary_kernel<T><<<grid_for(n), 256>>>(op, static_cast<T*>(dst), static_cast<const T*>(src), n);
    });
    VOX_CUDA_CHECK_LAUNCH("unary_kernel");
  }

  void sum_middle(DType dtype, int64_t outer, int64_t reduced, int64_t inner, void* dst, const void* src, double scale,
                  int device) override {
    if (outer * inner == 0) return;
    VOX_CUDA_CHECK(cudaSetDevice(device));
    dispatch_compute(dtype, "sum", [&]<class T>() {
      T* out = static_cast<T*>(dst);
      const T* in = static_cast<const T*>(src);
      const bool columns = inner >= 16;
      const int64_t groups = columns ? outer * ((inner + kLanes - 1) / kLanes) : outer * inner;
      // Enough chunks of R for about four blocks per multiprocessor, each chunk at least 256 long.
      const int64_t wanted = (4 * multiprocessors(device) + groups - 1) / groups;
      const int64_t splits = std::clamp<int64_t>(std::min<int64_t>(wanted, (reduced + 255) / 256), 1, 65535);
      const int64_t chunk = (reduced + splits - 1) / splits;
      T* target = out;
      void* scratch = nullptr;
      if (splits > 1) {
        scratch = allocate(static_cast<size_t>(splits * outer * inner) * sizeof(T), device);
        target = static_cast<T*>(scratch);
      }
      const double pass_scale = splits > 1 ? 1.0 : scale;
      if (columns)
        sum_columns_kernel<T><<<dim3(static_cast<unsigned>(groups), static_cast<unsigned>(splits)), dim3(kLanes, kRowsPerBlock)>>>(
            target, in, outer, reduced, inner, chunk, pass_scale);
      else
        sum_rows_kernel<T, 256><<<dim3(static_cast<unsigned>(groups), static_cast<unsigned>(splits)), 256>>>(
            target, in, outer, reduced, inner, chunk, pass_scale);
      VOX_CUDA_CHECK_LAUNCH("sum pass 1");
      if (splits > 1) {  // partial [S][A*B]: sum over S
        const int64_t width = outer * inner;
        if (width >= 16)
          sum_columns_kernel<T><<<dim3(static_cast<unsigned>((width + kLanes - 1) / kLanes), 1), dim3(kLanes, kRowsPerBlock)>>>(
              out, target, 1, splits, width, splits, scale);
        else
          sum_rows_kernel<T, 256><<<dim3(static_cast<unsigned>(width), 1), 256>>>(out, target, 1, splits, width, splits, scale);
        VOX_CUDA_CHECK_LAUNCH("sum pass 2");
        deallocate(scratch, 0, device);  // stream order: pass 2 runs before any later reuse
      }
    });
  }

  void matmul(DType dtype, int64_t batch, int64_t m, int64_t n, int64_t k, const void* a, int64_t a_batch_stride, const void* b,
              int64_t b_batch_stride, void* c, int device) override {
    if (batch == 0 || m == 0 || n == 0) return;
    VOX_CUDA_CHECK(cudaSetDevice(device));
    cublasHandle_t handle = blas_handle(device);
    // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS multiplies B (n x k) by A (k x m).
    const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
    VOX_CHECK(m < (int64_t{1} << 31) && n < (int64_t{1} << 31) && k < (int64_t{1} << 31), "matmul",
              "matrix sizes above 2^31 are not supported by cuBLAS' 32-bit API");
    if (k == 0) {  // an empty inner product is zero
      dispatch_compute(dtype, "matmul", [&]<class T>() {
        VOX_CUDA_CHECK(cudaMemset(c, 0, static_cast<size_t>(batch * m * n) * sizeof(T)));
      });
      return;
    }
    dispatch_compute(dtype, "matmul", [&]<class T>() {
      const T one = 1, zero = 0;
      if constexpr (std::is_same_v<T, float>)
        VOX_CUDA_CHECK(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, static_cast<const float*>(b), M,
                                                 b_batch_stride, static_cast<const float*>(a), K, a_batch_stride, &zero,
                                                 static_cast<float*>(c), M, m * n, static_cast<int>(batch)));
      else
        VOX_CUDA_CHECK(cublasDgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, static_cast<const double*>(b), M,
                                                 b_batch_stride, static_cast<const double*>(a), K, a_batch_stride, &zero,
                                                 static_cast<double*>(c), M, m * n, static_cast<int>(batch)));
    });
  }

 private:
  cublasHandle_t blas_handle(int device) {
    std::lock_guard<std::mutex> lock(handle_mutex_);
    auto& handle = handles_[device];
    if (!handle) {
      VOX_CUDA_CHECK(cublasCreate(&handle));
      // Full f32 arithmetic (no TF32, which would change results at the 1e-3 level).
      VOX_CUDA_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
    }
    return handle;
  }

  int multiprocessors(int device) {
    std::lock_guard<std::mutex> lock(handle_mutex_);
    int& count = multiprocessors_[device];
    if (count == 0) VOX_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    return count;
  }
  static void release_all_caches();

  std::once_flag exit_once_;
  std::map<int, int> multiprocessors_;
  mutable std::once_flag count_once_;
  mutable int count_ = 0;
  CachingAllocator allocator_;
  std::mutex handle_mutex_;
  std::map<int, cublasHandle_t> handles_;
};

// Registered before main(); never destroyed, so tensors freed during static destruction still
// find their allocator.
CudaBackend* const backend = [] {
  auto* b = new CudaBackend();
  detail::cuda_backend_slot() = b;
  return b;
}();

// At exit: cached blocks and cuBLAS handles (with their workspaces) go back to the driver; live
// tensors, if any, stay with the process.
void CudaBackend::release_all_caches() {
  try {
    for (int d = 0; d < backend->device_count(); ++d) backend->empty_cache(d);
    std::lock_guard<std::mutex> lock(backend->handle_mutex_);
    for (auto& [device, handle] : backend->handles_) {
      cudaSetDevice(device);
      cublasDestroy(handle);
    }
    backend->handles_.clear();
  } catch (const Error&) {  // the runtime may already be shutting down; nothing more to do
  }
}

}  // namespace
}  // namespace vox::cuda
