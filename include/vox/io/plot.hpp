#pragma once
// Line and bar plots as PNG, with a title, axis labels and tick values, for training curves and
// reports. Text is drawn with a 5 x 7 bitmap font (digits, lower-case letters, . - + _ : and
// space; anything else is a blank), so that no font library is needed.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "vox/io/png.hpp"

namespace vox::io {

namespace plot_detail {

// Rows of a glyph, top to bottom, '#' for ink.
using Glyph = std::array<const char*, 7>;

inline const Glyph& glyph(char c) {
  static const Glyph blank{".....", ".....", ".....", ".....", ".....", ".....", "....."};
  static const std::pair<char, Glyph> font[] = {
      {'0', {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}},
      {'1', {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}},
      {'2', {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}},
      {'3', {"####.", "....#", "....#", ".###.", "....#", "....#", "####."}},
      {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}},
      {'5', {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}},
      {'6', {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."}},
      {'7', {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}},
      {'8', {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}},
      {'9', {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."}},
      {'.', {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."}},
      {'-', {".....", ".....", ".....", "#####", ".....", ".....", "....."}},
      {'+', {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."}},
      {'_', {".....", ".....", ".....", ".....", ".....", ".....", "#####"}},
      {':', {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."}},
      {'a', {".....", ".....", ".###.", "....#", ".####", "#...#", ".####"}},
      {'b', {"#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####."}},
      {'c', {".....", ".....", ".###.", "#....", "#....", "#...#", ".###."}},
      {'d', {"....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####"}},
      {'e', {".....", ".....", ".###.", "#...#", "#####", "#....", ".###."}},
      {'f', {"..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#..."}},
      {'g', {".....", ".....", ".####", "#...#", ".####", "....#", ".###."}},
      {'h', {"#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#"}},
      {'i', {"..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."}},
      {'j', {"...#.", ".....", "..##.", "...#.", "...#.", "#..#.", ".##.."}},
      {'k', {"#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."}},
      {'l', {".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}},
      {'m', {".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#"}},
      {'n', {".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#"}},
      {'o', {".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."}},
      {'p', {".....", ".....", "####.", "#...#", "####.", "#....", "#...."}},
      {'q', {".....", ".....", ".####", "#...#", ".####", "....#", "....#"}},
      {'r', {".....", ".....", "#.##.", "##..#", "#....", "#....", "#...."}},
      {'s', {".....", ".....", ".####", "#....", ".###.", "....#", "####."}},
      {'t', {".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##."}},
      {'u', {".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"}},
      {'v', {".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#.."}},
      {'w', {".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#."}},
      {'x', {".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"}},
      {'y', {".....", ".....", "#...#", "#...#", ".####", "....#", ".###."}},
      {'z', {".....", ".....", "#####", "...#.", "..#..", ".#...", "#####"}},
  };
  const char lower = c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  for (const auto& [ch, g] : font)
    if (ch == lower) return g;
  return blank;
}

}  // namespace plot_detail

// An RGB canvas, row-major from the top left.
struct Canvas {
  int64_t width, height;
  std::vector<uint8_t> pixels;
  Canvas(int64_t w, int64_t h, uint8_t grey) : width(w), height(h), pixels(static_cast<size_t>(w * h * 3), grey) {}
  void put(int64_t x, int64_t y, std::array<uint8_t, 3> rgb) {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    std::copy(rgb.begin(), rgb.end(), pixels.begin() + (y * width + x) * 3);
  }
  // Text with its top left at (x, y); characters 6 pixels apart.
  void text(int64_t x, int64_t y, const std::string& s, std::array<uint8_t, 3> rgb) {
    for (size_t n = 0; n < s.size(); ++n) {
      const plot_detail::Glyph& g = plot_detail::glyph(s[n]);
      for (int64_t row = 0; row < 7; ++row)
        for (int64_t col = 0; col < 5; ++col)
          if (g[static_cast<size_t>(row)][col] == '#') put(x + static_cast<int64_t>(n) * 6 + col, y + row, rgb);
    }
  }
  static int64_t text_width(const std::string& s) { return static_cast<int64_t>(s.size()) * 6 - 1; }
  void line(int64_t ax, int64_t ay, int64_t bx, int64_t by, std::array<uint8_t, 3> rgb) {
    const int64_t steps = std::max({std::abs(bx - ax), std::abs(by - ay), int64_t{1}});
    for (int64_t s = 0; s <= steps; ++s) put(ax + (bx - ax) * s / steps, ay + (by - ay) * s / steps, rgb);
  }
};

struct PlotOptions {
  std::string title, x_label = "epoch";
  int64_t width = 560, height = 300;
};

inline std::string tick_label(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.3g", v == 0 ? 0.0 : v);
  return buffer;
}

inline constexpr std::array<uint8_t, 3> kTitleColour{120, 190, 255};

// A curve through (x, y) points (non-finite y leave a gap), with the y range's quarters as
// grid lines and tick values, up to 6 x ticks, the title above and the x label below.
inline Canvas line_plot(const std::vector<std::pair<double, double>>& points, const PlotOptions& o = {}) {
  const int64_t left = 56, right = 16, top = 24, bottom = 34;
  Canvas c(o.width, o.height, 24);
  const int64_t plot_w = o.width - left - right, plot_h = o.height - top - bottom;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& [x, y] : points) {
    x0 = std::min(x0, x), x1 = std::max(x1, x);
    if (std::isfinite(y)) y0 = std::min(y0, y), y1 = std::max(y1, y);
  }
  if (!std::isfinite(y0)) y0 = 0, y1 = 1;
  if (!(y1 > y0)) y0 -= 0.5, y1 += 0.5;
  if (!std::isfinite(x0)) x0 = 0, x1 = 1;
  if (!(x1 > x0)) x1 = x0 + 1;
  const std::array<uint8_t, 3> grid{60, 60, 60}, ink{200, 200, 200}, curve{240, 240, 240};
  auto px = [&](double x) { return left + std::llround((x - x0) / (x1 - x0) * double(plot_w - 1)); };
  auto py = [&](double y) { return top + plot_h - 1 - std::llround((y - y0) / (y1 - y0) * double(plot_h - 1)); };
  for (int q = 0; q <= 4; ++q) {
    const double v = y0 + (y1 - y0) * q / 4;
    const int64_t y = py(v);
    for (int64_t x = left; x < left + plot_w; ++x) c.put(x, y, grid);
    const std::string label = tick_label(v);
    c.text(left - 6 - Canvas::text_width(label), y - 3, label, ink);
  }
  const int64_t ticks = std::min<int64_t>(6, static_cast<int64_t>(std::floor(x1 - x0)) + 1);
  for (int64_t t = 0; t < ticks; ++t) {
    const double v = std::round(x0 + (x1 - x0) * double(t) / double(std::max<int64_t>(ticks - 1, 1)));
    const int64_t x = px(v);
    for (int64_t y = top + plot_h; y < top + plot_h + 4; ++y) c.put(x, y, ink);
    const std::string label = tick_label(v);
    c.text(x - Canvas::text_width(label) / 2, top + plot_h + 6, label, ink);
  }
  c.line(left, top + plot_h, left + plot_w - 1, top + plot_h, ink);
  c.line(left, top, left, top + plot_h, ink);
  c.text(left + (plot_w - Canvas::text_width(o.x_label)) / 2, o.height - 11, o.x_label, ink);
  c.text(left + (plot_w - Canvas::text_width(o.title)) / 2, 8, o.title, kTitleColour);
  for (size_t i = 1; i < points.size(); ++i)
    if (std::isfinite(points[i - 1].second) && std::isfinite(points[i].second))
      c.line(px(points[i - 1].first), py(points[i - 1].second), px(points[i].first), py(points[i].second), curve);
  return c;
}

inline void write_line_plot(const std::string& path, const std::vector<std::pair<double, double>>& points, const PlotOptions& o = {}) {
  const Canvas c = line_plot(points, o);
  write_png(path, c.pixels, c.width, c.height, 3);
}

// Bars at (x, y) (y may be negative; non-finite y draw nothing), with the y range's quarters as
// grid lines and tick values (0 always inside), up to 6 x ticks, the title and the x label.
inline Canvas bar_plot(const std::vector<std::pair<double, double>>& bars, const PlotOptions& o = {}) {
  const int64_t left = 56, right = 16, top = 24, bottom = 34;
  Canvas c(o.width, o.height, 24);
  const int64_t plot_w = o.width - left - right, plot_h = o.height - top - bottom;
  double x0 = INFINITY, x1 = -INFINITY, y0 = 0, y1 = 0;
  for (const auto& [x, y] : bars) {
    x0 = std::min(x0, x), x1 = std::max(x1, x);
    if (std::isfinite(y)) y0 = std::min(y0, y), y1 = std::max(y1, y);
  }
  if (!(y1 > y0)) y1 = y0 + 1;
  if (!std::isfinite(x0)) x0 = 0, x1 = 1;
  const double slots = x1 - x0 + 1;
  const std::array<uint8_t, 3> grid{60, 60, 60}, ink{200, 200, 200}, bar{240, 170, 80};
  auto px = [&](double x) { return left + std::llround((x - x0 + 0.5) / slots * double(plot_w - 1)); };
  auto py = [&](double y) { return top + plot_h - 1 - std::llround((y - y0) / (y1 - y0) * double(plot_h - 1)); };
  for (int q = 0; q <= 4; ++q) {
    const double v = y0 + (y1 - y0) * q / 4;
    for (int64_t x = left; x < left + plot_w; ++x) c.put(x, py(v), grid);
    const std::string label = tick_label(v);
    c.text(left - 6 - Canvas::text_width(label), py(v) - 3, label, ink);
  }
  const int64_t half = std::max<int64_t>(1, std::llround(0.35 * double(plot_w) / slots));
  for (const auto& [x, y] : bars) {
    if (!std::isfinite(y)) continue;
    const int64_t a = py(std::min(0.0, y)), b = py(std::max(0.0, y));
    for (int64_t row = b; row <= a; ++row)
      for (int64_t col = px(x) - half; col <= px(x) + half; ++col) c.put(col, row, bar);
  }
  const int64_t ticks = std::min<int64_t>(6, static_cast<int64_t>(slots));
  for (int64_t t = 0; t < ticks; ++t) {
    const double v = std::round(x0 + (x1 - x0) * double(t) / double(std::max<int64_t>(ticks - 1, 1)));
    const std::string label = tick_label(v);
    c.text(px(v) - Canvas::text_width(label) / 2, top + plot_h + 6, label, ink);
  }
  c.line(left, py(0), left + plot_w - 1, py(0), ink);
  c.line(left, top, left, top + plot_h, ink);
  c.text(left + (plot_w - Canvas::text_width(o.x_label)) / 2, o.height - 11, o.x_label, ink);
  c.text(left + (plot_w - Canvas::text_width(o.title)) / 2, 8, o.title, kTitleColour);
  return c;
}

inline void write_bar_plot(const std::string& path, const std::vector<std::pair<double, double>>& bars, const PlotOptions& o = {}) {
  const Canvas c = bar_plot(bars, o);
  write_png(path, c.pixels, c.width, c.height, 3);
}

}  // namespace vox::io
