// The smallest embedding of vox: a convolution through the public header, checked by its output.
#include <cstdio>

#include <vox/vox.hpp>

int main() {
  using namespace vox;
  nn::Conv<3> conv(1, 2, {3}, {.padding = {1}});
  const Tensor y = conv.forward(ones({1, 4, 4, 4, 1}));
  std::printf("consumer: output shape [%lld, %lld, %lld, %lld, %lld]\n", static_cast<long long>(y.size(0)),
              static_cast<long long>(y.size(1)), static_cast<long long>(y.size(2)), static_cast<long long>(y.size(3)),
              static_cast<long long>(y.size(4)));
  return y.shape() == Shape{1, 4, 4, 4, 2} ? 0 : 1;
}
