#pragma once
// Data-parallel training with PyTorch DDP's semantics and defaults. Every rank holds a replica of
// the model and trains on its share of each batch; DataParallel keeps the replicas equal:
//   - at construction, it checks that every rank has the same parameters (names, shapes, dtypes)
//     and broadcasts parameters and buffers from rank 0;
//   - before each forward pass (before_forward), it broadcasts the buffers (batch norm's running
//     statistics) from rank 0, as DDP's broadcast_buffers does;
//   - during each backward pass, it copies each gradient, as soon as the tape says it is final,
//     into a flat bucket: parameters in reverse registration order (roughly the order backward
//     finishes them), the first bucket up to 1 MiB, the others up to 25 MiB, a bucket closed once
//     it reaches its cap. A full bucket's allreduce is queued at once, always in bucket order, so
//     that it runs on the communication thread while backward computes the rest;
//   - when the backward pass ends, it waits for the buckets and writes each parameter's gradient
//     back: the average over ranks (each rank divides by the world size, then the sum).
// Inside no_sync(), backward passes only accumulate gradients locally (gradient accumulation);
// the next synchronised pass reduces the accumulated sums.
//
// A parameter that receives no gradient would leave its bucket, and every bucket after it,
// waiting forever in PyTorch (its "expected to have finished reduction" error). vox owns the
// tape: when the pass ends it names those parameters in a vox::Error, on every rank alike, or,
// with find_unused_parameters, reduces zeros for them. A backward pass that reaches none of the
// model's parameters (another model's, on the same thread) is left alone.
//
// Build it after the model has moved to its device and dtype (it holds the parameter tensors),
// and use it on the thread that runs backward.
#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "vox/autograd/backward_observer.hpp"
#include "vox/dist/process_group.hpp"
#include "vox/nn/module.hpp"

namespace vox::dist {

struct DataParallelOptions {
  double bucket_cap_mb = 25.0;  // PyTorch's bucket_cap_mb (MiB)
  double first_bucket_mb = 1.0;  // PyTorch's _DEFAULT_FIRST_BUCKET_BYTES (MiB)
  bool broadcast_buffers = true;
  bool find_unused_parameters = false;
};

// One bucket: its parameters (indices into named_parameters()) and where each lies in the flat buffer.
struct GradientBucket {
  std::vector<size_t> parameters;
  std::vector<std::string> names;
  std::vector<int64_t> offsets;  // in elements
  int64_t numel = 0;
  DType dtype = DType::f32;
  Device device = Device::cpu();
  size_t bytes() const { return static_cast<size_t>(numel) * dtype_size(dtype); }
};

// Communication of the last synchronised backward pass.
struct ReductionTiming {
  double communication_seconds = 0;  // the buckets' allreduces, start to finish, added up
  double exposed_seconds = 0;        // how long the end of backward waited for them
  double backward_seconds = 0;       // the pass, from its start to its end (before the wait)
  int64_t buckets = 0;
  double hidden_fraction() const { return communication_seconds > 0 ? 1.0 - std::min(1.0, exposed_seconds / communication_seconds) : 1.0; }
};

// Assigns parameters (given in the order to reduce them) to buckets: a bucket holds one dtype on
// one device and is closed once it reaches its cap; the first cap is `first_bytes`, the rest `cap_bytes`.
inline std::vector<GradientBucket> assign_buckets(const std::vector<nn::NamedTensor>& params, const std::vector<size_t>& order,
                                                  size_t first_bytes, size_t cap_bytes) {
  std::vector<GradientBucket> done;
  std::map<std::pair<DType, std::string>, GradientBucket> open;  // by (dtype, device)
  for (size_t index : order) {
    const Tensor& t = *params[index].tensor;
    const auto key = std::make_pair(t.dtype(), t.device().str());
    GradientBucket& b = open[key];
    if (b.parameters.empty()) b.dtype = t.dtype(), b.device = t.device();
    b.parameters.push_back(index);
    b.names.push_back(params[index].name);
    b.offsets.push_back(b.numel);
    b.numel += t.numel();
    if (b.bytes() >= (done.empty() ? first_bytes : cap_bytes)) {
      done.push_back(std::move(b));
      open.erase(key);
    }
  }
  for (auto& [key, b] : open) done.push_back(std::move(b));
  return done;
}

class DataParallel final : public autograd::BackwardObserver {
 public:
  DataParallel(nn::Module& model, ProcessGroup& group, DataParallelOptions options = {})
      : model_(model), group_(group), o_(options), observe_(*this) {
    VOX_CHECK(o_.bucket_cap_mb > 0 && o_.first_bucket_mb > 0, "DataParallel", "bucket sizes must be positive, got ", o_.first_bucket_mb,
              " and ", o_.bucket_cap_mb, " MiB");
    params_ = model_.named_parameters();
    std::vector<size_t> order;
    for (size_t i = params_.size(); i-- > 0;)
      if (params_[i].tensor->requires_grad()) order.push_back(i);
    for (const auto& p : params_)
      VOX_CHECK(p.tensor->device() == group_.device(), "DataParallel", "parameter \"", p.name, "\" is on ", p.tensor->device(), "; the ",
                group_.backend(), " process group carries tensors on ", group_.device());
    buckets_ = assign_buckets(params_, order, mib(o_.first_bucket_mb), mib(o_.bucket_cap_mb));
    for (size_t b = 0; b < buckets_.size(); ++b) {
      buffers_.push_back(empty({buckets_[b].numel}, buckets_[b].dtype, buckets_[b].device));
      for (size_t s = 0; s < buckets_[b].parameters.size(); ++s) slot_[params_[buckets_[b].parameters[s]].tensor->impl()] = {b, s};
    }
    check_same_model();
    std::vector<Tensor> state;
    for (const auto& list : {params_, model_.named_buffers()})
      for (const auto& t : list) state.push_back(*t.tensor);
    broadcast_coalesced(state, "parameters and buffers from rank 0");
  }

