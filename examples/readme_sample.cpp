// The README's code sample, compiled with the examples so that it never goes stale: build a
// network from typed layers, train it a few steps with Adam, and save its weights. Its exit
// status says whether it learned (CTest readme_sample_runs).
#include <cstdio>

#include <vox/io/safetensors.hpp>
#include <vox/vox.hpp>

using namespace vox;

int main() {
  // conv -> instance norm -> PReLU -> 1x1x1 conv to two classes; channels last [N, D, H, W, C]
  nn::Sequential<nn::Conv<3>, nn::InstanceNorm<3>, nn::PReLU, nn::Conv<3>> net(
      nn::Conv<3>(1, 8, {3}, {.padding = {1}}), nn::InstanceNorm<3>(8), nn::PReLU(), nn::Conv<3>(8, 2, {1}));
  optim::Adam adam(net.parameters(), {.lr = 1e-2});

  const Tensor image = rand({2, 16, 16, 16, 1});
  const Tensor label = gt(image, scalar(0.5)).to(DType::i64).squeeze(-1);  // [2, 16, 16, 16]
  double first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    Tensor loss = cross_entropy(net.forward(image), label);  // classes on the last axis
    loss.backward();
    adam.step();
    adam.zero_grad();
    (step == 0 ? first : last) = loss.item<double>();
  }
  io::save_safetensors("readme_sample.safetensors", net.state_dict());  // PyTorch names and layout
  std::printf("loss %.3f -> %.3f\n", first, last);
  return last < 0.6 * first ? 0 : 1;  // it learns (0.737 -> 0.355 when measured), or the test fails
}
