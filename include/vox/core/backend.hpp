#pragma once
// The hook through which a device backend plugs into the core. The CUDA backend
// (kernels/cuda/backend.cu, compiled by nvcc into programs that link vox::cuda) registers itself
// here at start-up; a program compiled by g++ alone has no backend, and any tensor on a CUDA
// device is refused with an error that says how to get one.
//
// The interface is plain data (pointers, shapes, strides, op codes), so that the header-only ops
// compiled by g++ can call kernels compiled by nvcc.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/conv_geometry.hpp"
#include "vox/core/device.hpp"
#include "vox/core/dtype.hpp"
#include "vox/core/error.hpp"
#include "vox/core/shape.hpp"

namespace vox {

// Elementwise kernels of the backend. The *_backward ops take (gradient, saved input) and return
// the input's gradient; `OpParams` carries an op's constants (pow's exponent, clamp's bounds,
// leaky_relu's slope).
enum class BinaryOp : uint8_t {
  add, sub, mul, div,
  relu_backward,        // b > 0 ? a : 0 (a: gradient, b: the ReLU output or input)
  nonpositive_part,     // b > 0 ? 0 : a
  abs_backward,         // a * sign(b)
  square_backward,      // 2 a b
  pow_scalar_backward,  // a * p * b^(p - 1) (0 for p = 0), p = params.a
  clamp_backward,       // a where params.a <= b <= params.b, else 0
  leaky_relu_backward,  // b > 0 ? a : params.a * a
  gelu_erf_backward,
  gelu_tanh_backward,
  prelu,                // a > 0 ? a : b * a (b: the slope, broadcast)
  pow,                  // a^b
};
enum class UnaryOp : uint8_t {
  neg, exp, log, sqrt, relu, sigmoid, tanh,
  abs, square,
  pow_scalar,  // v^params.a
  clamp,       // to [params.a, params.b], NaN kept
  leaky_relu,  // slope params.a
  gelu_erf, gelu_tanh,
};
enum class CompareOp : uint8_t { eq, ne, lt, le, gt, ge };
struct OpParams {
  double a = 0, b = 0;
};
// An elementwise op as an op layer asks for it: the kernel and its constants.
struct CudaUnary {
  UnaryOp op;
  OpParams params{};
  CudaUnary(UnaryOp o, OpParams p = {}) : op(o), params(p) {}  // NOLINT: an op code alone is a CudaUnary
};
struct CudaBinary {
  BinaryOp op;
  OpParams params{};
  CudaBinary(BinaryOp o, OpParams p = {}) : op(o), params(p) {}  // NOLINT: an op code alone is a CudaBinary
};

// One device's allocator counters, in bytes. `reserved` is what the device allocator holds
// (cached blocks included); `allocated` what live tensors use.
struct DeviceMemoryStats {
  int64_t allocated_bytes = 0;       // held by live tensors, in the allocator's rounded sizes
  int64_t peak_allocated_bytes = 0;
  int64_t requested_bytes = 0;       // what those live tensors asked for (the rest is rounding)
  int64_t reserved_bytes = 0;        // taken from the driver: allocated plus cached
  int64_t peak_reserved_bytes = 0;
  int64_t allocations = 0;           // requests served
  int64_t device_allocations = 0;    // requests that reached the driver (cache misses)
  int64_t cached_bytes = 0;          // freed blocks kept for reuse, pending ones included
  int64_t cached_blocks = 0;
  int64_t largest_cached_block = 0;  // blocks are reused whole, by requests of 3/4 of one and more
  int64_t pending_blocks = 0;        // freed, but still in use by work queued on another stream
  int64_t graph_pool_bytes = 0;      // freed blocks that CUDA graphs keep for their replays (not in cached_bytes)
  // The share of the cache outside its largest block: 0 when the cache is one block (or empty),
  // near 1 when it is many small blocks that no large request can use.
  double fragmentation() const {
    return cached_bytes > 0 ? 1.0 - static_cast<double>(largest_cached_block) / static_cast<double>(cached_bytes) : 0.0;
  }
};

// The three passes of a channels-last convolution (kernels/conv_geometry.hpp):
//   forward:         out = y  [positions][Cout] from a = x, b = w;
//   backward_data:   out = dx [in positions][Cin] from a = dy, b = w;
//   backward_weight: out = dw [Cout][kD][kH][kW][Cin/groups] from a = x, b = dy.
enum class ConvPass : uint8_t { forward, backward_data, backward_weight };

// How the CUDA backend picks a convolution engine.
enum class ConvEngine : uint8_t {
  automatic,      // cuDNN's fastest plan for the shape, the implicit GEMM where cuDNN has none
  cudnn,          // cuDNN only: a shape it refuses is an error
  implicit_gemm,  // vox's own kernels only
};
struct ConvSettings {
  ConvEngine engine = ConvEngine::automatic;
  bool autotune = true;         // time cuDNN's candidate plans on a shape's first use, keep the fastest
  bool allow_tf32 = false;      // f32 convolutions may round their inputs to TF32 on tensor cores
  bool deterministic = false;   // refuse plans that cuDNN marks non-deterministic
  int autotune_candidates = 8;  // how many of cuDNN's heuristic choices are timed
};

// The geometry of a normalisation over x viewed as [B][R][C] with G groups of C / G channels;
// statistics are per (b, group). slope_stride: 0 for one PReLU slope, 1 for one per channel.
struct NormParams {
  int64_t B = 1, R = 1, C = 1, G = 1;
  double eps = 1e-5;
  bool fixed_stats = false;  // mean and rstd are given (batch norm in eval mode)
  int64_t slope_stride = 0;
};

// One parameter of a fused Adam step: its tensors (same dtype, contiguous, on one device), its
// size, and its bias corrections (lr / (1 - beta1^t) and sqrt(1 - beta2^t)). With a device
// schedule (below), step_index says which of its step counts is this parameter's, and the bias
// corrections are computed on the device instead.
struct AdamSegment {
  void* param;
  const void* grad;
  void* exp_avg;
  void* exp_avg_sq;
  int64_t size;
  double step_size;
  double root_correction2;
  int64_t step_index = 0;
};
// `schedule`, where not null, is f64 device memory {lr, step count of parameter 0, 1, ...}: the
// step advances the counts of the segments' parameters and reads lr there, so that a CUDA graph
// replay of the step does what an eager step would (a capturable optimizer).
struct AdamHyper {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled;  // AdamW
  const double* schedule = nullptr;
};

// One axis of a separable resampling (kernels/cpu/resample.hpp's AxisTable, as plain host
// arrays): output o reads inputs index[begin[o] .. begin[o + 1]) with their weights.
struct ResampleAxis {
  int64_t in_size = 1, out_size = 1;
  const int64_t* begin = nullptr;  // out_size + 1 offsets
  const int64_t* index = nullptr;
  const double* weight = nullptr;
};

// Random fills with vox's Philox counters (vox/core/rng.hpp): uniform on [a, b), bernoulli with
// probability a, normal with mean a and standard deviation b.
enum class RandomKind : uint8_t { uniform, bernoulli, normal };

// One parameter of a fused SGD step; momentum_buffer is unused without momentum. `first`: the
// buffer starts as the first step's direction.
struct SgdSegment {
  void* param;
  const void* grad;
  void* momentum_buffer;
  int64_t size;
  bool first;
};
struct SgdHyper {
  double lr, momentum, dampening, weight_decay;
  bool nesterov;
  const double* schedule = nullptr;  // where not null, f64 device memory whose first value is lr
};

// Fused attention over `batch` independent (batch x heads) problems, each q [q_len][qk_dim],
// k [kv_len][qk_dim], v [kv_len][v_dim], out [q_len][v_dim], all contiguous; lse [q_len] is the
// log-sum-exp of each row's scaled scores, saved for the backward pass, in f64 for f64 and in
// f32 for the other floating dtypes.
struct AttentionShape {
  int64_t batch = 1, q_len = 1, kv_len = 1, qk_dim = 1, v_dim = 1;
  double scale = 1.0;
};

// An INT8 convolution or transposed convolution on device pointers, in the arithmetic of
// kernels/reference/conv_int8.hpp (kernels/cuda/conv_int8.cuh). x is f32, quantized on entry.
struct Int8ConvCall {
  kernels::ConvGeometry geometry;  // the convolution's; transposed, x is its output side and y its input side
  bool transposed = false;
  float inv_scale = 1.0f;
  int32_t zero_point = 0;
  const int8_t* weight = nullptr;     // [y channels][taps][a group's x channels, padded to 4 with 0]
  const int32_t* tap_sums = nullptr;  // [y channels][taps]: each tap's weight total
  const float* scale = nullptr;       // [y channels]: x scale * weight scale
  const float* bias = nullptr;        // [y channels] or null
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