  ProcessGroup& group() const { return group_; }
  const std::vector<GradientBucket>& buckets() const { return buckets_; }
  const ReductionTiming& last_reduction() const { return timing_; }

  // Before each forward pass: the buffers from rank 0 (with broadcast_buffers).
  void before_forward() {
    if (!o_.broadcast_buffers || group_.size() == 1) return;
    std::vector<Tensor> buffers;
    for (const auto& b : model_.named_buffers()) buffers.push_back(*b.tensor);
    broadcast_coalesced(buffers, "buffers from rank 0");
  }

  // PyTorch's no_sync(): backward passes within its lifetime accumulate gradients locally.
  [[nodiscard]] autograd::SuspendBackwardObserver no_sync() const { return {}; }

  // ---- the backward observer
  void begin() override {
    pass_start_ = std::chrono::steady_clock::now();
    pending_.assign(buckets_.size(), 0);
    for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = buckets_[b].parameters.size();
    ready_.assign(params_.size(), false);
    works_.assign(buckets_.size(), Work());
    next_bucket_ = 0;
    active_ = true;
  }

  void leaf_ready(TensorImpl& leaf) override {
    if (!active_) return;
    const auto found = slot_.find(&leaf);
    if (found == slot_.end()) return;  // not one of this model's parameters
    const auto [b, s] = found->second;
    const size_t index = buckets_[b].parameters[s];
    VOX_CHECK(!ready_[index], "DataParallel", "parameter \"", params_[index].name,
              "\" was finished twice in one backward pass (used both inside a checkpointed block and outside it); "
              "its bucket was already reduced");
    ready_[index] = true;
    write_gradient(b, s, Tensor(params_[index].tensor->impl()->grad));
    if (--pending_[b] == 0) launch_ready_buckets();
  }

  void end(bool completed) override {
    if (!active_) return;
    active_ = false;
    const auto backward_end = std::chrono::steady_clock::now();
    if (!completed) {  // the pass threw: let the queued allreduces finish before the buffers go
      wait_quietly();
      return;
    }
    if (std::none_of(ready_.begin(), ready_.end(), [](bool r) { return r; })) return;  // a pass that never reached this model
    std::vector<std::string> unused;
    for (const GradientBucket& bucket : buckets_)
      for (size_t s = 0; s < bucket.parameters.size(); ++s)
        if (!ready_[bucket.parameters[s]]) unused.push_back(bucket.names[s]);
    if (!unused.empty() && !o_.find_unused_parameters) {
      wait_quietly();
      std::string list;
      for (size_t i = 0; i < unused.size(); ++i) list += (i ? ", " : "") + unused[i];
      throw Error(vox::detail::concat("DataParallel: ", unused.size(), " parameter(s) received no gradient in this backward pass: ", list,
                                 ". Every rank must reduce every bucket: leave them out of the model (or of its parameters), or set "
                                 "find_unused_parameters so that they count as zero gradients"));
    }
    for (size_t b = 0; b < buckets_.size(); ++b)
      for (size_t s = 0; s < buckets_[b].parameters.size(); ++s)
        if (!ready_[buckets_[b].parameters[s]]) {
          ready_[buckets_[b].parameters[s]] = true;
          write_gradient(b, s, Tensor());
          if (--pending_[b] == 0) launch_ready_buckets();
        }
    VOX_CHECK(next_bucket_ == buckets_.size(), "DataParallel", "internal: ", buckets_.size() - next_bucket_, " bucket(s) were not reduced");
    timing_ = {};
    for (const Work& w : works_) w.wait();
    const auto reduced = std::chrono::steady_clock::now();
    timing_.buckets = static_cast<int64_t>(buckets_.size());
    timing_.backward_seconds = seconds(pass_start_, backward_end);
    timing_.exposed_seconds = seconds(backward_end, reduced);
    for (const Work& w : works_) {
      const CollectiveRecord r = w.record();
      timing_.communication_seconds += seconds(r.started, r.finished);
    }
    NoGradGuard no_grad;
    for (size_t b = 0; b < buckets_.size(); ++b)
      for (size_t s = 0; s < buckets_[b].parameters.size(); ++s) {
        Tensor& p = *params_[buckets_[b].parameters[s]].tensor;
        const int64_t at = buckets_[b].offsets[s];
        p.set_grad(buffers_[b].slice(0, at, at + p.numel()).reshape(p.shape().vec()).clone());
      }
  }

