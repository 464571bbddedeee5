// The CUDA backend: device memory through the caching allocator, copies, and the kernels behind
// vox's ops for tensors on CUDA devices. Compiled by nvcc into every program that links the CMake
// target vox::cuda; it registers itself with the core (vox/core/backend.hpp) at start-up.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/caching_allocator.cuh"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/conv_implicit_gemm.cuh"
#include "kernels/cuda/conv_int8.cuh"
#include "kernels/cuda/cudnn_conv.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/extremum.cuh"
#include "kernels/cuda/gather.cuh"
#include "kernels/cuda/graph.cuh"
#include "kernels/cuda/labels.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/optim.cuh"
#include "kernels/cuda/pinned_cache.cuh"
#include "kernels/cuda/random.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/resample.cuh"
#include "kernels/cuda/softmax.cuh"
#include "kernels/cuda/stream.cuh"
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

// The 16-bit floating types, whose kernels compute in float.
template <class F>
bool dispatch_half(DType t, F&& f) {
  switch (t) {
    case DType::f16: f.template operator()<__half>(); return true;
    case DType::bf16: f.template operator()<__nv_bfloat16>(); return true;
    default: return false;
  }
}

// The integer types (not bool), whose elementwise kernels are exact.
template <class F>
bool dispatch_integer(DType t, F&& f) {
  switch (t) {
    case DType::i8: f.template operator()<int8_t>(); return true;
    case DType::u8: f.template operator()<uint8_t>(); return true;
    case DType::i32: f.template operator()<int32_t>(); return true;
    case DType::i64: f.template operator()<int64_t>(); return true;
    default: return false;
  }
}

// Every floating type: f32 and f64, and the 16-bit ones (whose kernels compute in float).
template <class F>
void dispatch_device_floating(DType t, const char* op, F&& f) {
  if (!dispatch_half(t, f)) dispatch_compute(t, op, f);
}

// A host value in a stored dtype (pad's fill value).
template <class T>
T from_host(double v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, bool>) return v != 0.0;
  else return static_cast<T>(v);
}

