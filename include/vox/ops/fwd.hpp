#pragma once
// Declarations of every op, so that op headers can use each other (a backward often needs
// another op) whatever order they are included in. Each op's definition, with its backward,
// lives in the header named after it.
#include <optional>
#include <string>
#include <vector>

#include "vox/autograd/engine.hpp"
#include "vox/core/tensor.hpp"

namespace vox {

using Axes = std::vector<int64_t>;

// ---- views (ops/view.hpp)
Tensor permute(const Tensor& x, const Axes& order);
Tensor transpose(const Tensor& x, int64_t a, int64_t b);
Tensor reshape(const Tensor& x, const std::vector<int64_t>& shape);
Tensor flatten(const Tensor& x, int64_t start = 0, int64_t end = -1);
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end, int64_t step = 1);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor unsqueeze(const Tensor& x, int64_t axis);
Tensor squeeze(const Tensor& x, int64_t axis);
Tensor contiguous(const Tensor& x);
Tensor cast(const Tensor& x, DType dtype);
Tensor to_device(const Tensor& x, Device device);
// PyTorch's channels-first layout (N, C, D, H, W; conv weights Cout, Cin, kD, kH, kW) to vox's
// channels-last (N, D, H, W, C; weights Cout, kD, kH, kW, Cin), and back: axis 1 moves last.
Tensor from_channels_first(const Tensor& x);
Tensor to_channels_first(const Tensor& x);

// ---- elementwise (ops/elementwise.hpp, ops/unary.hpp)
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, double exponent);
Tensor neg(const Tensor& x);
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor square(const Tensor& x);
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
// A scalar of x's dtype when that holds the value exactly in kind, else f32 (PyTorch's rule for
// Python numbers).
Tensor scalar_like(double value, const Tensor& x);

// ---- reductions (ops/reduce.hpp); empty axes mean all axes
Tensor sum(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
Tensor max(const Tensor& x, const Axes& axes = {}, bool keepdim = false);  // ties share the gradient
Tensor min(const Tensor& x, const Axes& axes = {}, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor argmin(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor var(const Tensor& x, const Axes& axes = {}, double correction = 1.0, bool keepdim = false);
Tensor std_dev(const Tensor& x, const Axes& axes = {}, double correction = 1.0, bool keepdim = false);
// Sums x down to `shape` (the reverse of broadcasting); used for gradients of broadcast inputs.
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- linear algebra (ops/matmul.hpp)
Tensor matmul(const Tensor& a, const Tensor& b);
// x [..., in] times weight [out, in] (PyTorch's layout) plus bias [out].
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {});

// ---- convolution (ops/conv.hpp). Activations are channels-last: 2D [N, H, W, C], 3D
// [N, D, H, W, C]. Weights: conv [Cout, k..., Cin/groups]; transposed [Cin, k..., Cout/groups].
// A per-axis option given as one value applies to every spatial axis.
struct ConvOptions {
  std::vector<int64_t> stride{1};
  std::vector<int64_t> padding{0};
  std::vector<int64_t> dilation{1};
  int64_t groups = 1;
};
struct ConvTransposeOptions {
  std::vector<int64_t> stride{1};
  std::vector<int64_t> padding{0};
  std::vector<int64_t> output_padding{0};
  std::vector<int64_t> dilation{1};
  int64_t groups = 1;
};
Tensor conv(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, const ConvOptions& options = {});
Tensor conv_transpose(const Tensor& x, const Tensor& weight, const Tensor& bias = {},
                      const ConvTransposeOptions& options = {});

// ---- pooling and resampling, 3D channels-last (ops/pool.hpp, ops/upsample.hpp)
struct PoolOptions {
  std::vector<int64_t> kernel{2};
  std::vector<int64_t> stride{};  // empty: equal to kernel
  std::vector<int64_t> padding{0};
  bool count_include_pad = true;  // average pooling only
};
Tensor max_pool3d(const Tensor& x, const PoolOptions& options);
Tensor avg_pool3d(const Tensor& x, const PoolOptions& options);
Tensor adaptive_avg_pool3d(const Tensor& x, const std::vector<int64_t>& output_size);
Tensor upsample_nearest(const Tensor& x, const std::vector<int64_t>& output_size);
Tensor upsample_trilinear(const Tensor& x, const std::vector<int64_t>& output_size, bool align_corners);

// ---- normalisation (ops/norm.hpp); channels are the last axis
// Train mode normalises with batch statistics and updates the running ones in place
// (momentum as PyTorch: new = (1 - m) * old + m * batch, unbiased batch variance).
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum = 0.1, double eps = 1e-5);
Tensor instance_norm(const Tensor& x, const Tensor& weight = {}, const Tensor& bias = {}, double eps = 1e-5);
Tensor instance_norm_prelu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& slope, double eps = 1e-5);
Tensor instance_norm_prelu_add(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& slope, const Tensor& residual,
                              double eps = 1e-5);
Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight = {}, const Tensor& bias = {},
                  double eps = 1e-5);