 private:
  static size_t mib(double m) { return static_cast<size_t>(m * 1024.0 * 1024.0); }
  static double seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  }

  // The gradient divided by the world size, into its place in the bucket (zeros where undefined).
  void write_gradient(size_t b, size_t s, const Tensor& grad) {
    NoGradGuard no_grad;
    const Tensor& p = *params_[buckets_[b].parameters[s]].tensor;
    const int64_t at = buckets_[b].offsets[s];
    Tensor place = buffers_[b].slice(0, at, at + p.numel());
    if (!grad.defined()) {
      place.copy_from(zeros({p.numel()}, buckets_[b].dtype, buckets_[b].device));
      return;
    }
    const Tensor flat = grad.to(buckets_[b].dtype).contiguous().reshape({p.numel()});
    place.copy_from(group_.size() == 1 ? flat : div(flat, scalar(static_cast<double>(group_.size()), buckets_[b].dtype)));
  }

  void launch_ready_buckets() {
    while (next_bucket_ < buckets_.size() && pending_[next_bucket_] == 0) {
      const GradientBucket& bucket = buckets_[next_bucket_];
      works_[next_bucket_] = group_.allreduce(buffers_[next_bucket_], ReduceOp::sum,
                                              vox::detail::concat("gradient bucket ", next_bucket_, " of ", buckets_.size(), ", ",
                                                             bucket.parameters.size(), " parameters from ", bucket.names.front()));
      ++next_bucket_;
    }
  }

  void wait_quietly() {
    for (const Work& w : works_)
      if (w.valid()) try {
          w.wait();
        } catch (...) {
        }
  }

  // Every rank must hold the same parameters: the extremes over ranks of a fingerprint of the
  // names, shapes and dtypes must agree.
  void check_same_model() {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    auto mix = [&](const std::string& text) {
      for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
    };
    for (const auto& p : params_) mix(p.name + "|" + p.tensor->shape().str() + "|" + std::string(dtype_name(p.tensor->dtype())) + ";");
    const int64_t mine = static_cast<int64_t>(h >> 1);
    Tensor extremes = from_vector(std::vector<int64_t>{mine, -mine}, {2}).to(group_.device());
    group_.allreduce(extremes, ReduceOp::max, "parameter fingerprint").wait();
    const std::vector<int64_t> v = extremes.to(Device::cpu()).to_vector<int64_t>();
    VOX_CHECK(v[0] == mine && -v[1] == mine, "DataParallel", "rank ", group_.rank(), "'s model (", params_.size(),
              " parameters) differs from another rank's in its parameter names, shapes or dtypes; every rank must build the same model");
  }

  // Broadcasts `tensors` from rank 0, one flat buffer per dtype.
  void broadcast_coalesced(const std::vector<Tensor>& tensors, const std::string& label) {
    if (group_.size() == 1) return;
    NoGradGuard no_grad;
    std::map<DType, std::vector<Tensor>> by_dtype;
    for (const Tensor& t : tensors) by_dtype[t.dtype()].push_back(t);
    for (auto& [dtype, list] : by_dtype) {
      int64_t total = 0;
      for (const Tensor& t : list) total += t.numel();
      Tensor flat = empty({total}, dtype, group_.device());
      int64_t at = 0;
      for (const Tensor& t : list) {
        if (group_.rank() == 0) flat.slice(0, at, at + t.numel()).copy_from(t.detach().contiguous().reshape({t.numel()}));
        at += t.numel();
      }
      group_.broadcast(flat, 0, label).wait();
      at = 0;
      for (const Tensor& t : list) {
        t.detach().copy_from(flat.slice(0, at, at + t.numel()).reshape(t.shape().vec()));
        at += t.numel();
      }
    }
  }

  nn::Module& model_;
  ProcessGroup& group_;
  DataParallelOptions o_;
  autograd::ObserveBackward observe_;
  std::vector<nn::NamedTensor> params_;
  std::vector<GradientBucket> buckets_;
  std::vector<Tensor> buffers_;
  std::unordered_map<TensorImpl*, std::pair<size_t, size_t>> slot_;  // parameter -> (bucket, slot)
  std::vector<size_t> pending_;
  std::vector<bool> ready_;
  std::vector<Work> works_;
  size_t next_bucket_ = 0;
  bool active_ = false;
  std::chrono::steady_clock::time_point pass_start_;
  ReductionTiming timing_;
};

}  // namespace vox::dist
