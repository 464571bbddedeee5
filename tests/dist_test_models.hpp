#pragma once
// Small models for the data-parallel tests.
#include <vox/vox.hpp>

namespace vox::test {

// conv -> ReLU -> conv, on [B, 6, 5, 4, C] volumes; an optional parameter that the forward never uses.
struct TwoConvNet : nn::Module {
  nn::Conv<3> conv1, conv2;
  nn::Linear unused{2, 2};
  bool with_unused;
  TwoConvNet(uint64_t seed, bool with_unused_parameter = false, int64_t width = 4)
      : conv1(2, width, {3, 3, 3}, {.padding = {1}}, true, generator(seed)),
        conv2(width, 3, {3, 3, 3}, {.padding = {1}}, true, generator(seed + 1)),
        with_unused(with_unused_parameter) {}
  void visit_children(const nn::ChildVisitor& visit) override {
    visit("conv1", conv1);
    visit("conv2", conv2);
    if (with_unused) visit("unused", unused);
  }
  Tensor forward(const Tensor& x) const { return conv2.forward(relu(conv1.forward(x))); }
  static Generator* generator(uint64_t seed) {
    static thread_local Generator g;
    g.manual_seed(seed);
    return &g;
  }
};

// A mean-squared loss against a fixed target: a sum over the batch, divided by its size, so
// that halves averaged over two ranks equal the whole batch.
inline Tensor batch_loss(const Tensor& y) { return mean(square(y), {}, false); }

// Item b of a deterministic batch of `n` inputs (the same on every rank).
inline Tensor batch_inputs(int64_t n, DType dtype, const std::vector<int64_t>& items) {
  Generator g(1234);
  const Tensor all = randn({n, 6, 5, 4, 2}, DType::f64, &g).to(dtype);
  std::vector<Tensor> picked;
  for (int64_t i : items) picked.push_back(all.slice(0, i, i + 1));
  return concat(picked, 0);
}

}  // namespace vox::test