// Normalises over the last `normalized_axes` axes; weight and bias have those axes' shape.
Tensor layer_norm(const Tensor& x, int64_t normalized_axes, const Tensor& weight = {}, const Tensor& bias = {},
                  double eps = 1e-5);

// ---- activations (ops/activation.hpp, ops/softmax.hpp, ops/dropout.hpp)
Tensor relu(const Tensor& x);
Tensor leaky_relu(const Tensor& x, double negative_slope = 0.01);
Tensor prelu(const Tensor& x, const Tensor& weight);  // weight: [1] or [C], C the last axis
enum class GeluApproximation { none, tanh };
Tensor gelu(const Tensor& x, GeluApproximation approximation = GeluApproximation::none);
Tensor softmax(const Tensor& x, int64_t axis);
Tensor log_softmax(const Tensor& x, int64_t axis);
class Generator;
Tensor dropout(const Tensor& x, double p, bool training, Generator* generator = nullptr);

// ---- assembly (ops/concat.hpp, ops/pad.hpp, ops/one_hot.hpp)
Tensor concat(const std::vector<Tensor>& parts, int64_t axis);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis);
enum class PadMode { constant, reflect, replicate };
// pads[i] = {before, after} for axis i, exactly one pair per axis, so that channels-last callers
// say which axes they mean.
Tensor pad(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& pads, PadMode mode = PadMode::constant,
           double value = 0.0);
Tensor flip(const Tensor& x, const Axes& axes);
// Integer labels [...] to [..., classes] (channels-last), in dtype.
Tensor one_hot(const Tensor& labels, int64_t classes, DType dtype = DType::f32);

// ---- losses (ops/loss.hpp)
enum class Reduction { none, mean, sum };
struct CrossEntropyOptions {
  Tensor weight;               // [C], optional
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  Reduction reduction = Reduction::mean;
};
// logits [..., C] (classes last), target integer class indices [...].
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& options = {});
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, const Tensor& weight = {},
                                        const Tensor& pos_weight = {}, Reduction reduction = Reduction::mean);

// ---- attention (ops/attention.hpp)
// q [..., L, E], k [..., S, E], v [..., S, Ev]. mask broadcast to [..., L, S]: bool (true =
// attend) or floating (added to the scores). scale defaults to 1/sqrt(E).
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask = {},
                                    std::optional<double> scale = std::nullopt);

// ---- operators
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& x) { return neg(x); }
inline Tensor operator+(const Tensor& a, double b) { return add(a, scalar_like(b, a)); }
inline Tensor operator-(const Tensor& a, double b) { return sub(a, scalar_like(b, a)); }
inline Tensor operator*(const Tensor& a, double b) { return mul(a, scalar_like(b, a)); }
inline Tensor operator/(const Tensor& a, double b) { return div(a, scalar_like(b, a)); }
inline Tensor operator+(double a, const Tensor& b) { return add(scalar_like(a, b), b); }
inline Tensor operator-(double a, const Tensor& b) { return sub(scalar_like(a, b), b); }
inline Tensor operator*(double a, const Tensor& b) { return mul(scalar_like(a, b), b); }
inline Tensor operator/(double a, const Tensor& b) { return div(scalar_like(a, b), b); }

}  // namespace vox
