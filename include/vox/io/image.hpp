#pragma once
// Image: voxels with their place in the world.
//
// Conventions (stated once, used everywhere):
//   - voxels is [D, H, W] or [D, H, W, C] (channels last, as vox's networks take them): voxel
//     (i, j, k) of the file, channel c, is voxels[k][j][i][c]. i runs fastest in memory, as in
//     NIfTI and DICOM, so reading needs no transposition.
//   - spacing[a], origin and direction are in LPS+ millimetres (DICOM's and ITK's world: +x to
//     the patient's Left, +y Posterior, +z Superior). direction's column a is the unit vector
//     along voxel axis a (a = 0 for i, 1 for j, 2 for k).
//   - affine(Convention::ras) is the 4x4 NIfTI/nibabel/MONAI matrix (RAS+ world),
//     affine(Convention::lps) the ITK/DICOM one; both map (i, j, k, 1) to world millimetres.
//   - orientation codes are nibabel's: for each voxel axis i, j, k, the world direction it
//     points towards (R/L, A/P, S/I). An identity RAS affine is "RAS"; DICOM's usual axial
//     series is "LPS".
#include <array>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "vox/core/tensor.hpp"

namespace vox::io {

using Matrix3 = std::array<std::array<double, 3>, 3>;
using Affine = std::array<std::array<double, 4>, 4>;

enum class Convention { ras, lps };

inline Matrix3 identity3() { return {{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}}; }

struct Image {
  Tensor voxels;
  std::array<double, 3> spacing{1, 1, 1};
  std::array<double, 3> origin{0, 0, 0};
  Matrix3 direction = identity3();

  int64_t width() const { return voxels.size(2); }   // i
  int64_t height() const { return voxels.size(1); }  // j
  int64_t depth() const { return voxels.size(0); }   // k
  int64_t channels() const { return voxels.rank() == 4 ? voxels.size(3) : 1; }

  Affine affine(Convention c) const {
    const double flip = c == Convention::ras ? -1.0 : 1.0;  // LPS <-> RAS negates x and y
    Affine a{};
    for (int r = 0; r < 3; ++r) {
      const double s = r < 2 ? flip : 1.0;
      for (int col = 0; col < 3; ++col) a[r][col] = s * direction[r][col] * spacing[col];
      a[r][3] = s * origin[r];
    }
    a[3] = {0, 0, 0, 1};
    return a;
  }

  // Geometry from a 4x4 affine. Shear is not representable: the direction columns must be
  // orthogonal (within 1e-4 of their lengths), which every scanner geometry is.
  void set_affine(const Affine& a, Convention c) {
    const double flip = c == Convention::ras ? -1.0 : 1.0;
    for (int col = 0; col < 3; ++col) {
      double len = 0;
      for (int r = 0; r < 3; ++r) len += a[r][col] * a[r][col];
      len = std::sqrt(len);
      VOX_CHECK(len > 0 && std::isfinite(len), "Image::set_affine", "voxel axis ", col, " has zero or non-finite length");
      spacing[col] = len;
      for (int r = 0; r < 3; ++r) direction[r][col] = (r < 2 ? flip : 1.0) * a[r][col] / len;
    }
    for (int r = 0; r < 3; ++r) origin[r] = (r < 2 ? flip : 1.0) * a[r][3];
    for (int p = 0; p < 3; ++p)
      for (int q = p + 1; q < 3; ++q) {
        double dot = 0;
        for (int r = 0; r < 3; ++r) dot += direction[r][p] * direction[r][q];
        VOX_CHECK(std::abs(dot) < 1e-4, "Image::set_affine", "voxel axes ", p, " and ", q,
                  " are not orthogonal (cosine ", dot, "); sheared geometries are not supported");
      }
  }