  // Streams, as opaque cudaStream_t handles (nullptr: the device's default stream). The backend
  // queues a device's work on the calling thread's current stream for that device.
  virtual void* create_stream(int device) = 0;  // non-blocking with respect to the default stream
  virtual void destroy_stream(void* stream, int device) = 0;  // waits for its work first
  virtual void set_current_stream(void* stream, int device) = 0;
  virtual void* current_stream(int device) const = 0;
  virtual void synchronize_stream(void* stream, int device) = 0;
  // Keeps the block at `ptr` (a storage's start) from reuse until the work queued on `stream` so
  // far has finished: for a tensor allocated on one stream and used on another.
  virtual void record_stream(void* ptr, void* stream, int device) = 0;

  // Page-locked host memory, which the device reads and writes without a staging copy, so that
  // copies from and to it can be asynchronous. Freeing waits for the device.
  virtual void* allocate_pinned(size_t nbytes) = 0;
  virtual void deallocate_pinned(void* ptr) = 0;

  // Contiguous bytes between host and device (either direction) or device and device; returns
  // when the host may use the data.
  virtual void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) = 0;
  // The same, queued on the current stream of the device involved, returning at once; the host
  // side must be pinned. The caller synchronises before touching host data.
  virtual void copy_bytes_async(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) = 0;
  // dst[i] = convert(src at strides) over `shape`, on one device; stride 0 broadcasts.
  virtual void copy_strided(void* dst, DType dst_dtype, const Strides& dst_strides, const void* src, DType src_dtype,
                            const Strides& src_strides, const Shape& shape, int device) = 0;
  // Contiguous dst over `shape`; a and b at their (broadcast) strides; one floating dtype.
  virtual void binary(BinaryOp op, DType dtype, const Shape& shape, void* dst, const void* a, const Strides& a_strides,
                      const void* b, const Strides& b_strides, const OpParams& params, int device) = 0;
  virtual void unary(UnaryOp op, DType dtype, int64_t n, void* dst, const void* src, const OpParams& params, int device) = 0;
  // Contiguous bool dst over `shape` = a op b, both of `dtype` (any stored dtype) at their strides.
  virtual void compare(CompareOp op, DType dtype, const Shape& shape, bool* dst, const void* a, const Strides& a_strides,
                       const void* b, const Strides& b_strides, int device) = 0;
  // Contiguous dst over `shape` = condition ? a : b; condition bool, a and b of `dtype`.
  virtual void where(DType dtype, const Shape& shape, void* dst, const bool* condition, const Strides& condition_strides,
                     const void* a, const Strides& a_strides, const void* b, const Strides& b_strides, int device) = 0;
  // dst[a, b] = sum over r of src[a, r, b] (all contiguous); scale multiplies the sums (means).
  virtual void sum_middle(DType dtype, int64_t outer, int64_t reduced, int64_t inner, void* dst, const void* src, double scale,
                          int device) = 0;
  // Over r of a contiguous src[a, r, b] in `dtype` (any stored dtype): values[a, b] gets the max
  // (want_max) or min, indices[a, b] the first r that holds it; a NaN wins, as on the CPU.
  // Either output may be null.
  virtual void extremum_middle(DType dtype, int64_t outer, int64_t reduced, int64_t inner, const void* src, void* values,
                               int64_t* indices, bool want_max, int device) = 0;
  // C[batch] = A[batch] (m x k) @ B[batch] (k x n), row-major and contiguous, batch stride m*k,
  // k*n, m*n (a stride of 0 reuses one matrix for every batch entry).
  virtual void matmul(DType dtype, int64_t batch, int64_t m, int64_t n, int64_t k, const void* a, int64_t a_batch_stride,
                      const void* b, int64_t b_batch_stride, void* c, int device) = 0;

