#pragma once
// A process group: the ranks of one job and the collectives between them (allreduce, broadcast,
// allgather, barrier) on contiguous tensors, in place. Collectives are asynchronous: each call
// queues one and returns a Work to wait on, and every rank must call the same collectives in the
// same order (what the reducer and the trainer guarantee). They run one at a time, in that order.
//
// Every collective has a deadline (10 minutes by default). A collective still unfinished at its
// deadline means that a peer died or hangs: the watchdog prints which rank waited, on which
// collective (kind, sequence number, label, size) and this rank's last collectives, and ends the
// process with status 3, which ends the job under mpirun or srun. A program compiled without
// MPI, or started without a launcher, has a world of one (SingleProcessGroup).
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "vox/core/tensor.hpp"

namespace vox::dist {

enum class ReduceOp { sum, max, min };
enum class CollectiveKind { allreduce, broadcast, allgather, barrier };

inline const char* collective_name(CollectiveKind k) {
  switch (k) {
    case CollectiveKind::allreduce: return "allreduce";
    case CollectiveKind::broadcast: return "broadcast";
    case CollectiveKind::allgather: return "allgather";
    case CollectiveKind::barrier: return "barrier";
  }
  return "?";
}

// One collective as queued: `tensor` is reduced or broadcast in place; allgather writes
// `output` ([world size, tensor's shape...]).
struct Collective {
  CollectiveKind kind = CollectiveKind::barrier;
  Tensor tensor, output;
  ReduceOp op = ReduceOp::sum;
  int root = 0;
  std::string label;
  uint64_t sequence = 0;  // 1, 2, ... in the order this rank called them

  size_t bytes() const { return tensor.defined() ? static_cast<size_t>(tensor.numel()) * tensor.element_size() : 0; }
  std::string describe() const {
    std::ostringstream out;
    out << collective_name(kind) << " #" << sequence;
    if (!label.empty()) out << " (" << label << ")";
    if (tensor.defined()) out << " of " << tensor.numel() << " " << dtype_name(tensor.dtype()) << " (" << bytes() << " bytes)";
    return out.str();
  }
};

// What a rank remembers of a collective, for the watchdog's message and for instrumentation.
struct CollectiveRecord {
  std::string description, label;
  CollectiveKind kind = CollectiveKind::barrier;
  uint64_t sequence = 0;
  size_t bytes = 0;
  std::chrono::steady_clock::time_point queued, started, finished;
  bool done = false;
};

namespace detail {
struct WorkState {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;
  CollectiveRecord record;
};
}  // namespace detail

// The handle of a queued collective.
class Work {
 public:
  Work() = default;
  explicit Work(std::shared_ptr<detail::WorkState> s) : state_(std::move(s)) {}
  bool valid() const { return state_ != nullptr; }
  // Blocks until the collective has finished on this rank; rethrows its error.
  void wait() const {
    std::unique_lock<std::mutex> lock(state_->mutex);
    state_->cv.wait(lock, [&] { return state_->done; });
    if (state_->error) std::rethrow_exception(state_->error);
  }
  // Its timing, once done.
  CollectiveRecord record() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->record;
  }

 private:
  std::shared_ptr<detail::WorkState> state_;
};

