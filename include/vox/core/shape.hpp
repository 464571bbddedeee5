#pragma once
// Shape and strides: small fixed-capacity vectors (rank 0..8) that never allocate.
#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "vox/core/error.hpp"

namespace vox {

inline constexpr int kMaxRank = 8;

class Dims {
 public:
  Dims() = default;
  Dims(std::initializer_list<int64_t> values) { assign(values.begin(), values.end()); }
  explicit Dims(const std::vector<int64_t>& values) { assign(values.begin(), values.end()); }
  static Dims filled(int64_t rank, int64_t value) {
    Dims d;
    d.resize(rank, value);
    return d;
  }

  int64_t size() const { return rank_; }
  bool empty() const { return rank_ == 0; }
  int64_t& operator[](int64_t i) { return data_[static_cast<size_t>(i)]; }
  int64_t operator[](int64_t i) const { return data_[static_cast<size_t>(i)]; }
  int64_t* begin() { return data_.data(); }
  int64_t* end() { return data_.data() + rank_; }
  const int64_t* begin() const { return data_.data(); }
  const int64_t* end() const { return data_.data() + rank_; }
  const int64_t* data() const { return data_.data(); }
  int64_t back() const { return data_[static_cast<size_t>(rank_ - 1)]; }

  void push_back(int64_t v) {
    VOX_CHECK(rank_ < kMaxRank, "Dims", "rank would exceed ", kMaxRank);
    data_[static_cast<size_t>(rank_++)] = v;
  }
  void resize(int64_t rank, int64_t value = 0) {
    VOX_CHECK(rank >= 0 && rank <= kMaxRank, "Dims", "rank ", rank, " is outside 0..", kMaxRank);
    for (int64_t i = rank_; i < rank; ++i) data_[static_cast<size_t>(i)] = value;
    rank_ = static_cast<int>(rank);
  }
  void insert(int64_t at, int64_t v) {
    push_back(0);
    for (int64_t i = rank_ - 1; i > at; --i) data_[static_cast<size_t>(i)] = data_[static_cast<size_t>(i - 1)];
    data_[static_cast<size_t>(at)] = v;
  }
  void erase(int64_t at) {
    for (int64_t i = at; i + 1 < rank_; ++i) data_[static_cast<size_t>(i)] = data_[static_cast<size_t>(i + 1)];
    --rank_;
  }
  std::vector<int64_t> vec() const { return {begin(), end()}; }

  bool operator==(const Dims& o) const { return rank_ == o.rank_ && std::equal(begin(), end(), o.begin()); }
  bool operator!=(const Dims& o) const { return !(*this == o); }

  std::string str() const {
    std::ostringstream out;
    out << '[';
    for (int64_t i = 0; i < rank_; ++i) out << (i ? ", " : "") << data_[static_cast<size_t>(i)];
    out << ']';
    return out.str();
  }

 private:
  template <class It>
  void assign(It first, It last) {
    rank_ = 0;
    for (; first != last; ++first) push_back(*first);
  }
  std::array<int64_t, kMaxRank> data_{};
  int rank_ = 0;
};

using Shape = Dims;
using Strides = Dims;

inline std::ostream& operator<<(std::ostream& out, const Dims& d) { return out << d.str(); }

inline int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t v : s) n *= v;
  return n;
}

inline Strides contiguous_strides(const Shape& s) {
  Strides st = Strides::filled(s.size(), 1);
  for (int64_t i = s.size() - 2; i >= 0; --i) st[i] = st[i + 1] * std::max<int64_t>(s[i + 1], 1);
  return st;
}

// Wraps a possibly negative axis into 0..rank-1 or throws naming the op.
inline int64_t normalize_axis(int64_t axis, int64_t rank, const char* op) {
  VOX_CHECK(axis >= -rank && axis < rank, op, "axis ", axis, " is out of range for rank ", rank);
  return axis < 0 ? axis + rank : axis;
}

// NumPy broadcasting of two shapes, aligned on the right.
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const int64_t rank = std::max(a.size(), b.size());
  Shape out = Shape::filled(rank, 1);
  for (int64_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    VOX_CHECK(da == db || da == 1 || db == 1, op, "shapes ", a, " and ", b,
              " cannot be broadcast together (axis ", i, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace vox
