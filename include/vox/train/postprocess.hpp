#pragma once
// Post-processing of label maps [D, H, W]:
//   - connected_components: labels 1..n of the connected regions of a mask (6- or 26-connected),
//     with their sizes;
//   - keep_largest_component: per class, every voxel outside the class's largest component
//     becomes background (MONAI's KeepLargestConnectedComponent with independent=True;
//     nnU-Net's "remove all but the largest component");
//   - remove_small_objects: per class, components smaller than `min_voxels` become background.
// Connectivity 26 by default (MONAI's default for 3-D is full connectivity).
#include <cstdint>
#include <vector>

#include "vox/core/tensor.hpp"

namespace vox::postprocess {

struct Components {
  std::vector<int32_t> id;     // per voxel: 0 outside the mask, else 1..count
  std::vector<int64_t> sizes;  // sizes[c - 1] of component c
};

inline Components connected_components(const std::vector<uint8_t>& mask, int64_t nx, int64_t ny, int64_t nz, int connectivity = 26) {
  VOX_CHECK(connectivity == 6 || connectivity == 26, "connected_components", "connectivity must be 6 or 26, got ", connectivity);
  VOX_CHECK(static_cast<int64_t>(mask.size()) == nx * ny * nz, "connected_components", "mask of ", mask.size(), " voxels is not ", nx,
            "x", ny, "x", nz);
  Components c;
  c.id.assign(mask.size(), 0);
  std::vector<int64_t> stack;
  for (int64_t start = 0; start < static_cast<int64_t>(mask.size()); ++start) {
    if (!mask[static_cast<size_t>(start)] || c.id[static_cast<size_t>(start)]) continue;
    const int32_t label = static_cast<int32_t>(c.sizes.size() + 1);
    int64_t size = 0;
    stack.push_back(start);
    c.id[static_cast<size_t>(start)] = label;
    while (!stack.empty()) {
      const int64_t v = stack.back();
      stack.pop_back();
      ++size;
      const int64_t i = v % nx, j = (v / nx) % ny, k = v / (nx * ny);
      for (int64_t dk = -1; dk <= 1; ++dk)
        for (int64_t dj = -1; dj <= 1; ++dj)
          for (int64_t di = -1; di <= 1; ++di) {
            const int64_t steps = (di != 0) + (dj != 0) + (dk != 0);
            if (steps == 0 || (connectivity == 6 && steps > 1)) continue;
            const int64_t x = i + di, y = j + dj, z = k + dk;
            if (x < 0 || y < 0 || z < 0 || x >= nx || y >= ny || z >= nz) continue;
            const int64_t w = (z * ny + y) * nx + x;
            if (mask[static_cast<size_t>(w)] && !c.id[static_cast<size_t>(w)]) {
              c.id[static_cast<size_t>(w)] = label;
              stack.push_back(w);
            }
          }
    }
    c.sizes.push_back(size);
  }
  return c;
}

namespace detail {
// Applies keep(class, component size, largest size of the class) to every foreground voxel.
template <class Keep>
Tensor filter_components(const Tensor& labels, int connectivity, Keep keep) {
  VOX_CHECK(labels.rank() == 3, "postprocess", "label maps must be [D, H, W], got ", labels.shape());
  const int64_t nz = labels.size(0), ny = labels.size(1), nx = labels.size(2);
  std::vector<int64_t> v = labels.to_vector<int64_t>();
  int64_t top = 0;
  for (int64_t x : v) top = std::max(top, x);
  for (int64_t c = 1; c <= top; ++c) {
    std::vector<uint8_t> mask(v.size());
    for (size_t i = 0; i < v.size(); ++i) mask[i] = v[i] == c;
    const Components comp = connected_components(mask, nx, ny, nz, connectivity);
    if (comp.sizes.empty()) continue;
    const int64_t largest = *std::max_element(comp.sizes.begin(), comp.sizes.end());
    int32_t largest_id = 0;  // the first component of the largest size, so ties keep one
    for (size_t s = 0; s < comp.sizes.size(); ++s)
      if (comp.sizes[s] == largest) {
        largest_id = static_cast<int32_t>(s + 1);
        break;
      }
    for (size_t i = 0; i < v.size(); ++i)
      if (comp.id[i] && !keep(comp.id[i], comp.sizes[static_cast<size_t>(comp.id[i] - 1)], largest_id)) v[i] = 0;
  }
  Tensor out = empty(labels.shape(), DType::i64);
  std::copy(v.begin(), v.end(), out.data<int64_t>());
  return out.to(labels.dtype());
}
}  // namespace detail

inline Tensor keep_largest_component(const Tensor& labels, int connectivity = 26) {
  return detail::filter_components(labels, connectivity, [](int32_t id, int64_t, int32_t largest_id) { return id == largest_id; });
}

inline Tensor remove_small_objects(const Tensor& labels, int64_t min_voxels, int connectivity = 26) {
  VOX_CHECK(min_voxels >= 0, "remove_small_objects", "min_voxels must not be negative");
  return detail::filter_components(labels, connectivity, [&](int32_t, int64_t size, int32_t) { return size >= min_voxels; });
}

}  // namespace vox::postprocess
