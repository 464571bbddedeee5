#pragma once
// Lets a gradient reducer (vox/dist's DataParallel) watch backward passes on this thread: when
// the outermost pass begins, when a leaf holds its final gradient of the pass (every edge into
// it has been processed, inside a checkpointed block's nested pass too), and when the outermost
// pass ends, normally or by an exception. One observer per thread at a time.
#include "vox/core/tensor.hpp"

namespace vox::autograd {

class BackwardObserver {
 public:
  virtual ~BackwardObserver() = default;
  virtual void begin() = 0;
  // `leaf`'s .grad is final for this pass (it may be undefined where nothing flowed into it).
  virtual void leaf_ready(TensorImpl& leaf) = 0;
  // completed: false when the pass is left by an exception.
  virtual void end(bool completed) = 0;
};

namespace detail {
inline BackwardObserver*& observer_slot() {
  thread_local BackwardObserver* observer = nullptr;
  return observer;
}
inline int& backward_depth() {
  thread_local int depth = 0;
  return depth;
}
}  // namespace detail

inline BackwardObserver* backward_observer() { return detail::observer_slot(); }

// Installs `observer` on this thread for the guard's lifetime.
class ObserveBackward {
 public:
  explicit ObserveBackward(BackwardObserver& observer) : previous_(detail::observer_slot()) {
    VOX_CHECK(previous_ == nullptr, "ObserveBackward", "another observer already watches this thread's backward passes");
    detail::observer_slot() = &observer;
  }
  ~ObserveBackward() { detail::observer_slot() = previous_; }
  ObserveBackward(const ObserveBackward&) = delete;
  ObserveBackward& operator=(const ObserveBackward&) = delete;

 private:
  BackwardObserver* previous_;
};

// Suspends the observer (PyTorch DDP's no_sync: gradients accumulate locally).
class SuspendBackwardObserver {
 public:
  SuspendBackwardObserver() : saved_(detail::observer_slot()) { detail::observer_slot() = nullptr; }
  ~SuspendBackwardObserver() { detail::observer_slot() = saved_; }
  SuspendBackwardObserver(const SuspendBackwardObserver&) = delete;
  SuspendBackwardObserver& operator=(const SuspendBackwardObserver&) = delete;

 private:
  BackwardObserver* saved_;
};

// Brackets one backward pass: begin() and end() for the outermost only.
class ObservedPass {
 public:
  ObservedPass() : observer_(backward_observer()), outermost_(detail::backward_depth()++ == 0) {
    if (observer_ && outermost_) observer_->begin();
  }
  ~ObservedPass() {
    --detail::backward_depth();
    if (observer_ && outermost_ && !ended_) observer_->end(false);
  }
  void ready(TensorImpl& leaf) const {
    if (observer_) observer_->leaf_ready(leaf);
  }
  void finish() {
    ended_ = true;
    if (observer_ && outermost_) observer_->end(true);
  }
  ObservedPass(const ObservedPass&) = delete;
  ObservedPass& operator=(const ObservedPass&) = delete;

 private:
  BackwardObserver* observer_;
  bool outermost_, ended_ = false;
};

}  // namespace vox::autograd
