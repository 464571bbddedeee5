#pragma once
// Whether ops record onto the tape. Thread-local, like PyTorch's grad mode.

namespace vox::autograd {

inline bool& grad_mode_flag() {
  thread_local bool enabled = true;
  return enabled;
}
inline bool grad_enabled() { return grad_mode_flag(); }

// Scoped switch: ops inside do not record (inference, optimizer updates, backward itself).
class NoGradGuard {
 public:
  NoGradGuard() : previous_(grad_mode_flag()) { grad_mode_flag() = false; }
  ~NoGradGuard() { grad_mode_flag() = previous_; }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Scoped switch back on, e.g. for the recomputation inside a checkpointed block.
class EnableGradGuard {
 public:
  EnableGradGuard() : previous_(grad_mode_flag()) { grad_mode_flag() = true; }
  ~EnableGradGuard() { grad_mode_flag() = previous_; }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace vox

namespace vox {
using NoGradGuard = autograd::NoGradGuard;
}
