#pragma once
// Batched matrix product with NumPy/PyTorch semantics (1-D operands, broadcast batch axes) and
// linear layers. Each matrix product runs on the packed-panel GEMM; batches run in parallel.
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/gemm_bf16.hpp"
#include "vox/ops/bf16_kernels.hpp"
#include "vox/ops/autocast.hpp"
#include "vox/ops/fwd.hpp"
#include "vox/ops/map.hpp"

namespace vox {

namespace detail {
// a [..., M, K] x b [..., K, N], both at least 2-D, batch axes broadcast.
inline Tensor matmul_2d_or_more(const Tensor& a, const Tensor& b) {
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  VOX_CHECK(b.size(-2) == K, "matmul", "inner sizes differ: shapes ", a.shape(), " and ", b.shape());
  Shape batch_a = a.shape(), batch_b = b.shape();
  batch_a.resize(a.rank() - 2);
  batch_b.resize(b.rank() - 2);
  const Shape batch = broadcast_shapes(batch_a, batch_b, "matmul");
  Shape full_a = batch, full_b = batch, out_shape = batch;
  full_a.push_back(M), full_a.push_back(K);
  full_b.push_back(K), full_b.push_back(N);
  out_shape.push_back(M), out_shape.push_back(N);
  const DType t = a.dtype();
  const int64_t batches = numel_of(batch);
  if (a.device().is_cuda()) {
    VOX_CHECK(b.device() == a.device(), "matmul", "operands are on ", a.device(), " and ", b.device());
    // A batch axis that only one operand has is read with batch stride 0, not copied.
    const bool a_shared = numel_of(batch_a) == 1, b_shared = numel_of(batch_b) == 1;
    const Tensor ac = a_shared ? a.detach().contiguous() : a.detach().expand(full_a).contiguous();
    const Tensor bc = b_shared ? b.detach().contiguous() : b.detach().expand(full_b).contiguous();
    Tensor out = empty(out_shape, t, a.device());
    cuda_backend("matmul").matmul(t, batches, M, N, K, ac.raw_data(), a_shared ? 0 : M * K, bc.raw_data(), b_shared ? 0 : K * N,
                                  out.raw_data(), a.device().index);
    return out;
  }
  const Tensor ac = a.detach().expand(full_a).contiguous(), bc = b.detach().expand(full_b).contiguous();
  Tensor out = empty(out_shape, t);
  if (t == DType::bf16) {  // the bf16 GEMM: f32 sums, rounded once
    note_bf16_path();
    const uint16_t* pa = bf16_bits(ac);
    const uint16_t* pb = bf16_bits(bc);
    uint16_t* po = bf16_bits(out);
    // rows [m0, m0 + rows) of product i
    auto product = [&](int64_t i, int64_t m0, int64_t rows, std::vector<uint16_t>& scratch, std::vector<float>& result) {
      result.resize(static_cast<size_t>(rows * N));
      kernels::cpu::gemm_bf16(rows, N, K, pa + (i * M + m0) * K, K, pb + i * K * N, N, result.data(), N, false, scratch);
      uint16_t* dst = po + (i * M + m0) * N;
      for (int64_t e = 0; e < rows * N; ++e) dst[e] = kernels::float_to_bf16_bits(result[static_cast<size_t>(e)]);
    };
    if (batches == 1) {  // split rows across threads
      parallel_for(0, M, 48, [&](int64_t mb, int64_t me) {
        std::vector<uint16_t> scratch;
        std::vector<float> result;
        product(0, mb, me - mb, scratch, result);
      });
    } else {
      parallel_for(0, batches, 1, [&](int64_t bb, int64_t be) {
        std::vector<uint16_t> scratch;
        std::vector<float> result;
        for (int64_t i = bb; i < be; ++i) product(i, 0, M, scratch, result);
      });
    }
    return out;
  }
  dispatch_float(t, "matmul", [&]<class T>() {
    const T* pa = ac.data<T>();
    const T* pb = bc.data<T>();
    T* po = out.data<T>();
    if (batches == 1) {  // split rows across threads
      parallel_for(0, M, 48, [&](int64_t mb, int64_t me) {
        std::vector<T> scratch;
        kernels::cpu::gemm<T>(me - mb, N, K, pa + mb * K, K, pb, N, po + mb * N, N, false, scratch);
      });
    } else {
      parallel_for(0, batches, 1, [&](int64_t bb, int64_t be) {
        std::vector<T> scratch;
        for (int64_t i = bb; i < be; ++i)
          kernels::cpu::gemm<T>(M, N, K, pa + i * M * K, K, pb + i * K * N, N, po + i * M * N, N, false, scratch);
      });
    }
  });
  return out;
}
}  // namespace detail

inline Tensor matmul(const Tensor& a, const Tensor& b) {
  if (const auto c = detail::autocast_inputs("matmul", {&a, &b}))
    return detail::without_autocast([&] { return matmul((*c)[0], (*c)[1]); });
  VOX_CHECK(a.device() == b.device(), "matmul", "operands are on ", a.device(), " and ", b.device());
  VOX_CHECK(a.rank() >= 1 && b.rank() >= 1, "matmul", "operands must have rank >= 1, got shapes ", a.shape(), " and ",
            b.shape());
  VOX_CHECK(a.dtype() == b.dtype(), "matmul", "dtypes differ: ", a.dtype(), " and ", b.dtype(), " (shapes ", a.shape(),
            " and ", b.shape(), ")");
  VOX_CHECK(is_floating(a.dtype()), "matmul", "needs floating operands, got ", a.dtype());
  // 16-bit operands run natively (cuBLAS with f32 accumulation on CUDA, the bf16 GEMM on the
  // CPU), except f16 on the CPU, which is computed in f32 and stored back
  if (a.dtype() == DType::f16 && !a.device().is_cuda())
    return cast(matmul(cast(a, DType::f32), cast(b, DType::f32)), a.dtype());
  // 1-D operands become matrices, and the added axis is dropped from the result.
  const Tensor a2 = a.rank() == 1 ? unsqueeze(a, 0) : a;
  const Tensor b2 = b.rank() == 1 ? unsqueeze(b, 1) : b;
  Tensor out = detail::matmul_2d_or_more(a2, b2);
  autograd::record("MatmulBackward", out, {a2, b2}, [a2 = a2.detach(), b2 = b2.detach(),
                                                      need_a = a2.requires_grad(), need_b = b2.requires_grad()](const Tensor& g) {
    Tensor ga, gb;
    if (need_a) ga = sum_to(detail::matmul_2d_or_more(g, b2.transpose(-1, -2)), a2.shape());
    if (need_b) gb = sum_to(detail::matmul_2d_or_more(a2.transpose(-1, -2), g), b2.shape());
    return std::vector<Tensor>{ga, gb};
  });
  if (a.rank() == 1) out = squeeze(out, -2);
  if (b.rank() == 1) out = squeeze(out, -1);
  return out;
}

inline Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (const auto c = detail::autocast_inputs("linear", {&x, &weight, &bias}))
    return detail::without_autocast([&] { return linear((*c)[0], (*c)[1], (*c)[2]); });
  VOX_CHECK(weight.rank() == 2, "linear", "weight must be [out, in], got shape ", weight.shape());
  VOX_CHECK(x.rank() >= 1 && x.size(-1) == weight.size(1), "linear", "input shape ", x.shape(),
            " does not end in the weight's in-features ", weight.size(1), " (weight ", weight.shape(), ")");
  Tensor y = matmul(x, transpose(weight, 0, 1));
  if (bias.defined()) {
    VOX_CHECK(bias.rank() == 1 && bias.size(0) == weight.size(0), "linear", "bias shape ", bias.shape(),
              " does not match out-features ", weight.size(0));
    y = add(y, bias);
  }
  return y;
}

}  // namespace vox
