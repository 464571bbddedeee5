#pragma once
// Elementwise loops over one to three inputs with broadcasting. The functor receives values in
// the compute type C (float for 16-bit storage) and its result is stored as TO. The common
// cases (all contiguous, or one operand a broadcast scalar) get plain loops the compiler
// vectorises; everything else walks strided rows.
#include <type_traits>

#include "kernels/cpu/strided.hpp"

namespace vox::kernels::cpu {

template <class C, class TO, class TA, class F>
void map1(const StridedLayout<2>& layout, TO* out, const TA* a, F f) {
  for_each_row<2>(layout, [&](std::array<int64_t, 2> o, int64_t n, std::array<int64_t, 2> s) {
    TO* po = out + o[0];
    const TA* pa = a + o[1];
    if (s[0] == 1 && s[1] == 1) {
      for (int64_t j = 0; j < n; ++j) po[j] = static_cast<TO>(f(static_cast<C>(pa[j])));
    } else {
      for (int64_t j = 0; j < n; ++j) po[j * s[0]] = static_cast<TO>(f(static_cast<C>(pa[j * s[1]])));
    }
  });
}

template <class C, class TO, class TA, class TB, class F>
void map2(const StridedLayout<3>& layout, TO* out, const TA* a, const TB* b, F f) {
  for_each_row<3>(layout, [&](std::array<int64_t, 3> o, int64_t n, std::array<int64_t, 3> s) {
    TO* po = out + o[0];
    const TA* pa = a + o[1];
    const TB* pb = b + o[2];
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
      for (int64_t j = 0; j < n; ++j) po[j] = static_cast<TO>(f(static_cast<C>(pa[j]), static_cast<C>(pb[j])));
    } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {
      const C vb = static_cast<C>(*pb);
      for (int64_t j = 0; j < n; ++j) po[j] = static_cast<TO>(f(static_cast<C>(pa[j]), vb));
    } else if (s[0] == 1 && s[1] == 0 && s[2] == 1) {
      const C va = static_cast<C>(*pa);
      for (int64_t j = 0; j < n; ++j) po[j] = static_cast<TO>(f(va, static_cast<C>(pb[j])));
    } else {
      for (int64_t j = 0; j < n; ++j)
        po[j * s[0]] = static_cast<TO>(f(static_cast<C>(pa[j * s[1]]), static_cast<C>(pb[j * s[2]])));
    }
  });
}

template <class C, class TO, class TA, class TB, class TC, class F>
void map3(const StridedLayout<4>& layout, TO* out, const TA* a, const TB* b, const TC* c, F f) {
  for_each_row<4>(layout, [&](std::array<int64_t, 4> o, int64_t n, std::array<int64_t, 4> s) {
    for (int64_t j = 0; j < n; ++j)
      out[o[0] + j * s[0]] = static_cast<TO>(f(static_cast<C>(a[o[1] + j * s[1]]), static_cast<C>(b[o[2] + j * s[2]]),
                                               static_cast<C>(c[o[3] + j * s[3]])));
  });
}

}  // namespace vox::kernels::cpu