struct ProcessGroupOptions {
  std::chrono::milliseconds deadline{10 * 60 * 1000};  // per collective, from its start
  size_t history = 16;                                  // collectives kept for the watchdog's message
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }  // ranks on this machine
  virtual std::string backend() const = 0;
  // Where its tensors must be.
  virtual Device device() const { return Device::cpu(); }

  Work allreduce(const Tensor& t, ReduceOp op = ReduceOp::sum, std::string label = {}) {
    return submit({CollectiveKind::allreduce, t, {}, op, 0, std::move(label)});
  }
  Work broadcast(const Tensor& t, int root = 0, std::string label = {}) {
    VOX_CHECK(root >= 0 && root < size_, "broadcast", "root ", root, " is not a rank of a world of ", size_);
    return submit({CollectiveKind::broadcast, t, {}, ReduceOp::sum, root, std::move(label)});
  }
  // Returns [world size, input's shape...], rank r's input at index r.
  Tensor allgather(const Tensor& input, std::string label = {}) {
    Shape shape{size_};
    for (int64_t d : input.shape()) shape.push_back(d);
    Tensor output = empty(shape, input.dtype(), input.device());
    submit({CollectiveKind::allgather, input, output, ReduceOp::sum, 0, std::move(label)}).wait();
    return output;
  }
  void barrier(std::string label = {}) { submit({CollectiveKind::barrier, {}, {}, ReduceOp::sum, 0, std::move(label)}).wait(); }

  // The last collectives of this rank, oldest first.
  std::vector<CollectiveRecord> history() const {
    std::lock_guard<std::mutex> lock(history_mutex_);
    return {history_.begin(), history_.end()};
  }
  uint64_t collectives_called() const { return sequence_; }
  const ProcessGroupOptions& options() const { return options_; }

  // What happens at a missed deadline (tests replace the default: print and exit with status 3).
  void set_deadline_handler(std::function<void(const std::string& message)> handler) { on_deadline_ = std::move(handler); }

 protected:
  ProcessGroup(int rank, int size, int local_rank, ProcessGroupOptions options)
      : rank_(rank), size_(size), local_rank_(local_rank), options_(options) {}

  // Queues (or runs) one collective; `state` is completed by finish().
  virtual void enqueue(Collective c, std::shared_ptr<detail::WorkState> state) = 0;

  void finish(detail::WorkState& state, std::exception_ptr error = nullptr) {
    {
      std::lock_guard<std::mutex> lock(state.mutex);
      state.record.finished = std::chrono::steady_clock::now();
      state.record.done = true;
      state.done = true;
      state.error = error;
      remember(state.record);
    }
    state.cv.notify_all();
  }

  // The watchdog's message for a collective past its deadline.
  std::string deadline_message(const Collective& c, double waited_seconds) const {
    std::ostringstream out;
    out << "vox dist: rank " << rank_ << " of " << size_ << " (" << backend() << "): " << c.describe() << " did not finish within "
        << waited_seconds << " s (the deadline); a peer rank died or hangs. The last collectives on this rank:";
    for (const CollectiveRecord& r : history())
      out << "\n  " << r.description << ": "
          << (r.done ? "done in " + std::to_string(std::chrono::duration<double, std::milli>(r.finished - r.started).count()) + " ms" : "unfinished");
    out << "\n  " << c.describe() << ": unfinished";
    return out.str();
  }
  void missed_deadline(const Collective& c, double waited_seconds) {
    const std::string message = deadline_message(c, waited_seconds);
    if (on_deadline_) return on_deadline_(message);
    std::fprintf(stderr, "%s\nvox dist: aborting the job.\n", message.c_str());
    std::fflush(stderr);
    std::fflush(stdout);
    abort_job(3);
  }
  // Ends this process, and the job with it (MPI's group calls MPI_Abort, which mpirun reports
  // as the job's failure even where it was told to survive a lost rank).
  virtual void abort_job(int status) { std::_Exit(status); }

  static void check_tensor(const Collective& c, Device device) {
    const char* op = collective_name(c.kind);
    if (c.kind == CollectiveKind::barrier) return;
    VOX_CHECK(c.tensor.defined(), op, "needs a tensor");
    VOX_CHECK(c.tensor.is_contiguous(), op, "needs a contiguous tensor, got strides ", c.tensor.strides().str(), " for shape ", c.tensor.shape());
    VOX_CHECK(c.tensor.device() == device, op, "this process group carries tensors on ", device, ", got one on ", c.tensor.device());
  }

  int rank_, size_, local_rank_, local_size_ = 1;
  ProcessGroupOptions options_;

 private:
  Work submit(Collective c) {
    check_tensor(c, device());
    if (c.kind == CollectiveKind::allgather) VOX_CHECK(c.output.is_contiguous(), "allgather", "needs a contiguous output");
    c.sequence = ++sequence_;
    auto state = std::make_shared<detail::WorkState>();
    state->record = {c.describe(), c.label, c.kind, c.sequence, c.bytes(), std::chrono::steady_clock::now(), {}, {}, false};
    enqueue(std::move(c), state);
    return Work(state);
  }
  void remember(const CollectiveRecord& r) const {
    std::lock_guard<std::mutex> lock(history_mutex_);
    history_.push_back(r);
    while (history_.size() > options_.history) history_.pop_front();
  }

  uint64_t sequence_ = 0;
  mutable std::mutex history_mutex_;
  mutable std::deque<CollectiveRecord> history_;
  std::function<void(const std::string&)> on_deadline_;
};

