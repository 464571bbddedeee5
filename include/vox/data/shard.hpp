#pragma once
// The distributed sampler: one rank's share of every batch. Rank r of W takes items r, r + W,
// r + 2W, ... of each batch (PyTorch's DistributedSampler strides the same way), so the shares
// are disjoint, together they are exactly the batches one process would draw, and each is a
// pure function of (seed, epoch, rank): runs are reproducible, and a run resumed with another
// number of ranks goes on with the same global batches.
#include <vector>

#include "vox/data/dataset.hpp"

namespace vox::data {

class ShardedBatches final : public BatchSource {
 public:
  ShardedBatches(const BatchSource& source, int rank, int world_size) : source_(source), rank_(rank), world_(world_size) {
    VOX_CHECK(world_ >= 1 && rank_ >= 0 && rank_ < world_, "ShardedBatches", "rank ", rank_, " is not in a world of ", world_);
    VOX_CHECK(source_.batch_size() % world_ == 0, "ShardedBatches", "a batch of ", source_.batch_size(), " does not divide among ", world_,
              " ranks; choose a batch size that is a multiple of the number of ranks");
  }
  int64_t batch_size() const override { return source_.batch_size() / world_; }
  // The global positions of this rank's items.
  std::vector<int64_t> share() const {
    std::vector<int64_t> out;
    for (int64_t item = rank_; item < source_.batch_size(); item += world_) out.push_back(item);
    return out;
  }
  Batch items(int64_t epoch, int64_t index, const std::vector<int64_t>& items) const override {
    const std::vector<int64_t> mine = share();
    std::vector<int64_t> global;
    for (int64_t item : items) {
      VOX_CHECK(item >= 0 && item < batch_size(), "ShardedBatches", "item ", item, " of a share of ", batch_size());
      global.push_back(mine[static_cast<size_t>(item)]);
    }
    return source_.items(epoch, index, global);
  }

 private:
  const BatchSource& source_;
  int rank_, world_;
};

}  // namespace vox::data
