#pragma once
// Convolution through cuDNN's graph API (cudnn_graph.h, the backend descriptors of cuDNN 9):
// one operation graph per pass and shape, channels-last (NDHWC) tensors described by strides.
//   - Execution plans are cached by a shape key (pass, dtype, geometry, alignment, settings).
//   - On a shape's first use the heuristic's candidate plans are built and, with autotuning on,
//     each is timed on the call's own buffers (every candidate writes the same result); the
//     fastest is kept.
//   - A shape for which no plan builds is remembered as refused; the caller falls back to the
//     implicit GEMM.
// f32 runs without TF32 unless the settings allow it: plans whose engines down-convert their
// inputs are skipped, as cuBLAS runs without TF32 here too.
#include <cudnn.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/conv_geometry.hpp"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/stream.cuh"
#include "vox/core/backend.hpp"

namespace vox::cuda {

// A backend descriptor, destroyed with its owner.
class CudnnDescriptor {
 public:
  explicit CudnnDescriptor(cudnnBackendDescriptorType_t type) { VOX_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d_)); }
  CudnnDescriptor(CudnnDescriptor&& o) noexcept : d_(o.d_) { o.d_ = nullptr; }
  CudnnDescriptor& operator=(CudnnDescriptor&& o) noexcept {
    std::swap(d_, o.d_);
    return *this;
  }
  CudnnDescriptor(const CudnnDescriptor&) = delete;
  CudnnDescriptor& operator=(const CudnnDescriptor&) = delete;
  ~CudnnDescriptor() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }

  template <class V>
  CudnnDescriptor& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const V* values) {
    VOX_CUDNN_CHECK(cudnnBackendSetAttribute(d_, name, type, count, values));
    return *this;
  }
  CudnnDescriptor& set(cudnnBackendAttributeName_t name, const CudnnDescriptor& other) {
    cudnnBackendDescriptor_t raw = other.d_;
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw);
  }
  void finalize() { VOX_CUDNN_CHECK(cudnnBackendFinalize(d_)); }
  cudnnStatus_t try_finalize() { return cudnnBackendFinalize(d_); }
  cudnnBackendDescriptor_t get() const { return d_; }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

// Sets the cuDNN handle on graphs and plans. The attribute is deprecated since cuDNN 9.8 in
// favour of device-property descriptors, but it is the one every cuDNN 9 release accepts.
inline void set_handle(CudnnDescriptor& d, cudnnBackendAttributeName_t name, cudnnHandle_t handle) {
#pragma nv_diag_suppress 1215
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  d.set(name, CUDNN_TYPE_HANDLE, 1, &handle);
#pragma GCC diagnostic pop
#pragma nv_diag_default 1215
}

class CudnnConvolutions {
 public:
  // Runs one pass with cuDNN. Returns false, doing nothing and saying why in `refusal`, where cuDNN
  // has no plan for the shape. While the stream is being captured into a CUDA graph, an untuned
  // shape runs cuDNN's first choice untimed (timing needs a synchronisation); a later eager call
  // tunes it.
  bool run(ConvPass pass, DType dtype, const kernels::ConvGeometry& g, const void* a, const void* b, void* out, int device,
           const ConvSettings& settings, DeviceBackend& memory, bool capturing, std::string& engine_name, std::string& refusal) {
    if (dtype != DType::f32 && dtype != DType::f64 && dtype != DType::f16 && dtype != DType::bf16) return false;
    const int64_t alignment = common_alignment({a, b, out}, dtype_size(dtype));
    const std::string key = shape_key(pass, dtype, g, alignment, device, settings);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = plans_.find(key);
    if (it == plans_.end()) {
      Entry built;
      try {
        RelaxedCaptureMode relaxed(capturing);  // building plans may load modules and allocate
        built = build(pass, dtype, g, alignment, device, settings);
      } catch (const Error& e) {  // a descriptor cuDNN rejects: this shape is refused, with the reason kept
        built = Entry{};
        built.refusal = e.what();
      }
      if (built.candidates.empty() && built.refusal.empty()) built.refusal = "no engine of cuDNN's heuristics builds a plan";
      it = plans_.emplace(key, std::move(built)).first;
    }
    Entry& entry = it->second;
    if (entry.candidates.empty()) {
      refusal = entry.refusal;
      return false;
    }
    void* pointers[3];
    const int64_t uids[3] = {kUidX, kUidW, kUidY};
    bind(pass, a, b, out, pointers);
    if (!entry.tuned && !capturing) {
      pick_fastest(entry, device, uids, pointers, memory);
      entry.tuned = true;
    }
    execute(entry.candidates.front(), device, uids, pointers, memory);
    engine_name = "cudnn:" + std::to_string(entry.candidates.front().engine_id);
    return true;
  }