  // nibabel's aff2axcodes: for each voxel axis, the RAS world axis it is most aligned with, and
  // the letter of the direction it increases towards.
  std::string orientation_code() const {
    static const char positive[3] = {'L', 'P', 'S'}, negative[3] = {'R', 'A', 'I'};  // LPS+ world
    std::string code;
    bool used[3] = {false, false, false};
    for (int col = 0; col < 3; ++col) {
      int best = -1;
      for (int r = 0; r < 3; ++r)
        if (!used[r] && (best < 0 || std::abs(direction[r][col]) > std::abs(direction[best][col]))) best = r;
      used[best] = true;
      code += direction[best][col] >= 0 ? positive[best] : negative[best];
    }
    return code;
  }
};

namespace detail {
// A contiguous copy of `t` with the axes flagged in `flip` reversed (floor 2: no ops needed).
inline Tensor flipped(const Tensor& t, const std::vector<bool>& flip) {
  const Tensor src = t.contiguous();
  Tensor out = empty(src.shape(), src.dtype());
  const int64_t rank = src.rank(), elem = static_cast<int64_t>(dtype_size(src.dtype()));
  const int64_t row = rank ? src.size(rank - 1) : 1, rows = row ? src.numel() / row : 0;
  const bool flip_last = rank && flip[static_cast<size_t>(rank - 1)];
  const auto* in = static_cast<const unsigned char*>(src.raw_data());
  auto* o = static_cast<unsigned char*>(out.raw_data());
  const Strides st = contiguous_strides(src.shape());
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rest = r, from = 0;
    for (int64_t a = rank - 2; a >= 0; --a) {  // the row's index along each leading axis
      const int64_t i = rest % src.size(a);
      rest /= src.size(a);
      from += (flip[static_cast<size_t>(a)] ? src.size(a) - 1 - i : i) * st[a];
    }
    if (!flip_last) {
      std::memcpy(o + r * row * elem, in + from * elem, static_cast<size_t>(row * elem));
    } else {
      for (int64_t x = 0; x < row; ++x) std::memcpy(o + (r * row + x) * elem, in + (from + row - 1 - x) * elem, static_cast<size_t>(elem));
    }
  }
  return out;
}

// The world axis (0 x, 1 y, 2 z) and sign (+1 towards L/P/S in LPS+) an orientation letter names.
inline std::pair<int, int> letter_axis(char letter, const char* op) {
  switch (letter) {
    case 'L': return {0, +1};
    case 'R': return {0, -1};
    case 'P': return {1, +1};
    case 'A': return {1, -1};
    case 'S': return {2, +1};
    case 'I': return {2, -1};
  }
  fail(op, "orientation letter '", std::string(1, letter), "' is not one of R L A P S I");
}
}  // namespace detail

// The same image with its voxel axes permuted and flipped so that its orientation code is
// `code` (e.g. "RAS", "LPS"). Voxel values do not change; only their order and the geometry.
inline Image reorient(const Image& image, const std::string& code) {
  VOX_CHECK(code.size() == 3, "reorient", "an orientation code has 3 letters, got \"", code, "\"");
  int world_of_target[3], sign_of_target[3];
  bool seen[3] = {false, false, false};
  for (int t = 0; t < 3; ++t) {
    const auto [axis, sign] = detail::letter_axis(static_cast<char>(std::toupper(code[static_cast<size_t>(t)])), "reorient");
    VOX_CHECK(!seen[axis], "reorient", "\"", code, "\" names one world axis twice");
    seen[axis] = true;
    world_of_target[t] = axis;
    sign_of_target[t] = sign;
  }
  // The source voxel axis that runs along each world axis, and whether it runs the same way.
  const std::string current = image.orientation_code();
  int source_of_world[3], source_sign[3];
  for (int s = 0; s < 3; ++s) {
    const auto [axis, sign] = detail::letter_axis(current[static_cast<size_t>(s)], "reorient");
    source_of_world[axis] = s;
    source_sign[axis] = sign;
  }
  Image out;
  // Tensor axes are [k, j, i(, c)]: voxel axis a is tensor axis 2 - a.
  std::vector<int64_t> order;
  std::vector<bool> flips(static_cast<size_t>(image.voxels.rank()), false);
  for (int t = 2; t >= 0; --t) order.push_back(2 - source_of_world[world_of_target[t]]);
  if (image.voxels.rank() == 4) order.push_back(3);
  const Tensor v = image.voxels.permute(order);
  std::array<double, 3> new_origin = image.origin;
  for (int t = 0; t < 3; ++t) {
    const int s = source_of_world[world_of_target[t]];
    const bool flip = source_sign[world_of_target[t]] != sign_of_target[t];
    out.spacing[t] = image.spacing[s];
    for (int r = 0; r < 3; ++r) out.direction[r][t] = (flip ? -1.0 : 1.0) * image.direction[r][s];
    if (flip) {
      flips[static_cast<size_t>(2 - t)] = true;
      const double extent = static_cast<double>(image.voxels.size(2 - s) - 1) * image.spacing[s];
      for (int r = 0; r < 3; ++r) new_origin[r] += image.direction[r][s] * extent;  // the far end becomes voxel 0
    }
  }
  out.origin = new_origin;
  out.voxels = detail::flipped(v, flips);
  return out;
}

}  // namespace vox::io
