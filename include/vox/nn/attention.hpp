#pragma once
// Attention layers.
//
// MultiheadSelfAttention: torch.nn.MultiheadAttention (batch_first, self-attention) with its
// parameter names (in_proj_weight [3E, E], in_proj_bias [3E], out_proj.weight, out_proj.bias).
// It takes tokens [N, L, E], or a channels-last volume [N, D, H, W, E] whose voxels are the
// tokens: channels-last makes that a free reshape, and the output has the input's shape.
//
// AttentionGate<D>: the additive attention gate of Attention U-Net (Oktay et al. 2018), laid out
// as MONAI's AttentionBlock (W_g, W_x: 1x1 conv + batch norm; psi: 1x1 conv to one channel +
// batch norm + sigmoid). It scales the skip features x by psi(relu(W_g g + W_x x)).
#include <cmath>

#include "vox/nn/layers.hpp"

namespace vox::nn {

class MultiheadSelfAttention : public Module {
 public:
  MultiheadSelfAttention(int64_t embed_dim, int64_t num_heads, double dropout = 0.0, bool bias = true, Generator* gen = nullptr)
      : embed_dim_(embed_dim), heads_(num_heads), dropout_(dropout), out_proj_(embed_dim, embed_dim, bias, gen) {
    VOX_CHECK(embed_dim >= 1 && num_heads >= 1 && embed_dim % num_heads == 0, "nn::MultiheadSelfAttention", "embed_dim ",
              embed_dim, " must be divisible by num_heads ", num_heads);
    VOX_CHECK(dropout >= 0 && dropout < 1, "nn::MultiheadSelfAttention", "dropout ", dropout, " is outside [0, 1)");
    in_proj_weight_ = &register_parameter("in_proj_weight", init::xavier_uniform({3 * embed_dim, embed_dim}, embed_dim, 3 * embed_dim, gen));
    if (bias) in_proj_bias_ = &register_parameter("in_proj_bias", zeros({3 * embed_dim}));
    if (bias) out_proj_.bias().detach().fill(0.0);  // PyTorch zeroes the output projection's bias too
  }

  Tensor forward(const Tensor& x) {
    VOX_CHECK(x.rank() >= 3 && x.size(-1) == embed_dim_, "nn::MultiheadSelfAttention", "expects tokens [N, L, ", embed_dim_,
              "] or a channels-last volume [N, ..., ", embed_dim_, "], got ", x.shape());
    const Shape shape = x.shape();
    const int64_t n = shape[0], tokens = x.numel() / (n * embed_dim_), head_dim = embed_dim_ / heads_;
    const Tensor qkv = linear(reshape(x, {n, tokens, embed_dim_}), *in_proj_weight_, in_proj_bias_ ? *in_proj_bias_ : Tensor());
    // [N, L, 3E] -> three [N, heads, L, head_dim]
    const auto parts = split(reshape(qkv, {n, tokens, 3, heads_, head_dim}), {1, 1, 1}, 2);
    auto heads = [&](const Tensor& t) { return permute(reshape(t, {n, tokens, heads_, head_dim}), {0, 2, 1, 3}); };
    const Tensor q = heads(parts[0]), k = heads(parts[1]), v = heads(parts[2]);
    Tensor attended;
    if (dropout_ > 0 && is_training()) {  // dropout acts on the attention weights, as in PyTorch
      const Tensor scores = mul(matmul(q, transpose(k, -1, -2)), scalar(1.0 / std::sqrt(static_cast<double>(head_dim)), q.dtype()));
      attended = matmul(dropout(softmax(scores, -1), dropout_, true), v);
    } else {
      attended = scaled_dot_product_attention(q, k, v);
    }
    const Tensor merged = reshape(permute(attended, {0, 2, 1, 3}), {n, tokens, embed_dim_});
    return reshape(out_proj_.forward(merged), std::vector<int64_t>(shape.begin(), shape.end()));
  }
  void visit_children(const ChildVisitor& visit) override { visit("out_proj", out_proj_); }

 private:
  int64_t embed_dim_, heads_;
  double dropout_;
  Tensor* in_proj_weight_ = nullptr;
  Tensor* in_proj_bias_ = nullptr;
  Linear out_proj_;
};

namespace detail {
// A conv alone under the child name "conv" (MONAI's Convolution with conv_only = true).
template <int D>
class ConvOnly : public Module {
 public:
  ConvOnly(int64_t in, int64_t out, Generator* gen) : conv_(in, out, {1}, {}, true, gen) {}
  Tensor forward(const Tensor& x) const { return conv_.forward(x); }
  void visit_children(const ChildVisitor& visit) override { visit("conv", conv_); }

 private:
  Conv<D> conv_;
};
}  // namespace detail

template <int D>
class AttentionGate : public Module {
 public:
  // f_g: channels of the gating signal g; f_l: channels of the skip features x; f_int: the
  // intermediate channels.
  AttentionGate(int64_t f_int, int64_t f_g, int64_t f_l, Generator* gen = nullptr)
      : f_g_(f_g), f_l_(f_l),
        w_g_(detail::ConvOnly<D>(f_g, f_int, gen), BatchNorm<D>(f_int)),
        w_x_(detail::ConvOnly<D>(f_l, f_int, gen), BatchNorm<D>(f_int)),
        psi_(detail::ConvOnly<D>(f_int, 1, gen), BatchNorm<D>(1), Sigmoid()) {}

  Tensor forward(const Tensor& g, const Tensor& x) {
    VOX_CHECK(g.rank() == D + 2 && x.rank() == D + 2 && g.size(-1) == f_g_ && x.size(-1) == f_l_, "nn::AttentionGate",
              "expects g [N, ", D, " spatial axes, ", f_g_, "] and x [N, ", D, " spatial axes, ", f_l_, "], got ", g.shape(),
              " and ", x.shape());
    VOX_CHECK(std::equal(g.shape().begin(), g.shape().end() - 1, x.shape().begin()), "nn::AttentionGate",
              "g and x must share batch and spatial sizes, got ", g.shape(), " and ", x.shape());
    const Tensor psi = psi_.forward(relu(add(w_g_.forward(g), w_x_.forward(x))));
    return mul(x, psi);  // psi [N, ..., 1] broadcasts over x's channels
  }
  void visit_children(const ChildVisitor& visit) override {
    visit("W_g", w_g_);
    visit("W_x", w_x_);
    visit("psi", psi_);
  }

 private:
  int64_t f_g_, f_l_;
  Sequential<detail::ConvOnly<D>, BatchNorm<D>> w_g_, w_x_;
  Sequential<detail::ConvOnly<D>, BatchNorm<D>, Sigmoid> psi_;
};

}  // namespace vox::nn