  // Drops every cached plan and handle (at exit, before the runtime goes).
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    plans_.clear();
    for (auto& [device, handle] : handles_) {
      cudaSetDevice(device);
      cudnnDestroy(handle);
    }
    handles_.clear();
  }

 private:
  static constexpr int64_t kUidX = 'x', kUidW = 'w', kUidY = 'y';

  struct Candidate {
    std::shared_ptr<CudnnDescriptor> plan;
    int64_t workspace = 0;
    int64_t engine_id = -1;
  };
  struct Entry {
    std::vector<Candidate> candidates;  // the chosen plan first once tuned
    bool tuned = false;
    std::string refusal;  // why there is no candidate
  };

  // The x, w, y roles of the three passes: forward reads x and w; the data gradient reads dy
  // (the graph's y) and w into dx (the graph's x); the weight gradient reads x and dy into dw.
  static void bind(ConvPass pass, const void* a, const void* b, void* out, void* pointers[3]) {
    switch (pass) {
      case ConvPass::forward: pointers[0] = const_cast<void*>(a), pointers[1] = const_cast<void*>(b), pointers[2] = out; break;
      case ConvPass::backward_data: pointers[0] = out, pointers[1] = const_cast<void*>(b), pointers[2] = const_cast<void*>(a); break;
      case ConvPass::backward_weight: pointers[0] = const_cast<void*>(a), pointers[1] = out, pointers[2] = const_cast<void*>(b); break;
    }
  }

  static int64_t common_alignment(std::initializer_list<const void*> pointers, int64_t element) {
    int64_t alignment = 16;
    for (const void* p : pointers)
      while (alignment > element && reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(alignment) != 0) alignment /= 2;
    return alignment;
  }

  static std::string shape_key(ConvPass pass, DType dtype, const kernels::ConvGeometry& g, int64_t alignment, int device,
                               const ConvSettings& s) {
    std::string key = std::to_string(static_cast<int>(pass)) + ":" + std::to_string(static_cast<int>(dtype)) + ":" +
                      std::to_string(device) + ":" + std::to_string(alignment) + ":" + std::to_string(s.allow_tf32) +
                      std::to_string(s.deterministic) + std::to_string(s.autotune) + ":" + std::to_string(g.batch);
    for (const auto* v : {&g.in, &g.out, &g.kernel, &g.stride, &g.padding, &g.dilation})
      for (int64_t x : *v) key += "," + std::to_string(x);
    key += ":" + std::to_string(g.in_channels) + "," + std::to_string(g.out_channels) + "," + std::to_string(g.groups);
    return key;
  }

  cudnnHandle_t handle(int device) {
    cudnnHandle_t& h = handles_[device];
    if (!h) {
      VOX_CUDA_CHECK(cudaSetDevice(device));
      VOX_CUDNN_CHECK(cudnnCreate(&h));
    }
    VOX_CUDNN_CHECK(cudnnSetStream(h, launch_stream(device)));  // plans run on the caller's stream
    return h;
  }

  // A channels-last tensor [N][D][H][W][C], described to cuDNN as dims (N, C, D, H, W).
  static CudnnDescriptor tensor(int64_t uid, cudnnDataType_t type, int64_t alignment, int64_t n, int64_t c,
                                const std::array<int64_t, 3>& dhw) {
    const int64_t dims[5] = {n, c, dhw[0], dhw[1], dhw[2]};
    const int64_t strides[5] = {dhw[0] * dhw[1] * dhw[2] * c, 1, dhw[1] * dhw[2] * c, dhw[2] * c, c};
    CudnnDescriptor t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type)
        .set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 5, dims)
        .set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 5, strides)
        .set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid)
        .set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    t.finalize();
    return t;
  }

  Entry build(ConvPass pass, DType dtype, const kernels::ConvGeometry& g, int64_t alignment, int device,
              const ConvSettings& settings) {
    // 16-bit tensors accumulate in f32 (the convolution's compute type), like PyTorch's autocast.
    const cudnnDataType_t type = dtype == DType::f64    ? CUDNN_DATA_DOUBLE
                                 : dtype == DType::f16  ? CUDNN_DATA_HALF
                                 : dtype == DType::bf16 ? CUDNN_DATA_BFLOAT16
                                                        : CUDNN_DATA_FLOAT;
    const cudnnDataType_t compute = dtype == DType::f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    const CudnnDescriptor x = tensor(kUidX, type, alignment, g.batch, g.in_channels, g.in);
    const CudnnDescriptor w = tensor(kUidW, type, alignment, g.out_channels, g.in_per_group(), g.kernel);
    const CudnnDescriptor y = tensor(kUidY, type, alignment, g.batch, g.out_channels, g.out);

    CudnnDescriptor conv(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
    const int64_t spatial = 3;
    const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    conv.set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute)
        .set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode)
        .set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial)
        .set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 3, g.dilation.data())
        .set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 3, g.stride.data())
        .set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 3, g.padding.data())
        .set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 3, g.padding.data());
    conv.finalize();

    const double alpha64 = 1, beta64 = 0;
    const float alpha32 = 1, beta32 = 0;
    const cudnnBackendAttributeType_t scalar_type = dtype == DType::f64 ? CUDNN_TYPE_DOUBLE : CUDNN_TYPE_FLOAT;
    const void* alpha = dtype == DType::f64 ? static_cast<const void*>(&alpha64) : &alpha32;
    const void* beta = dtype == DType::f64 ? static_cast<const void*>(&beta64) : &beta32;
    // The operation and its attribute names for the pass: (x, w, y, convolution, alpha, beta).
    struct Names {
      cudnnBackendDescriptorType_t type;
      cudnnBackendAttributeName_t x, w, y, conv, alpha, beta;
    };
    const Names names = pass == ConvPass::forward
                            ? Names{CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
                                    CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
                                    CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                                    CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA}
                        : pass == ConvPass::backward_data
                            ? Names{CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
                                    CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
                                    CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
                                    CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA}
                            : Names{CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
                                    CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
                                    CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
                                    CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
                                    CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA};
    auto op = std::make_unique<CudnnDescriptor>(names.type);
    op->set(names.x, x).set(names.w, w).set(names.y, y).set(names.conv, conv);
    op->set(names.alpha, scalar_type, 1, alpha).set(names.beta, scalar_type, 1, beta);
    Entry entry;
    if (op->try_finalize() != CUDNN_STATUS_SUCCESS) return entry;  // cuDNN does not describe this convolution

    const cudnnHandle_t h = handle(device);
    CudnnDescriptor graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    const cudnnBackendDescriptor_t ops[1] = {op->get()};
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, ops);
    set_handle(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, h);
    if (graph.try_finalize() != CUDNN_STATUS_SUCCESS) return entry;

    CudnnDescriptor heuristics(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    const cudnnBackendHeurMode_t heur_mode = CUDNN_HEUR_MODE_A;
    heuristics.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph).set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &heur_mode);
    if (heuristics.try_finalize() != CUDNN_STATUS_SUCCESS) return entry;
    int64_t count = 0;
    VOX_CUDNN_CHECK(cudnnBackendGetAttribute(heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                             &count, nullptr));
    std::vector<CudnnDescriptor> configs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
      configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      raw.push_back(configs.back().get());
    }
    int64_t returned = 0;
    if (count > 0)
      VOX_CUDNN_CHECK(cudnnBackendGetAttribute(heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                               count, &returned, raw.data()));
    const size_t wanted = static_cast<size_t>(settings.autotune ? std::max(1, settings.autotune_candidates) : 1);
    for (int64_t i = 0; i < returned && entry.candidates.size() < wanted; ++i) {
      if (!acceptable(configs[static_cast<size_t>(i)], dtype, settings)) continue;
      auto plan = std::make_shared<CudnnDescriptor>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      set_handle(*plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, h);
      plan->set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, configs[static_cast<size_t>(i)]);
      if (plan->try_finalize() != CUDNN_STATUS_SUCCESS) continue;  // this engine cannot run the shape
      Candidate c;
      c.plan = plan;
      int64_t n = 0;
      VOX_CUDNN_CHECK(cudnnBackendGetAttribute(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                               &c.workspace));
      c.engine_id = engine_id(configs[static_cast<size_t>(i)]);
      entry.candidates.push_back(std::move(c));
    }
    entry.tuned = entry.candidates.size() <= 1;
    return entry;
  }

  // The engine behind a configuration, and whether its numerical notes fit the settings.
  static bool engine_of(const CudnnDescriptor& config, CudnnDescriptor& engine) {
    cudnnBackendDescriptor_t raw = engine.get();
    int64_t n = 0;
    return cudnnBackendGetAttribute(config.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &raw) ==
           CUDNN_STATUS_SUCCESS;
  }
  static int64_t engine_id(const CudnnDescriptor& config) {
    CudnnDescriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    int64_t id = -1, n = 0;
    if (engine_of(config, engine))
      cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &id);
    return id;
  }
  static bool acceptable(const CudnnDescriptor& config, DType dtype, const ConvSettings& settings) {
    CudnnDescriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    if (!engine_of(config, engine)) return false;
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    int64_t n = 0;
    if (cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                 CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n, notes) != CUDNN_STATUS_SUCCESS)
      return false;
    for (int64_t i = 0; i < n; ++i) {
      const bool tf32 = notes[i] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS || notes[i] == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION;
      if (tf32 && !(settings.allow_tf32 && dtype == DType::f32)) return false;
      if (notes[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC && settings.deterministic) return false;
    }
    return true;
  }

  // Workspaces come from `memory`, the backend's caching allocator.
  void execute(const Candidate& c, int device, const int64_t uids[3], void* pointers[3], DeviceBackend& memory) {
    void* workspace = c.workspace > 0 ? memory.allocate(static_cast<size_t>(c.workspace), device) : nullptr;
    CudnnDescriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids)
        .set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, pointers)
        .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
    pack.finalize();
    const cudnnStatus_t status = cudnnBackendExecute(handle(device), c.plan->get(), pack.get());
    if (workspace) memory.deallocate(workspace, static_cast<size_t>(c.workspace), device);  // stream order: later work reuses it after this plan ran
    VOX_CUDNN_CHECK(status);
  }

  // Times every candidate (one warm-up run, then the median of three) and moves the fastest first.
  void pick_fastest(Entry& entry, int device, const int64_t uids[3], void* pointers[3], DeviceBackend& memory) {
    cudaEvent_t start, stop;
    VOX_CUDA_CHECK(cudaEventCreate(&start));
    VOX_CUDA_CHECK(cudaEventCreate(&stop));
    std::vector<float> best(entry.candidates.size(), 1e30f);
    for (size_t i = 0; i < entry.candidates.size(); ++i) {
      try {
        execute(entry.candidates[i], device, uids, pointers, memory);
        std::vector<float> times;
        for (int r = 0; r < 3; ++r) {
          VOX_CUDA_CHECK(cudaEventRecord(start, launch_stream(device)));
          execute(entry.candidates[i], device, uids, pointers, memory);
          VOX_CUDA_CHECK(cudaEventRecord(stop, launch_stream(device)));
          VOX_CUDA_CHECK(cudaEventSynchronize(stop));
          float ms = 0;
          VOX_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
          times.push_back(ms);
        }
        std::sort(times.begin(), times.end());
        best[i] = times[1];
      } catch (const Error&) {  // a plan that fails to run (out of workspace memory, say) is not chosen
        (void)cudaGetLastError();
      }
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    const size_t fastest = static_cast<size_t>(std::min_element(best.begin(), best.end()) - best.begin());
    // Every plan is kept, the fastest moved first: a CUDA graph captured before this tuning ran
    // cuDNN's first choice, and its kernels may refer to that plan for as long as the graph lives.
    std::swap(entry.candidates[0], entry.candidates[fastest]);
  }

  std::mutex mutex_;
  std::map<std::string, Entry> plans_;
  std::map<int, cudnnHandle_t> handles_;
};

}  // namespace vox::cuda