// A world of one: every collective is the identity, finished when called.
class SingleProcessGroup final : public ProcessGroup {
 public:
  explicit SingleProcessGroup(Device device = Device::cpu(), ProcessGroupOptions options = {})
      : ProcessGroup(0, 1, 0, options), device_(device) {}
  std::string backend() const override { return "single process"; }
  Device device() const override { return device_; }

 protected:
  void enqueue(Collective c, std::shared_ptr<detail::WorkState> state) override {
    state->record.started = std::chrono::steady_clock::now();
    if (c.kind == CollectiveKind::allgather) c.output.copy_from(c.tensor.reshape(c.output.shape().vec()));
    finish(*state);
  }

 private:
  Device device_;
};

// Runs the queued collectives one at a time, in order, on a communication thread that starts
// each with start() and polls it with test() until it finishes or its deadline passes. MPI's
// and NCCL's groups derive from it.
class ThreadedProcessGroup : public ProcessGroup {
 protected:
  ThreadedProcessGroup(int rank, int size, int local_rank, ProcessGroupOptions options) : ProcessGroup(rank, size, local_rank, options) {}
  ~ThreadedProcessGroup() override { stop(); }

  // A started collective: test() returns true once it has finished on this rank.
  struct InFlight {
    virtual ~InFlight() = default;
    virtual bool test() = 0;
  };
  virtual std::unique_ptr<InFlight> start(Collective& c) = 0;

  void launch_thread() {
    thread_ = std::thread([this] { run(); });
  }
  // Drains the queue and joins the thread (derived destructors call it before they tear down).
  void stop() {
    {
      std::lock_guard<std::mutex> lock(queue_mutex_);
      if (!thread_.joinable()) return;
      stopping_ = true;
    }
    queue_cv_.notify_all();
    thread_.join();
  }

  void enqueue(Collective c, std::shared_ptr<detail::WorkState> state) override {
    {
      std::lock_guard<std::mutex> lock(queue_mutex_);
      VOX_CHECK(thread_.joinable() && !stopping_, collective_name(c.kind), "the process group is shut down");
      queue_.push_back({std::move(c), std::move(state)});
    }
    queue_cv_.notify_one();
  }

 private:
  struct Queued {
    Collective collective;
    std::shared_ptr<detail::WorkState> state;
  };

  void run() {
    for (;;) {
      Queued q;
      {
        std::unique_lock<std::mutex> lock(queue_mutex_);
        queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and drained
        q = std::move(queue_.front());
        queue_.pop_front();
      }
      execute(q);
    }
  }

  void execute(Queued& q) {
    const auto started = std::chrono::steady_clock::now();
    {
      std::lock_guard<std::mutex> lock(q.state->mutex);
      q.state->record.started = started;
    }
    try {
      std::unique_ptr<InFlight> flight = start(q.collective);
      // Poll: MPI progresses non-blocking collectives only inside its calls. A short sleep
      // between tests leaves the cores to the backward pass this collective overlaps.
      for (int spins = 0; !flight->test(); ++spins) {
        const auto waited = std::chrono::steady_clock::now() - started;
        if (waited > options_.deadline) {
          const double seconds = std::chrono::duration<double>(waited).count();
          missed_deadline(q.collective, seconds);  // by default, does not return
          return finish(*q.state, std::make_exception_ptr(Error(deadline_message(q.collective, seconds))));
        }
        if (spins > 64) std::this_thread::sleep_for(std::chrono::microseconds(spins > 4096 ? 1000 : 50));
      }
      finish(*q.state);
    } catch (const std::exception& e) {
      finish(*q.state, std::make_exception_ptr(Error(vox::detail::concat("rank ", rank_, ": ", q.collective.describe(), " failed: ", e.what()))));
    }
  }

  std::thread thread_;
  std::mutex queue_mutex_;
  std::condition_variable queue_cv_;
  std::deque<Queued> queue_;
  bool stopping_ = false;
};

}  // namespace vox::dist