  // One pass of a convolution (see ConvPass); all operands contiguous, channels-last.
  virtual void conv(ConvPass pass, DType dtype, const kernels::ConvGeometry& g, const void* a, const void* b, void* out,
                    int device) = 0;
  virtual void conv_int8(const Int8ConvCall& call, const float* x, float* y, int device) = 0;
  virtual void set_conv_settings(const ConvSettings& settings) = 0;
  virtual ConvSettings conv_settings() const = 0;
  // Which engine served the last call of each pass (for tests and benchmarks): "cudnn:<engine id>"
  // or "implicit_gemm".
  virtual std::string last_conv_engine(ConvPass pass) const = 0;

  // Normalisation forward: statistics (unless fixed) into mean and rstd ([B][G], dtype's compute
  // type), and the biased variance into `variance` where it is not null; then
  // y = act((x - mean) * rstd * gamma + beta) (+ residual). gamma, beta, slope and residual may
  // be null (no affine, no PReLU, no sum).
  virtual void norm_forward(DType dtype, const NormParams& p, const void* x, const void* gamma, const void* beta,
                            const void* slope, const void* residual, void* mean, void* rstd, void* variance, void* y,
                            int device) = 0;
  // Its backward: any of dx, dgamma, dbeta, dslope may be null (not needed).
  virtual void norm_backward(DType dtype, const NormParams& p, const void* x, const void* dy, const void* mean,
                             const void* rstd, const void* gamma, const void* beta, const void* slope, void* dx, void* dgamma,
                             void* dbeta, void* dslope, int device) = 0;

