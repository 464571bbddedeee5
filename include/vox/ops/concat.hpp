#pragma once
// concat and split along any axis, on any device. split returns views; concat copies each part
// once (on a CUDA device through the backend's strided copy).
#include "vox/ops/autocast.hpp"
#include "vox/ops/fwd.hpp"
#include "vox/ops/map.hpp"

namespace vox {

inline Tensor concat(const std::vector<Tensor>& parts, int64_t axis) {
  VOX_CHECK(!parts.empty(), "concat", "needs at least one tensor");
  if (const auto c = detail::autocast_all("concat", parts))
    return detail::without_autocast([&] { return concat(*c, axis); });
  const Tensor& first = parts[0];
  axis = normalize_axis(axis, first.rank(), "concat");
  Shape shape = first.shape();
  shape[axis] = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Tensor& p = parts[i];
    VOX_CHECK(p.device() == first.device(), "concat", "part ", i, " is on ", p.device(), ", part 0 on ", first.device());
    VOX_CHECK(p.dtype() == first.dtype(), "concat", "part ", i, " has dtype ", p.dtype(), ", part 0 has ", first.dtype());
    bool same = p.rank() == first.rank();
    for (int64_t a = 0; same && a < p.rank(); ++a) same = a == axis || p.size(a) == first.size(a);
    VOX_CHECK(same, "concat", "part ", i, " has shape ", p.shape(), ", which differs from part 0 ", first.shape(),
              " off axis ", axis);
    shape[axis] += p.size(axis);
  }
  Tensor out = empty(shape, first.dtype(), first.device());
  std::vector<int64_t> offsets;
  int64_t offset = 0;
  for (const Tensor& p : parts) {
    offsets.push_back(offset);
    out.slice(axis, offset, offset + p.size(axis)).copy_from(p.detach());
    offset += p.size(axis);
  }
  std::vector<int64_t> sizes;
  for (const Tensor& p : parts) sizes.push_back(p.size(axis));
  autograd::record("ConcatBackward", out, parts, [axis, offsets, sizes](const Tensor& g) {
    std::vector<Tensor> grads;
    for (size_t i = 0; i < sizes.size(); ++i) grads.push_back(g.slice(axis, offsets[i], offsets[i] + sizes[i]));
    return grads;
  });
  return out;
}

inline std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis) {
  axis = normalize_axis(axis, x.rank(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    VOX_CHECK(s >= 0, "split", "negative size ", s);
    total += s;
  }
  VOX_CHECK(total == x.size(axis), "split", "sizes add up to ", total, " but axis ", axis, " of shape ", x.shape(), " has ",
            x.size(axis));
  std::vector<Tensor> parts;
  int64_t offset = 0;
  for (int64_t s : sizes) {
    parts.push_back(slice(x, axis, offset, offset + s));
    offset += s;
  }
  return parts;
}

}  // namespace vox