// Selects `device` for the calling thread; returns the stream its work goes to.
cudaStream_t enter(int device) {
  VOX_CUDA_CHECK(cudaSetDevice(device));
  return launch_stream(device);
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
  void empty_cache(int device) override {
    refuse_while_capturing(launch_stream(device), "empty_cuda_cache", device);
    allocator_.empty_cache(device);
    pinned_.release();
  }
  void synchronize(int device) override {
    refuse_while_capturing(launch_stream(device), "cuda_synchronize", device);
    VOX_CUDA_CHECK(cudaSetDevice(device));
    VOX_CUDA_CHECK(cudaDeviceSynchronize());
  }

  void* create_stream(int device) override {
    VOX_CUDA_CHECK(cudaSetDevice(device));
    cudaStream_t stream = nullptr;
    VOX_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    return stream;
  }
  void destroy_stream(void* stream, int device) override {
    if (!stream) return;
    VOX_CUDA_CHECK(cudaSetDevice(device));
    VOX_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
    allocator_.forget_stream(static_cast<cudaStream_t>(stream), device);
    for (int d = 0; d < kMaxDevices; ++d)  // this thread's current streams, so none dangles
      if (current_stream_slot(d) == stream) current_stream_slot(d) = nullptr;
    VOX_CUDA_CHECK(cudaStreamDestroy(static_cast<cudaStream_t>(stream)));
  }
  void set_current_stream(void* stream, int device) override { current_stream_slot(device) = static_cast<cudaStream_t>(stream); }
  void* current_stream(int device) const override { return launch_stream(device); }
  void synchronize_stream(void* stream, int device) override {
    refuse_while_capturing(static_cast<cudaStream_t>(stream), "synchronize", device);
    VOX_CUDA_CHECK(cudaSetDevice(device));
    VOX_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
  }
  void record_stream(void* ptr, void* stream, int device) override {
    allocator_.record_stream(ptr, static_cast<cudaStream_t>(stream), device);
  }

  void begin_capture(int device) override {
    const cudaStream_t stream = enter(device);
    VOX_CHECK(stream != nullptr, "CUDA graph capture", "the current stream of cuda:", device,
              " is the legacy default stream, which cannot be captured; make a vox::CudaStream current first (CudaGraph::capture "
              "does)");
    VOX_CHECK(!captures_.find(stream), "CUDA graph capture", "the current stream of cuda:", device, " is already being captured");
    auto capture = std::make_unique<GraphCapture>();
    capture->device = device;
    capture->stream = stream;
    capture->pool = allocator_.begin_graph_pool(stream, device);
    captures_.add(std::move(capture));
    // Thread-local mode: only this thread's calls that would break the capture are refused, so
    // other threads (a data loader's copies, say) carry on.
    const cudaError_t status = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
    if (status != cudaSuccess) {
      discard(captures_.remove(stream));
      VOX_CUDA_CHECK(status);
    }
  }
  void* end_capture(int device) override {
    const cudaStream_t stream = enter(device);
    std::unique_ptr<GraphCapture> capture = captures_.remove(stream);
    VOX_CHECK(capture != nullptr, "CUDA graph capture", "no capture is in progress on the current stream of cuda:", device);
    allocator_.end_graph_capture(stream, device);
    const cudaError_t ended = cudaStreamEndCapture(stream, &capture->graph);
    if (ended != cudaSuccess) {
      (void)cudaGetLastError();
      discard(std::move(capture));
      fail("CUDA graph capture", "the capture on cuda:", device, " failed (", cudaGetErrorName(ended), ": ",
           cudaGetErrorString(ended), "): something in the captured work synchronised or used another stream without "
           "joining it back; see the first error raised inside the capture");
    }
    const cudaError_t made = cudaGraphInstantiate(&capture->exec, capture->graph, 0);
    if (made != cudaSuccess) {
      (void)cudaGetLastError();
      discard(std::move(capture));
      VOX_CUDA_CHECK(made);
    }
    return capture.release();
  }
  void replay_graph(void* graph, int device) override {
    const cudaStream_t stream = enter(device);
    auto* capture = static_cast<GraphCapture*>(graph);
    VOX_CHECK(capture && capture->exec, "CUDA graph replay", "the graph was not captured");
    VOX_CHECK(capture->device == device, "CUDA graph replay", "the graph was captured on cuda:", capture->device, ", not cuda:", device);
    VOX_CHECK(!captures_.find(stream), "CUDA graph replay", "the current stream of cuda:", device, " is being captured");
    VOX_CUDA_CHECK(cudaGraphLaunch(capture->exec, stream));
  }
  void destroy_graph(void* graph, int device) override {
    if (!graph) return;
    (void)device;  // the graph knows its device; discard waits for it, so no replay still reads its memory
    discard(std::unique_ptr<GraphCapture>(static_cast<GraphCapture*>(graph)));
  }
  bool capturing(int device) const override { return captures_.find(launch_stream(device)) != nullptr; }
  void store_words(void* dst, const std::array<uint64_t, 4>& words, int count, int device) override {
    VOX_CHECK(count >= 0 && count <= 4, "store_words", "count ", count, " is outside [0, 4]");
    const cudaStream_t stream = enter(device);
    Words w{};
    for (int i = 0; i < count; ++i) w.value[i] = words[static_cast<size_t>(i)];
    store_words_kernel<<<1, 32, 0, stream>>>(static_cast<uint64_t*>(dst), w, count);
    VOX_CUDA_CHECK_LAUNCH("store_words_kernel");
  }

  // Pinned blocks are cached (pinned_cache.cuh): freeing one neither synchronises nor waits.
  void* allocate_pinned(size_t nbytes) override { return pinned_.allocate(nbytes); }
  void deallocate_pinned(void* ptr) override { pinned_.deallocate(ptr); }

  void copy_bytes_async(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) override {
    if (nbytes == 0) return;
    const cudaMemcpyKind kind = dst_device.is_cpu()   ? cudaMemcpyDeviceToHost
                                : src_device.is_cpu() ? cudaMemcpyHostToDevice
                                                      : cudaMemcpyDeviceToDevice;
    const int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
    const cudaStream_t stream = enter(device);
    VOX_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, stream));
    // the host block is not handed out again before this copy has run (a capture keeps its own)
    if (kind != cudaMemcpyDeviceToDevice && !capture_of(stream)) pinned_.record_use(dst_device.is_cpu() ? dst : src, stream);
  }

  void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) override {
    if (nbytes == 0) return;
    const cudaMemcpyKind kind = dst_device.is_cpu()   ? cudaMemcpyDeviceToHost
                                : src_device.is_cpu() ? cudaMemcpyHostToDevice
                                                      : cudaMemcpyDeviceToDevice;
    const int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
    const cudaStream_t stream = enter(device);
    if (kind == cudaMemcpyHostToDevice) {
      upload(dst, src, nbytes, stream);
      if (!capture_of(stream)) VOX_CUDA_CHECK(cudaStreamSynchronize(stream));  // the host may reuse its memory now
      return;
    }
    if (kind == cudaMemcpyDeviceToHost) refuse_while_capturing(stream, "a copy to the host", device);
    VOX_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, stream));
    if (kind != cudaMemcpyDeviceToDevice) VOX_CUDA_CHECK(cudaStreamSynchronize(stream));  // the host may use the data now
  }

  void copy_strided(void* dst, DType dst_dtype, const Strides& dst_strides, const void* src, DType src_dtype,
                    const Strides& src_strides, const Shape& shape, int device) override {
    const int64_t n = numel_of(shape);
    if (n == 0) return;
    VOX_CHECK(shape.size() <= kMaxRank, "copy", "rank ", shape.size(), " is above the CUDA kernels' ", kMaxRank);
    const cudaStream_t stream = enter(device);
    const bool flat = is_contiguous(dst_strides, shape) && is_contiguous(src_strides, shape);
    if (flat && dst_dtype == src_dtype) {  // the same bits: a byte copy, with no conversion at all
      VOX_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * dtype_size(dst_dtype), cudaMemcpyDeviceToDevice, stream));
      return;
    }
    const Indexer ix = make_indexer(shape, {&dst_strides, &src_strides});
    dispatch_storage(dst_dtype, "copy", [&]<class D>() {
      dispatch_storage(src_dtype, "copy", [&]<class S>() {
        if (flat) copy_same_kernel<D, S><<<grid_for(n), 256, 0, stream>>>(static_cast<D*>(dst), static_cast<const S*>(src), n);
        else copy_strided_kernel<D, S><<<grid_for(n), 256, 0, stream>>>(static_cast<D*>(dst), static_cast<const S*>(src), ix, n);
      });
    });
    VOX_CUDA_CHECK_LAUNCH("copy_strided_kernel");
  }

  void binary(BinaryOp op, DType dtype, const Shape& shape, void* dst, const void* a, const Strides& a_strides, const void* b,
              const Strides& b_strides, const OpParams& params, int device) override {
    const int64_t n = numel_of(shape);
    if (n == 0) return;
    VOX_CHECK(shape.size() <= kMaxRank, "binary op", "rank ", shape.size(), " is above the CUDA kernels' ", kMaxRank);
    const cudaStream_t stream = enter(device);
    const Strides out_strides = contiguous_strides(shape);
    const bool flat = is_contiguous(a_strides, shape) && is_contiguous(b_strides, shape);
    const Indexer ix = make_indexer(shape, {&out_strides, &a_strides, &b_strides});
    if (dispatch_integer(dtype, [&]<class T>() {
          VOX_CHECK(integer_op_supported(op), "binary op", "integer tensors on CUDA take add, sub and mul; this op needs a floating ",
                    "dtype (cast first), got ", dtype_name(dtype));
          binary_integer_kernel<T><<<grid_for(n), 256, 0, stream>>>(op, static_cast<T*>(dst), static_cast<const T*>(a),
                                                                    static_cast<const T*>(b), ix, n);
        })) {
      VOX_CUDA_CHECK_LAUNCH("binary_integer_kernel");
      return;
    }
    const bool half = dispatch_half(dtype, [&]<class S>() {
      binary_half_kernel<S><<<grid_for(n), 256, 0, stream>>>(op, params, static_cast<S*>(dst), static_cast<const S*>(a),
                                                             static_cast<const S*>(b), ix, n);
    });
    if (!half) dispatch_compute(dtype, "binary op", [&]<class T>() {
      if (flat && vec4_ready<T>(n, {dst, a, b}))
        binary_vec4_kernel<T><<<grid_for(n / 4), 256, 0, stream>>>(
            op, params, static_cast<Vec4<T>*>(dst), static_cast<const Vec4<T>*>(a), static_cast<const Vec4<T>*>(b), n / 4);
      else if (flat)
        binary_contiguous_kernel<T><<<grid_for(n), 256, 0, stream>>>(op, params, static_cast<T*>(dst), static_cast<const T*>(a),
                                                          static_cast<const T*>(b), n);
      else
        binary_strided_kernel<T><<<grid_for(n), 256, 0, stream>>>(op, params, static_cast<T*>(dst), static_cast<const T*>(a),
                                                       static_cast<const T*>(b), ix, n);
    });
    VOX_CUDA_CHECK_LAUNCH("binary kernel");
  }

  void unary(UnaryOp op, DType dtype, int64_t n, void* dst, const void* src, const OpParams& params, int device) override {
    if (n == 0) return;
    const cudaStream_t stream = enter(device);
    if (dispatch_integer(dtype, [&]<class T>() {
          VOX_CHECK(integer_op_supported(op), "unary op", "integer tensors on CUDA take neg, abs and square; this op needs a floating ",
                    "dtype (cast first), got ", dtype_name(dtype));
          unary_integer_kernel<T><<<grid_for(n), 256, 0, stream>>>(op, static_cast<T*>(dst), static_cast<const T*>(src), n);
        })) {
      VOX_CUDA_CHECK_LAUNCH("unary_integer_kernel");
      return;
    }
    const bool half = dispatch_half(dtype, [&]<class S>() {
      unary_half_kernel<S><<<grid_for(n), 256, 0, stream>>>(op, params, static_cast<S*>(dst), static_cast<const S*>(src), n);
    });
    if (!half) dispatch_compute(dtype, "unary op", [&]<class T>() {
      if (vec4_ready<T>(n, {dst, src}))
        unary_vec4_kernel<T><<<grid_for(n / 4), 256, 0, stream>>>(op, params, static_cast<Vec4<T>*>(dst),
                                                                  static_cast<const Vec4<T>*>(src), n / 4);
      else
        unary_kernel<T><<<grid_for(n), 256, 0, stream>>>(op, params, static_cast<T*>(dst), static_cast<const T*>(src), n);
    });
    VOX_CUDA_CHECK_LAUNCH("unary_kernel");
  }

  void compare(CompareOp op, DType dtype, const Shape& shape, bool* dst, const void* a, const Strides& a_strides, const void* b,
               const Strides& b_strides, int device) override {
    const int64_t n = numel_of(shape);
    if (n == 0) return;
    VOX_CHECK(shape.size() <= kMaxRank, "compare", "rank ", shape.size(), " is above the CUDA kernels' ", kMaxRank);
    const cudaStream_t stream = enter(device);
    const Strides out_strides = contiguous_strides(shape);
    const Indexer ix = make_indexer(shape, {&out_strides, &a_strides, &b_strides});
    dispatch_storage(dtype, "compare", [&]<class T>() {
      compare_kernel<T><<<grid_for(n), 256, 0, stream>>>(op, dst, static_cast<const T*>(a), static_cast<const T*>(b), ix, n);
    });
    VOX_CUDA_CHECK_LAUNCH("compare_kernel");
  }
  void where(DType dtype, const Shape& shape, void* dst, const bool* condition, const Strides& condition_strides, const void* a,
             const Strides& a_strides, const void* b, const Strides& b_strides, int device) override {
    const int64_t n = numel_of(shape);
    if (n == 0) return;
    VOX_CHECK(shape.size() <= kMaxRank, "where", "rank ", shape.size(), " is above the CUDA kernels' ", kMaxRank);
    const cudaStream_t stream = enter(device);
    const Indexer ix = make_indexer(shape, {&condition_strides, &a_strides, &b_strides});
    dispatch_storage(dtype, "where", [&]<class T>() {
      where_kernel<T><<<grid_for(n), 256, 0, stream>>>(static_cast<T*>(dst), condition, static_cast<const T*>(a),
                                                       static_cast<const T*>(b), ix, n);
    });
    VOX_CUDA_CHECK_LAUNCH("where_kernel");
  }

  void sum_middle(DType dtype, int64_t outer, int64_t reduced, int64_t inner, void* dst, const void* src, double scale,
                  int device) override {
    if (outer * inner == 0) return;
    const cudaStream_t stream = enter(device);
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
        sum_columns_kernel<T>
            <<<dim3(static_cast<unsigned>(groups), static_cast<unsigned>(splits)), dim3(kLanes, kRowsPerBlock), 0, stream>>>(
                target, in, outer, reduced, inner, chunk, pass_scale);
      else
        sum_rows_kernel<T, 256><<<dim3(static_cast<unsigned>(groups), static_cast<unsigned>(splits)), 256, 0, stream>>>(
            target, in, outer, reduced, inner, chunk, pass_scale);
      VOX_CUDA_CHECK_LAUNCH("sum pass 1");
      if (splits > 1) {  // partial [S][A*B]: sum over S
        const int64_t width = outer * inner;
        if (width >= 16)
          sum_columns_kernel<T>
              <<<dim3(static_cast<unsigned>((width + kLanes - 1) / kLanes), 1), dim3(kLanes, kRowsPerBlock), 0, stream>>>(
                  out, target, 1, splits, width, splits, scale);
        else
          sum_rows_kernel<T, 256>
              <<<dim3(static_cast<unsigned>(width), 1), 256, 0, stream>>>(out, target, 1, splits, width, splits, scale);
        VOX_CUDA_CHECK_LAUNCH("sum pass 2");
        deallocate(scratch, 0, device);  // stream order: pass 2 runs before any later reuse
      }
    });
  }

  void extremum_middle(DType dtype, int64_t outer, int64_t reduced, int64_t inner, const void* src, void* values,
                       int64_t* indices, bool want_max, int device) override {
    const int64_t outputs = outer * inner;
    if (outputs == 0) return;
    VOX_CHECK(reduced > 0, want_max ? "max" : "min", "the reduced axis is empty");
    const cudaStream_t stream = enter(device);
    dispatch_storage(dtype, want_max ? "max" : "min", [&]<class T>() {
      using Pick = Candidate<typename Comparable<T>::type>;
      const bool columns = inner >= 16;
      const int64_t groups = columns ? outer * ((inner + kLanes - 1) / kLanes) : outputs;
      // The sums' split (about four blocks per multiprocessor, chunks of at least 256).
      const int64_t wanted = (4 * multiprocessors(device) + groups - 1) / groups;
      const int64_t splits = std::clamp<int64_t>(std::min<int64_t>(wanted, (reduced + 255) / 256), 1, 65535);
      const int64_t chunk = (reduced + splits - 1) / splits;
      auto* partial = static_cast<Pick*>(allocate(static_cast<size_t>(splits * outputs) * sizeof(Pick), device));
      const auto* in = static_cast<const T*>(src);
      if (columns)
        extremum_columns_kernel<T>
            <<<dim3(static_cast<unsigned>(groups), static_cast<unsigned>(splits)), dim3(kLanes, kRowsPerBlock), 0, stream>>>(
                partial, in, outer, reduced, inner, chunk, want_max);
      else
        extremum_rows_kernel<T, 256><<<dim3(static_cast<unsigned>(groups), static_cast<unsigned>(splits)), 256, 0, stream>>>(
            partial, in, outer, reduced, inner, chunk, want_max);
      VOX_CUDA_CHECK_LAUNCH("extremum pass 1");
      extremum_finish_kernel<T>
          <<<grid_for(outputs), 256, 0, stream>>>(static_cast<T*>(values), indices, partial, outputs, splits, want_max);
      VOX_CUDA_CHECK_LAUNCH("extremum pass 2");
      deallocate(partial, 0, device);  // stream order: pass 2 runs before any later reuse
    });
  }

  void matmul(DType dtype, int64_t batch, int64_t m, int64_t n, int64_t k, const void* a, int64_t a_batch_stride, const void* b,
              int64_t b_batch_stride, void* c, int device) override {
    if (batch == 0 || m == 0 || n == 0) return;
    const cudaStream_t stream = enter(device);
    cublasHandle_t handle = blas_handle(device);
    // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS multiplies B (n x k) by A (k x m).
    const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
    VOX_CHECK(m < (int64_t{1} << 31) && n < (int64_t{1} << 31) && k < (int64_t{1} << 31), "matmul",
              "matrix sizes above 2^31 are not supported by cuBLAS' 32-bit API");
    if (k == 0) {  // an empty inner product is zero
      VOX_CUDA_CHECK(cudaMemsetAsync(c, 0, static_cast<size_t>(batch * m * n) * dtype_size(dtype), stream));
      return;
    }
    if (dtype == DType::f16 || dtype == DType::bf16) {  // 16-bit operands, f32 accumulation (tensor cores)
      const cudaDataType_t type = dtype == DType::f16 ? CUDA_R_16F : CUDA_R_16BF;
      const float one = 1, zero = 0;
      VOX_CUDA_CHECK(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, b, type, M, b_batch_stride, a,
                                                type, K, a_batch_stride, &zero, c, type, M, m * n, static_cast<int>(batch),
                                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      return;
    }
    dispatch_compute(dtype, "matmul", [&]<class T>() {
      const T one = 1, zero = 0;
      if constexpr (std::is_same_v<T, float>)
        VOX_CUDA_CHECK(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, static_cast<const float*>(b), M,
                                                 b_batch_stride, static_cast<const float*>(a), K, a_batch_stride, &zero,
                                                 static_cast<float*>(c), M, m * n, static_cast<int>(batch)));
      else
        VOX_CUDA_CHECK(cublasDgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, static_cast<const double*>(b),
                                                 M, b_batch_stride, static_cast<const double*>(a), K, a_batch_stride, &zero,
                                                 static_cast<double*>(c), M, m * n, static_cast<int>(batch)));
    });
  }


  void conv(ConvPass pass, DType dtype, const kernels::ConvGeometry& g, const void* a, const void* b, void* out,
            int device) override {
    const cudaStream_t stream = enter(device);
    const char* name = pass_name(pass);
    if (g.in_positions() == 0 || g.out_positions() == 0) {  // nothing to sum: a weight gradient is zero
      if (pass == ConvPass::backward_weight)
        VOX_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(g.weight_size()) * dtype_size(dtype), stream));
      return;
    }
    ConvSettings settings;
    {
      std::lock_guard<std::mutex> lock(handle_mutex_);
      settings = conv_settings_;
    }
    std::string engine, refusal;
    if (settings.engine == ConvEngine::implicit_gemm ||
        !cudnn_.run(pass, dtype, g, a, b, out, device, settings, *this, capture_of(stream) != nullptr, engine, refusal)) {
      VOX_CHECK(settings.engine != ConvEngine::cudnn, name, "cuDNN has no plan for this ", dtype_name(dtype), " convolution (",
                g.in_channels, " -> ", g.out_channels, " channels, kernel ", g.kernel[0], "x", g.kernel[1], "x", g.kernel[2],
                ", groups ", g.groups, "): ", refusal, "; ConvEngine::automatic falls back to vox's implicit GEMM");
      dispatch_device_floating(dtype, name, [&]<class T>() { implicit_gemm<T>(pass, g, a, b, out, device); });
      engine = "implicit_gemm";
    }
    std::lock_guard<std::mutex> lock(handle_mutex_);
    last_engine_[static_cast<size_t>(pass)] = engine;
  }
  void conv_int8(const Int8ConvCall& call, const float* x, float* y, int device) override {
    const kernels::ConvGeometry& g = call.geometry;
    const std::array<int64_t, 3>& x_dims = call.transposed ? g.out : g.in;
    const std::array<int64_t, 3>& y_dims = call.transposed ? g.in : g.out;
    const int64_t x_channels = call.transposed ? g.out_channels : g.in_channels;
    const int64_t x_positions = g.batch * x_dims[0] * x_dims[1] * x_dims[2];
    const int64_t y_count = g.batch * y_dims[0] * y_dims[1] * y_dims[2] * (call.transposed ? g.in_channels : g.out_channels);
    if (y_count == 0) return;
    const cudaStream_t stream = enter(device);
    const int64_t per_group = x_channels / g.groups, reduce4 = (per_group + 3) / 4 * 4;
    auto* xq = static_cast<int8_t*>(allocate(static_cast<size_t>(std::max<int64_t>(x_positions * g.groups * reduce4, 1)), device));
    quantize_s8_shifted_kernel<<<grid_for(x_positions * g.groups * reduce4), 256, 0, stream>>>(
        x_positions, g.groups, per_group, reduce4, x, call.inv_scale, call.zero_point, xq);
    VOX_CUDA_CHECK_LAUNCH("quantize_s8_shifted_kernel");
    Int8GatherConv p{};
    p.batch = g.batch;
    for (int a = 0; a < 3; ++a) {
      p.x_dims[a] = x_dims[a], p.y_dims[a] = y_dims[a];
      p.kernel[a] = g.kernel[a], p.stride[a] = g.stride[a], p.padding[a] = g.padding[a], p.dilation[a] = g.dilation[a];
    }
    p.groups = g.groups, p.reduce4 = reduce4, p.y_channels = call.transposed ? g.in_channels : g.out_channels;
    p.transposed = call.transposed, p.zero_point = call.zero_point;
    p.scale = call.scale, p.bias = call.bias;
    conv_int8_dp4a_kernel<<<grid_for(y_count), 256, 0, stream>>>(p, xq, call.weight, call.tap_sums, y);
    VOX_CUDA_CHECK_LAUNCH("conv_int8_dp4a_kernel");
    deallocate(xq, 0, device);  // stream order: the convolution runs before any later reuse
  }
  void set_conv_settings(const ConvSettings& settings) override {
    VOX_CHECK(settings.autotune_candidates >= 1, "set_conv_settings", "autotune_candidates must be >= 1, got ",
              settings.autotune_candidates);
    std::lock_guard<std::mutex> lock(handle_mutex_);
    conv_settings_ = settings;
  }
  ConvSettings conv_settings() const override {
    std::lock_guard<std::mutex> lock(handle_mutex_);
    return conv_settings_;
  }
  std::string last_conv_engine(ConvPass pass) const override {
    std::lock_guard<std::mutex> lock(handle_mutex_);
    return last_engine_[static_cast<size_t>(pass)];
  }

  void norm_forward(DType dtype, const NormParams& p, const void* x, const void* gamma, const void* beta, const void* slope,
                    const void* residual, void* mean, void* rstd, void* variance, void* y, int device) override {
    const int64_t n = p.B * p.R * p.C;
    if (n == 0) return;
    const cudaStream_t stream = enter(device);
    const NormLaunch l = make_norm_launch(p, multiprocessors(device));
    dispatch_compute(dtype, "normalisation", [&]<class T>() {
      using A = typename Accumulator<T>::type;
      if (!p.fixed_stats) {
        const int64_t plane = l.B * l.chunks * l.C;
        A* part = static_cast<A*>(allocate(static_cast<size_t>(2 * plane) * sizeof(A), device));
        norm_partial_stats_kernel<T>
            <<<norm_grid(l), dim3(kLanes, kRowsPerBlock), 0, stream>>>(l, static_cast<const T*>(x), part, part + plane);
        VOX_CUDA_CHECK_LAUNCH("norm_partial_stats_kernel");
        norm_finish_stats_kernel<T>
            <<<grid_for(l.B * l.G), 256, 0, stream>>>(l, part, part + plane, static_cast<T*>(mean), static_cast<T*>(rstd),
                                                      static_cast<T*>(variance));
        VOX_CUDA_CHECK_LAUNCH("norm_finish_stats_kernel");
        deallocate(part, 0, device);
      }
      norm_apply_kernel<T><<<grid_for(n), 256, 0, stream>>>(
          l, static_cast<const T*>(x), static_cast<const T*>(mean), static_cast<const T*>(rstd), static_cast<const T*>(gamma),
          static_cast<const T*>(beta), static_cast<const T*>(slope), static_cast<const T*>(residual), static_cast<T*>(y));
      VOX_CUDA_CHECK_LAUNCH("norm_apply_kernel");
    });
  }

  void norm_backward(DType dtype, const NormParams& p, const void* x, const void* dy, const void* mean, const void* rstd,
                     const void* gamma, const void* beta, const void* slope, void* dx, void* dgamma, void* dbeta, void* dslope,
                     int device) override {
    const int64_t n = p.B * p.R * p.C;
    if (n == 0) return;
    const cudaStream_t stream = enter(device);
    const NormLaunch l = make_norm_launch(p, multiprocessors(device));
    dispatch_compute(dtype, "normalisation backward", [&]<class T>() {
      using A = typename Accumulator<T>::type;
      const T *xt = static_cast<const T*>(x), *dyt = static_cast<const T*>(dy), *mt = static_cast<const T*>(mean),
              *rt = static_cast<const T*>(rstd), *gt = static_cast<const T*>(gamma), *bt = static_cast<const T*>(beta),
              *st = static_cast<const T*>(slope);
      const int64_t plane = l.B * l.chunks * l.C, stats = l.B * l.G;
      // partial sums [3][plane], group terms [2][stats], per-channel slope gradient [C]
      const int64_t scratch_size = 3 * plane + 2 * stats + l.C;
      A* part = static_cast<A*>(allocate(static_cast<size_t>(scratch_size) * sizeof(A), device));
      A* group_terms = part + 3 * plane;
      A* slope_per_channel = group_terms + 2 * stats;
      norm_backward_partial_kernel<T>
          <<<norm_grid(l), dim3(kLanes, kRowsPerBlock), 0, stream>>>(l, xt, dyt, mt, rt, gt, bt, st, part);
      VOX_CUDA_CHECK_LAUNCH("norm_backward_partial_kernel");
      if (dgamma || dbeta || dslope) {
        norm_backward_params_kernel<T><<<grid_for(l.C), 256, 0, stream>>>(
            l, part, static_cast<T*>(dgamma), static_cast<T*>(dbeta), dslope ? slope_per_channel : nullptr);
        VOX_CUDA_CHECK_LAUNCH("norm_backward_params_kernel");
        if (dslope && l.slope_stride == 0)
          norm_shared_slope_kernel<T><<<1, 1, 0, stream>>>(l.C, slope_per_channel, static_cast<T*>(dslope));
        else if (dslope)
          norm_slope_copy_kernel<T><<<grid_for(l.C), 256, 0, stream>>>(l.C, slope_per_channel, static_cast<T*>(dslope));
        VOX_CUDA_CHECK_LAUNCH("norm slope gradient");
      }
      if (dx) {
        if (!l.fixed_stats) {
          norm_backward_groups_kernel<T><<<grid_for(stats), 256, 0, stream>>>(l, part, gt, group_terms);
          VOX_CUDA_CHECK_LAUNCH("norm_backward_groups_kernel");
        }
        norm_backward_data_kernel<T>
            <<<grid_for(n), 256, 0, stream>>>(l, xt, dyt, mt, rt, gt, bt, st, group_terms, static_cast<T*>(dx));
        VOX_CUDA_CHECK_LAUNCH("norm_backward_data_kernel");
      }
      deallocate(part, 0, device);
    });
  }

  void softmax(DType dtype, int64_t outer, int64_t n, int64_t inner, const void* x, void* y, bool log, int device) override {
    if (outer * n * inner == 0) return;
    const cudaStream_t stream = enter(device);
    dispatch_compute(dtype, "softmax", [&]<class T>() {
      if (inner == 1 && n > 32)
        softmax_rows_kernel<T>
            <<<grid_for(outer * 32), 256, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y), outer, n, log);
      else
        softmax_columns_kernel<T>
            <<<grid_for(outer * inner), 256, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y), outer, n, inner, log);
    });
    VOX_CUDA_CHECK_LAUNCH("softmax kernel");
  }
  void softmax_backward(DType dtype, int64_t outer, int64_t n, int64_t inner, const void* y, const void* dy, void* dx, bool log,
                        int device) override {
    if (outer * n * inner == 0) return;
    const cudaStream_t stream = enter(device);
    dispatch_compute(dtype, "softmax backward", [&]<class T>() {
      const T *yt = static_cast<const T*>(y), *dyt = static_cast<const T*>(dy);
      if (inner == 1 && n > 32)
        softmax_backward_rows_kernel<T><<<grid_for(outer * 32), 256, 0, stream>>>(yt, dyt, static_cast<T*>(dx), outer, n, log);
      else
        softmax_backward_columns_kernel<T>
            <<<grid_for(outer * inner), 256, 0, stream>>>(yt, dyt, static_cast<T*>(dx), outer, n, inner, log);
    });
    VOX_CUDA_CHECK_LAUNCH("softmax backward kernel");
  }

  bool attention_forward(DType dtype, const AttentionShape& s, const void* q, const void* k, const void* v, void* out, void* lse,
                         int device) override {
    if (!is_floating(dtype) || s.qk_dim > kAttentionMaxDim || s.v_dim > kAttentionMaxDim) return false;
    if (s.batch * s.q_len * s.v_dim == 0) return true;
    VOX_CHECK(s.kv_len > 0, "scaled_dot_product_attention", "attention over zero keys is undefined");
    const cudaStream_t stream = enter(device);
    const AttentionDims d{s.batch, s.q_len, s.kv_len, s.qk_dim, s.v_dim, s.scale};
    dispatch_device_floating(dtype, "scaled_dot_product_attention", [&]<class T>() {
      using A = typename Accumulator<T>::type;
      attention_forward_kernel<T><<<attention_grid(s.batch, s.q_len), kAttentionRows * 32, 0, stream>>>(
          d, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), static_cast<T*>(out),
          static_cast<A*>(lse));
    });
    VOX_CUDA_CHECK_LAUNCH("attention_forward_kernel");
    return true;
  }
  void attention_backward(DType dtype, const AttentionShape& s, const void* q, const void* k, const void* v, const void* out,
                          const void* lse, const void* dout, void* dq, void* dk, void* dv, int device) override {
    if (s.batch * s.q_len * s.kv_len == 0) return;
    const cudaStream_t stream = enter(device);
    const AttentionDims d{s.batch, s.q_len, s.kv_len, s.qk_dim, s.v_dim, s.scale};
    dispatch_device_floating(dtype, "scaled_dot_product_attention backward", [&]<class T>() {
      using A = typename Accumulator<T>::type;
      A* delta = static_cast<A*>(allocate(static_cast<size_t>(s.batch * s.q_len) * sizeof(A), device));
      const auto *qt = static_cast<const T*>(q), *kt = static_cast<const T*>(k), *vt = static_cast<const T*>(v);
      const auto *lt = static_cast<const A*>(lse);
      const auto *dot = static_cast<const T*>(dout);
      attention_backward_query_kernel<T><<<attention_grid(s.batch, s.q_len), kAttentionRows * 32, 0, stream>>>(
          d, qt, kt, vt, static_cast<const T*>(out), lt, dot, static_cast<T*>(dq), delta);
      VOX_CUDA_CHECK_LAUNCH("attention_backward_query_kernel");
      attention_backward_key_kernel<T><<<attention_grid(s.batch, s.kv_len), kAttentionRows * 32, 0, stream>>>(
          d, qt, kt, vt, lt, dot, delta, static_cast<T*>(dk), static_cast<T*>(dv));
      VOX_CUDA_CHECK_LAUNCH("attention_backward_key_kernel");
      deallocate(delta, 0, device);  // stream order: the key kernel has read it before any reuse
    });
  }

  void adam_step(DType dtype, const std::vector<AdamSegment>& segments, const AdamHyper& hyper, int device) override {
    run_segments(dtype, "Adam", segments, device, [&]<class T>(AdamSegment* table, const int64_t* starts, int64_t total) {
      const int count = static_cast<int>(segments.size());
      const cudaStream_t stream = launch_stream(device);
      if (hyper.schedule) {  // the step counts advance and the bias corrections are worked out on the device
        adam_schedule_kernel<<<(count + 255) / 256, 256, 0, stream>>>(table, count, hyper);
        VOX_CUDA_CHECK_LAUNCH("adam_schedule_kernel");
      }
      adam_kernel<T><<<grid_for(total), 256, 0, stream>>>(table, starts, count, total, hyper);
    });
  }
  void sgd_step(DType dtype, const std::vector<SgdSegment>& segments, const SgdHyper& hyper, int device) override {
    run_segments(dtype, "SGD", segments, device, [&]<class T>(SgdSegment* table, const int64_t* starts, int64_t total) {
      sgd_kernel<T>
          <<<grid_for(total), 256, 0, launch_stream(device)>>>(table, starts, static_cast<int>(segments.size()), total, hyper);
    });
  }

  void one_hot(DType dtype, int64_t rows, int64_t classes, const int64_t* labels, void* out, int device) override {
    const cudaStream_t stream = enter(device);
    dispatch_storage(dtype, "one_hot", [&]<class T>() {
      VOX_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(rows * classes) * sizeof(T), stream));
      if (rows == 0) return;
      with_label_check("one_hot", rows, classes, labels, device, [&](unsigned long long* bad) {
        one_hot_kernel<T><<<grid_for(rows), 256, 0, stream>>>(labels, rows, classes, static_cast<T*>(out), bad);
      });
    });
  }
  void pick_classes(DType dtype, int64_t rows, int64_t classes, const void* values, const int64_t* labels, const void* weight,
                    int64_t ignore_index, void* picked, void* target_weight, void* valid, int device) override {
    if (rows == 0) return;
    const cudaStream_t stream = enter(device);
    dispatch_compute(dtype, "cross_entropy", [&]<class T>() {
      with_label_check("cross_entropy", rows, classes, labels, device, [&](unsigned long long* bad) {
        pick_classes_kernel<T><<<grid_for(rows), 256, 0, stream>>>(static_cast<const T*>(values), labels, rows, classes,
                                                        static_cast<const T*>(weight), ignore_index, static_cast<T*>(picked),
                                                        static_cast<T*>(target_weight), static_cast<T*>(valid), bad);
      });
    });
  }
  void pick_classes_backward(DType dtype, int64_t rows, int64_t classes, const void* dpicked, const int64_t* labels,
                             int64_t ignore_index, void* dvalues, int device) override {
    const cudaStream_t stream = enter(device);
    dispatch_compute(dtype, "cross_entropy backward", [&]<class T>() {
      VOX_CUDA_CHECK(cudaMemsetAsync(dvalues, 0, static_cast<size_t>(rows * classes) * sizeof(T), stream));
      if (rows == 0) return;
      pick_classes_backward_kernel<T><<<grid_for(rows), 256, 0, stream>>>(static_cast<const T*>(dpicked), labels, rows, classes,
                                                                          ignore_index, static_cast<T*>(dvalues));
      VOX_CUDA_CHECK_LAUNCH("pick_classes_backward_kernel");
    });
  }

  void resample(DType dtype, int64_t N, int64_t C, const std::array<ResampleAxis, 3>& axes, const void* x, void* y,
                int device) override {
    const int64_t total = N * axes[0].out_size * axes[1].out_size * axes[2].out_size * C;
    if (total == 0) return;
    const cudaStream_t stream = enter(device);
    // The three tables in one device buffer: per axis its offsets, indices and weights.
    size_t bytes = 0;
    std::array<size_t, 3> at{};
    for (size_t a = 0; a < 3; ++a) {
      at[a] = bytes;
      const auto entries = static_cast<size_t>(axes[a].begin[axes[a].out_size]);
      bytes += (static_cast<size_t>(axes[a].out_size) + 1 + entries) * sizeof(int64_t) + entries * sizeof(double);
    }
    char* tables = static_cast<char*>(allocate(bytes, device));
    std::array<DeviceAxis, 3> views{};
    for (size_t a = 0; a < 3; ++a) {
      const ResampleAxis& t = axes[a];
      const auto entries = static_cast<size_t>(t.begin[t.out_size]);
      char* p = tables + at[a];
      const size_t offsets_bytes = (static_cast<size_t>(t.out_size) + 1) * sizeof(int64_t);
      upload(p, t.begin, offsets_bytes, stream);
      upload(p + offsets_bytes, t.index, entries * sizeof(int64_t), stream);
      upload(p + offsets_bytes + entries * sizeof(int64_t), t.weight, entries * sizeof(double), stream);
      views[a] = {t.in_size, t.out_size, reinterpret_cast<const int64_t*>(p), reinterpret_cast<const int64_t*>(p + offsets_bytes),
                  reinterpret_cast<const double*>(p + offsets_bytes + entries * sizeof(int64_t))};
    }
    dispatch_compute(dtype, "resample", [&]<class T>() {
      resample_kernel<T>
          <<<grid_for(total), 256, 0, stream>>>(N, C, views[0], views[1], views[2], static_cast<const T*>(x), static_cast<T*>(y));
    });
    VOX_CUDA_CHECK_LAUNCH("resample_kernel");
    deallocate(tables, 0, device);
  }

  void max_pool(DType dtype, int64_t N, int64_t C, const std::array<int64_t, 3>& in, const std::array<int64_t, 3>& out,
                const int64_t* windows, const void* x, void* y, int64_t* argmax, int device) override {
    const int64_t total = N * out[0] * out[1] * out[2] * C;
    if (total == 0) return;
    const cudaStream_t stream = enter(device);
    const size_t bytes = static_cast<size_t>(2 * (out[0] + out[1] + out[2])) * sizeof(int64_t);
    auto* device_windows = static_cast<int64_t*>(allocate(bytes, device));
    upload(device_windows, windows, bytes, stream);
    dispatch_compute(dtype, "max_pool3d", [&]<class T>() {
      max_pool_kernel<T><<<grid_for(total), 256, 0, stream>>>(N, C, in[0], in[1], in[2], out[0], out[1], out[2], device_windows,
                                                   static_cast<const T*>(x), static_cast<T*>(y), argmax);
    });
    VOX_CUDA_CHECK_LAUNCH("max_pool_kernel");
    deallocate(device_windows, 0, device);
  }
  void max_pool_backward(DType dtype, int64_t N, int64_t C, int64_t in_volume, int64_t out_volume, const void* g,
                         const int64_t* argmax, void* gx, int device) override {
    const cudaStream_t stream = enter(device);
    dispatch_compute(dtype, "max_pool3d backward", [&]<class T>() {
      VOX_CUDA_CHECK(cudaMemsetAsync(gx, 0, static_cast<size_t>(N * in_volume * C) * sizeof(T), stream));
      if (N * out_volume * C == 0) return;
      max_pool_backward_kernel<T><<<grid_for(N * out_volume * C), 256, 0, stream>>>(
          N, C, in_volume, out_volume, static_cast<const T*>(g), argmax, static_cast<T*>(gx));
      VOX_CUDA_CHECK_LAUNCH("max_pool_backward_kernel");
    });
  }

  void random(RandomKind kind, DType dtype, int64_t n, uint64_t key, uint64_t start, double a, double b, void* out, int device,
              const uint64_t* draw_state) override {
    if (n == 0) return;
    const cudaStream_t stream = enter(device);
    dispatch_compute(dtype, "random", [&]<class T>() {
      random_kernel<T><<<grid_for(n), 256, 0, stream>>>(kind, static_cast<T*>(out), n, key, start, draw_state, a, b);
    });
    VOX_CUDA_CHECK_LAUNCH("random_kernel");
  }

  void gather_axes(DType dtype, const std::vector<std::vector<int64_t>>& maps, const void* x, const Strides& x_strides,
                   double fill, void* out, int device) override {
    const cudaStream_t stream = enter(device);
    int64_t n = 1;
    for (const auto& m : maps) n *= static_cast<int64_t>(m.size());
    if (maps.empty()) {  // a scalar: one element
      dispatch_storage(dtype, "gather",
                       [&]<class T>() { VOX_CUDA_CHECK(cudaMemcpyAsync(out, x, sizeof(T), cudaMemcpyDeviceToDevice, stream)); });
      return;
    }
    if (n == 0) return;
    std::vector<int64_t> strides(x_strides.begin(), x_strides.end());
    GatherMaps m = upload_maps(maps, strides, device);
    dispatch_storage(dtype, "gather", [&]<class T>() {
      gather_axes_kernel<T>
          <<<grid_for(n), 256, 0, stream>>>(m, static_cast<const T*>(x), from_host<T>(fill), static_cast<T*>(out), n);
    });
    VOX_CUDA_CHECK_LAUNCH("gather_axes_kernel");
    deallocate(const_cast<int64_t*>(m.maps), 0, device);
  }
  void scatter_add_axes(DType dtype, const std::vector<std::vector<int64_t>>& maps, const Shape& in_shape, const void* g,
                        void* gx, int device) override {
    const cudaStream_t stream = enter(device);
    int64_t n = 1;
    for (const auto& m : maps) n *= static_cast<int64_t>(m.size());
    const Strides in_strides = contiguous_strides(in_shape);
    dispatch_compute(dtype, "gather backward", [&]<class T>() {
      VOX_CUDA_CHECK(cudaMemsetAsync(gx, 0, static_cast<size_t>(numel_of(in_shape)) * sizeof(T), stream));
      if (maps.empty()) {
        VOX_CUDA_CHECK(cudaMemcpyAsync(gx, g, sizeof(T), cudaMemcpyDeviceToDevice, stream));
        return;
      }
      if (n == 0) return;
      GatherMaps m = upload_maps(maps, std::vector<int64_t>(in_strides.begin(), in_strides.end()), device);
      scatter_add_axes_kernel<T><<<grid_for(n), 256, 0, stream>>>(m, static_cast<const T*>(g), static_cast<T*>(gx), n);
      VOX_CUDA_CHECK_LAUNCH("scatter_add_axes_kernel");
      deallocate(const_cast<int64_t*>(m.maps), 0, device);
    });
  }

 private:
  // A fused optimizer launch: the segment table and the segments' starting offsets go to the
  // device in one buffer, launch<T>(table, starts, total) queues the kernel, and the buffer is
  // freed in stream order after it.
  template <class Segment, class Launch>
  void run_segments(DType dtype, const char* op, const std::vector<Segment>& segments, int device, Launch&& launch) {
    if (segments.empty()) return;
    const cudaStream_t stream = enter(device);
    std::vector<int64_t> starts;
    int64_t total = 0;
    for (const Segment& s : segments) {
      starts.push_back(total);
      total += s.size;
    }
    if (total == 0) return;
    const size_t table_bytes = segments.size() * sizeof(Segment), starts_bytes = starts.size() * sizeof(int64_t);
    const size_t starts_at = (table_bytes + 15) / 16 * 16;  // int64 offsets start aligned
    char* buffer = static_cast<char*>(allocate(starts_at + starts_bytes, device));
    upload(buffer, segments.data(), table_bytes, stream);
    upload(buffer + starts_at, starts.data(), starts_bytes, stream);
    dispatch_compute(dtype, op, [&]<class T>() {
      launch.template operator()<T>(reinterpret_cast<Segment*>(buffer),
                                    reinterpret_cast<const int64_t*>(buffer + starts_at), total);
    });
    VOX_CUDA_CHECK_LAUNCH("optimizer kernel");
    deallocate(buffer, 0, device);
  }

  GraphCapture* capture_of(cudaStream_t stream) const { return captures_.find(stream); }

  // A host-to-device copy from host memory the caller may reuse at once: pageable memory is
  // staged by the driver before cudaMemcpyAsync returns. During a capture the bytes go through a
  // page-locked copy that the graph keeps, since every replay copies them again.
  void upload(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
    if (bytes == 0) return;
    if (GraphCapture* capture = capture_of(stream)) src = capture->keep(src, bytes);
    VOX_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
  }

  // Calls that wait for the device cannot be captured: say so, rather than let CUDA invalidate
  // the capture with a less telling error.
  void refuse_while_capturing(cudaStream_t stream, const char* what, int device) const {
    VOX_CHECK(!capture_of(stream), what, "cuda:", device, "'s current stream is being captured into a CUDA graph, which cannot "
              "wait for the device or hand values to the host: read values (item(), .to(Device::cpu())) after a replay. Batch "
              "norm's running statistics are such a read: in captured steps use instance or group norm, or batch norm in eval mode");
  }

  // A capture that ended, or failed: its graph, staging buffers and memory pool go, once the
  // device is idle (the blocks it retained may still be in use by eager work on other streams).
  void discard(std::unique_ptr<GraphCapture> capture) {
    if (!capture) return;
    if (cudaSetDevice(capture->device) != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess) (void)cudaGetLastError();
    allocator_.end_graph_capture(capture->stream, capture->device);
    capture->release();
    allocator_.release_graph_pool(capture->pool, capture->device);
  }

  // The maps of every axis in one device buffer (freed by the caller, in stream order).
  GatherMaps upload_maps(const std::vector<std::vector<int64_t>>& maps, const std::vector<int64_t>& in_strides, int device) {
    VOX_CHECK(maps.size() <= static_cast<size_t>(kMaxRank), "gather", "rank ", maps.size(), " is above the CUDA kernels' ",
              kMaxRank);
    GatherMaps m;
    m.rank = static_cast<int>(maps.size());
    std::vector<int64_t> flat;
    for (size_t a = 0; a < maps.size(); ++a) {
      m.out_shape[a] = static_cast<int64_t>(maps[a].size());
      m.offsets[a] = static_cast<int64_t>(flat.size());
      m.in_strides[a] = in_strides[a];
      flat.insert(flat.end(), maps[a].begin(), maps[a].end());
    }
    auto* buffer = static_cast<int64_t*>(allocate(flat.size() * sizeof(int64_t), device));
    upload(buffer, flat.data(), flat.size() * sizeof(int64_t), launch_stream(device));
    m.maps = buffer;
    return m;
  }

  // Runs `launch(bad)` with a device flag for labels outside [0, classes); reads it back (one
  // synchronisation) and throws naming the first such row and its label.
  template <class Launch>
  void with_label_check(const char* op, int64_t rows, int64_t classes, const int64_t* labels, int device, Launch&& launch) {
    const cudaStream_t stream = launch_stream(device);
    auto* bad = static_cast<unsigned long long*>(allocate(sizeof(unsigned long long), device));
    VOX_CUDA_CHECK(cudaMemsetAsync(bad, 0xff, sizeof(unsigned long long), stream));
    launch(bad);
    VOX_CUDA_CHECK_LAUNCH("label kernel");
    if (capture_of(stream)) {  // a graph cannot report back: labels are checked on eager runs only
      deallocate(bad, 0, device);
      return;
    }
    unsigned long long first = 0;
    VOX_CUDA_CHECK(cudaMemcpyAsync(&first, bad, sizeof(first), cudaMemcpyDeviceToHost, stream));
    VOX_CUDA_CHECK(cudaStreamSynchronize(stream));
    deallocate(bad, 0, device);
    if (first == ~0ull) return;
    int64_t label = 0;
    VOX_CUDA_CHECK(cudaMemcpyAsync(&label, labels + first, sizeof(label), cudaMemcpyDeviceToHost, stream));
    VOX_CUDA_CHECK(cudaStreamSynchronize(stream));
    fail(op, "label ", label, " at flat index ", first, " of ", rows, " is outside [0, ", classes, ")");
  }

  static const char* pass_name(ConvPass pass) {
    switch (pass) {
      case ConvPass::forward: return "conv";
      case ConvPass::backward_data: return "conv backward (data)";
      case ConvPass::backward_weight: return "conv backward (weight)";
    }
    return "conv";
  }

  // The implicit GEMM of one pass (conv_implicit_gemm.cuh). The weight gradient splits its K (every
  // output position) over enough blocks to fill the device, into partial sums summed afterwards.
  // f16 and bf16 run on tensor cores into an f32 buffer, rounded into `out` once at the end.
  template <class T>
  void implicit_gemm(ConvPass pass, const kernels::ConvGeometry& g, const void* a, const void* b, void* out, int device) {
    constexpr bool tensor_cores = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;
    using Acc = std::conditional_t<tensor_cores, float, T>;
    const ConvIndex c = ConvIndex::from(g);
    const cudaStream_t stream = launch_stream(device);
    auto launch = [&](auto problem, int64_t M, int64_t N, int64_t K, int64_t splits, Acc* target, int64_t split_stride) {
      const int64_t chunk = ((K + splits - 1) / splits + kGemmTileK - 1) / kGemmTileK * kGemmTileK;
      splits = (K + chunk - 1) / chunk;
      const int64_t tiles_n = (N + kGemmTileN - 1) / kGemmTileN;
      VOX_CHECK(tiles_n <= 65535 && g.groups * splits <= 65535, pass_name(pass), "the implicit GEMM's grid is too large for ",
                N, " columns and ", g.groups, " groups");
      const dim3 grid(static_cast<unsigned>((M + kGemmTileM - 1) / kGemmTileM), static_cast<unsigned>(tiles_n),
                      static_cast<unsigned>(g.groups * splits));
      if constexpr (tensor_cores)
        implicit_gemm_tensor_core_kernel<T><<<grid, kGemmThreads, 0, stream>>>(problem, M, N, K, splits, chunk, target, split_stride);
      else
        implicit_gemm_kernel<T><<<grid, kGemmThreads, 0, stream>>>(problem, M, N, K, splits, chunk, target, split_stride);
      VOX_CUDA_CHECK_LAUNCH("implicit_gemm_kernel");
      return splits;
    };
    // The pass's GEMM: rows, columns, depth, and the size of its output.
    const int64_t M = pass == ConvPass::forward ? c.out_positions() : pass == ConvPass::backward_data ? c.in_positions() : c.cout_g;
    const int64_t N = pass == ConvPass::forward ? c.cout_g : pass == ConvPass::backward_data ? c.cin_g : c.taps * c.cin_g;
    const int64_t K = pass == ConvPass::forward         ? c.taps * c.cin_g
                      : pass == ConvPass::backward_data ? c.taps * c.cout_g
                                                        : c.out_positions();
    const int64_t size = pass == ConvPass::forward         ? c.out_positions() * c.cout
                         : pass == ConvPass::backward_data ? c.in_positions() * c.cin
                                                           : g.weight_size();
    int64_t splits = 1;
    if (pass == ConvPass::backward_weight) {
      const int64_t tiles = ((M + kGemmTileM - 1) / kGemmTileM) * ((N + kGemmTileN - 1) / kGemmTileN) * g.groups;
      const int64_t wanted = std::clamp<int64_t>((4 * multiprocessors(device) + tiles - 1) / tiles, 1, (K + 1023) / 1024);
      splits = std::min<int64_t>(wanted, 65535 / g.groups);
    }
    Acc* buffer = nullptr;  // partial sums, or the f32 result of a 16-bit pass
    if (tensor_cores || splits > 1) buffer = static_cast<Acc*>(allocate(static_cast<size_t>(splits * size) * sizeof(Acc), device));
    Acc* target = buffer ? buffer : static_cast<Acc*>(out);
    const auto *ta = static_cast<const T*>(a), *tb = static_cast<const T*>(b);
    int64_t used = 1;
    switch (pass) {
      case ConvPass::forward: used = launch(ForwardProblem<T>{c, ta, tb, nullptr}, M, N, K, 1, target, 0); break;
      case ConvPass::backward_data: used = launch(BackwardDataProblem<T>{c, ta, tb, nullptr}, M, N, K, 1, target, 0); break;
      case ConvPass::backward_weight: used = launch(BackwardWeightProblem<T>{c, ta, tb, nullptr}, M, N, K, splits, target, size); break;
    }
    const Acc* result = target;
    Acc* summed = nullptr;
    if (used > 1 || (!tensor_cores && buffer)) {  // the partials [used][size] summed in a fixed order, into out
      Acc* dst = tensor_cores ? (summed = static_cast<Acc*>(allocate(static_cast<size_t>(size) * sizeof(Acc), device)))
                              : static_cast<Acc*>(out);
      sum_middle(std::is_same_v<Acc, double> ? DType::f64 : DType::f32, 1, used, size, dst, buffer, 1.0, device);
      result = dst;
    }
    if constexpr (tensor_cores) {
      copy_same_kernel<T, float><<<grid_for(size), 256, 0, stream>>>(static_cast<T*>(out), result, size);
      VOX_CUDA_CHECK_LAUNCH("copy_same_kernel");
    }
    deallocate(summed, 0, device);  // stream order: the work above runs before any reuse
    deallocate(buffer, 0, device);
  }

  // Attention blocks: 8 rows each, for every (batch x head), flattened into x (no 65535 limit).
  static unsigned attention_grid(int64_t batch, int64_t rows) {
    const int64_t blocks = batch * ((rows + kAttentionRows - 1) / kAttentionRows);
    VOX_CHECK(blocks < (int64_t{1} << 31), "scaled_dot_product_attention", "too many rows for one launch: ", blocks, " blocks");
    return static_cast<unsigned>(blocks);
  }

  // Norm blocks: (channel tiles x B, chunks), so that B has no grid limit.
  static dim3 norm_grid(const NormLaunch& l) {
    return dim3(static_cast<unsigned>(((l.C + kLanes - 1) / kLanes) * l.B), static_cast<unsigned>(l.chunks));
  }

 private:
  // One cuBLAS handle per (device, stream), bound to its stream once: a handle's stream is part of
  // its state, so setting it under a lock and running the GEMM after the lock is released would
  // let two threads on different streams run on each other's. cuBLAS allows one unchanging handle
  // to be used from several threads.
  cublasHandle_t blas_handle(int device) {
    const cudaStream_t stream = launch_stream(device);
    std::lock_guard<std::mutex> lock(handle_mutex_);
    cublasHandle_t& handle = handles_[{device, stream}];
    if (!handle) {
      VOX_CUDA_CHECK(cudaSetDevice(device));
      VOX_CUDA_CHECK(cublasCreate(&handle));
      // Full f32 arithmetic (no TF32, which would change results at the 1e-3 level).
      VOX_CUDA_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
      VOX_CUDA_CHECK(cublasSetStream(handle, stream));
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
  ConvSettings conv_settings_;
  std::array<std::string, 3> last_engine_;
  CudnnConvolutions cudnn_;
  mutable int count_ = 0;
  CachingAllocator allocator_;
  PinnedHostCache pinned_;
  GraphCaptures captures_;
  mutable std::mutex handle_mutex_;
  std::map<std::pair<int, cudaStream_t>, cublasHandle_t> handles_;
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
    for (auto& [device_and_stream, handle] : backend->handles_) {
      cudaSetDevice(device_and_stream.first);
      cublasDestroy(handle);
    }
    backend->handles_.clear();
    backend->cudnn_.release();
    backend->pinned_.release();
  } catch (const Error&) {  // the runtime may already be shutting down; nothing more to do
  }
}

}  // namespace
}  // namespace vox::cuda