  // softmax (or log_softmax) over the middle axis of a contiguous [outer][n][inner] block, and its
  // backward from the output y.
  virtual void softmax(DType dtype, int64_t outer, int64_t n, int64_t inner, const void* x, void* y, bool log, int device) = 0;
  virtual void softmax_backward(DType dtype, int64_t outer, int64_t n, int64_t inner, const void* y, const void* dy, void* dx,
                                bool log, int device) = 0;

  // Integer labels (i64, [rows]) to one-hot [rows][classes] of dtype (any floating or integer
  // dtype the backend stores). A label outside [0, classes) is an Error that names its row.
  virtual void one_hot(DType dtype, int64_t rows, int64_t classes, const int64_t* labels, void* out, int device) = 0;
  // The cross-entropy's gather over values [rows][classes] (floating): picked[r] = values[r][label],
  // target_weight[r] = weight[label] (1 without weights) and valid[r] = 1, or all three 0 where
  // the label is ignore_index. Its backward writes dvalues (zeros elsewhere).
  virtual void pick_classes(DType dtype, int64_t rows, int64_t classes, const void* values, const int64_t* labels,
                            const void* weight, int64_t ignore_index, void* picked, void* target_weight, void* valid,
                            int device) = 0;
  virtual void pick_classes_backward(DType dtype, int64_t rows, int64_t classes, const void* dpicked, const int64_t* labels,
                                     int64_t ignore_index, void* dvalues, int device) = 0;

  // y = the separable resampling of x [N][D][H][W][C] by the three axis tables (host arrays; the
  // backend copies them to the device).
  virtual void resample(DType dtype, int64_t N, int64_t C, const std::array<ResampleAxis, 3>& axes, const void* x, void* y,
                        int device) = 0;
  // Max pooling over windows [3][out][2] (host, D's windows first), argmax as flat input positions.
  virtual void max_pool(DType dtype, int64_t N, int64_t C, const std::array<int64_t, 3>& in, const std::array<int64_t, 3>& out,
                        const int64_t* windows, const void* x, void* y, int64_t* argmax, int device) = 0;
  virtual void max_pool_backward(DType dtype, int64_t N, int64_t C, int64_t in_volume, int64_t out_volume, const void* g,
                                 const int64_t* argmax, void* gx, int device) = 0;

  // Axis-separable gather (pad, flip): out (contiguous, sizes maps[a].size()) takes x at
  // maps[a][o] on each axis a (x at its strides), or `fill` where a map holds -1. Any stored dtype.
  virtual void gather_axes(DType dtype, const std::vector<std::vector<int64_t>>& maps, const void* x, const Strides& x_strides,
                           double fill, void* out, int device) = 0;
  // Its backward: gx (contiguous, in_shape) = the sum of g's elements at their sources (floating).
  virtual void scatter_add_axes(DType dtype, const std::vector<std::vector<int64_t>>& maps, const Shape& in_shape, const void* g,
                                void* gx, int device) = 0;

  // out[i] (contiguous, n elements, floating dtype) from Philox block start + i / 2 under `key`.
  // With `draw_state` (device memory {key, base}, as a CUDA graph's draws use), the key is
  // draw_state[0] and the block is draw_state[1] + start + i / 2, read when the kernel runs.
  virtual void random(RandomKind kind, DType dtype, int64_t n, uint64_t key, uint64_t start, double a, double b, void* out,
                      int device, const uint64_t* draw_state = nullptr) = 0;

  // softmax(q k^T * scale) v without the score matrix; false (nothing done) where the backend
  // has no fused kernel for this dtype or head size, and the caller composes it from matmul and
  // softmax instead.
  virtual bool attention_forward(DType dtype, const AttentionShape& s, const void* q, const void* k, const void* v, void* out,
                                 void* lse, int device) = 0;
  virtual void attention_backward(DType dtype, const AttentionShape& s, const void* q, const void* k, const void* v,
                                  const void* out, const void* lse, const void* dout, void* dq, void* dk, void* dv,
                                  int device) = 0;

  // CUDA graphs (vox/core/cuda_graph.hpp). begin_capture starts capturing the calling thread's
  // current stream of `device` (not the legacy default stream) into a new graph with its own
  // memory pool; end_capture instantiates it and returns its handle; replay_graph launches it on
  // the current stream; destroy_graph waits for the device and frees it and its pool.
  virtual void begin_capture(int device) = 0;
  virtual void* end_capture(int device) = 0;
  virtual void replay_graph(void* graph, int device) = 0;
  virtual void destroy_graph(void* graph, int device) = 0;
  // Whether the calling thread's current stream of `device` is being captured.
  virtual bool capturing(int device) const = 0;
  // Writes `count` (at most 4) 64-bit words to device memory in stream order, the values passed
  // with the launch: safe to queue while a graph that reads them is running.
  virtual void store_words(void* dst, const std::array<uint64_t, 4>& words, int count, int device) = 0;

  // One Adam / AdamW step over every segment, in one launch.
  virtual void adam_step(DType dtype, const std::vector<AdamSegment>& segments, const AdamHyper& hyper, int device) = 0;
  virtual void sgd_step(DType dtype, const std::vector<SgdSegment>& segments, const SgdHyper& hyper, int device) = 0;
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
  VOX_CHECK(b, op, "needs CUDA (a tensor on a CUDA device, or pinned host memory), but this program was built without the "
            "CUDA backend; link the CMake target vox::cuda (or compile kernels/cuda/backend.cu with nvcc)");
  return *b;
}

inline DeviceMemoryStats cuda_memory_stats(int device = 0) { return cuda_backend("cuda_memory_stats").memory_stats(device); }

// How CUDA convolutions pick their engine (cuDNN or vox's implicit GEMM), autotune and round.
inline void set_cuda_conv_settings(const ConvSettings& settings) {
  cuda_backend("set_cuda_conv_settings").set_conv_settings(settings);
}
inline ConvSettings cuda_conv_settings() { return cuda_backend("cuda_conv_settings").conv_settings(); }

}  // namespace vox
