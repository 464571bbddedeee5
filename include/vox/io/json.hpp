#pragma once
// A strict JSON parser (RFC 8259) for headers and configs. Errors are vox::Error naming the
// source and the byte offset. Nesting is limited so hostile input cannot exhaust the stack.
// Numbers keep their text, so 64-bit integers read back exactly.
#include <charconv>
#include <cstdio>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vox/core/error.hpp"

namespace vox::json {

class Value {
 public:
  enum class Kind { null, boolean, number, string, array, object };

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::null; }
  bool is_object() const { return kind_ == Kind::object; }
  bool is_array() const { return kind_ == Kind::array; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_number() const { return kind_ == Kind::number; }

  const std::string& as_string(const char* what = "value") const {
    VOX_CHECK(kind_ == Kind::string, "json", what, " must be a string");
    return text_;
  }
  bool as_bool(const char* what = "value") const {
    VOX_CHECK(kind_ == Kind::boolean, "json", what, " must be true or false");
    return boolean_;
  }
  double as_double(const char* what = "value") const {
    VOX_CHECK(kind_ == Kind::number, "json", what, " must be a number");
    return std::strtod(text_.c_str(), nullptr);
  }
  // Exact integer, or an Error if the number has a fraction, exponent or overflows int64.
  int64_t as_int64(const char* what = "value") const {
    VOX_CHECK(kind_ == Kind::number, "json", what, " must be an integer");
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(text_.data(), text_.data() + text_.size(), v);
    VOX_CHECK(ec == std::errc() && end == text_.data() + text_.size(), "json", what, " must be an integer that fits in 64 bits, got ",
              text_);
    return v;
  }
  const std::vector<Value>& as_array(const char* what = "value") const {
    VOX_CHECK(kind_ == Kind::array, "json", what, " must be an array");
    return array_;
  }
  const std::vector<std::pair<std::string, Value>>& as_object(const char* what = "value") const {
    VOX_CHECK(kind_ == Kind::object, "json", what, " must be an object");
    return object_;
  }
  const Value* find(std::string_view key) const {
    for (const auto& [k, v] : object_)
      if (k == key) return &v;
    return nullptr;
  }

  static Value make_null() { return Value(); }
  static Value make_bool(bool b) {
    Value v;
    v.kind_ = Kind::boolean;
    v.boolean_ = b;
    return v;
  }
  static Value make_number_text(std::string text) {
    Value v;
    v.kind_ = Kind::number;
    v.text_ = std::move(text);
    return v;
  }
  static Value make_string(std::string s) {
    Value v;
    v.kind_ = Kind::string;
    v.text_ = std::move(s);
    return v;
  }
  static Value make_array(std::vector<Value> items) {
    Value v;
    v.kind_ = Kind::array;
    v.array_ = std::move(items);
    return v;
  }
  static Value make_object(std::vector<std::pair<std::string, Value>> members) {
    Value v;
    v.kind_ = Kind::object;
    v.object_ = std::move(members);
    return v;
  }

 private:
  Kind kind_ = Kind::null;
  bool boolean_ = false;
  std::string text_;
  std::vector<Value> array_;
  std::vector<std::pair<std::string, Value>> object_;
};

namespace detail {
class Parser {
 public:
  Parser(std::string_view text, std::string source) : text_(text), source_(std::move(source)) {}

  Value parse_document() {
    Value v = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) error("unexpected data after the JSON value");
    return v;
  }

 private:
  static constexpr int kMaxDepth = 64;

  [[noreturn]] void error(const std::string& what) const {
    throw Error(vox::detail::concat(source_, ": ", what, " at byte ", pos_));
  }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) ++pos_;
  }
  bool consume(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }
  Value parse_value(int depth) {
    if (depth > kMaxDepth) error("nesting deeper than 64 levels");
    skip_space();
    if (pos_ >= text_.size()) error("unexpected end of input");
    const char c = text_[pos_];
    if (c == '{') return parse_object(depth);
    if (c == '[') return parse_array(depth);
    if (c == '"') return Value::make_string(parse_string());
    if (consume("true")) return Value::make_bool(true);
    if (consume("false")) return Value::make_bool(false);
    if (consume("null")) return Value::make_null();
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
    error(std::string("unexpected character '") + c + "'");
  }
  Value parse_object(int depth) {
    ++pos_;
    std::vector<std::pair<std::string, Value>> members;
    std::set<std::string> keys;  // duplicate detection stays O(n log n) for huge headers
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == '}') {
      ++pos_;
      return Value::make_object(std::move(members));
    }
    while (true) {
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != '"') error("expected a string key");
      std::string key = parse_string();
      if (!keys.insert(key).second) error("duplicate key \"" + key + "\"");
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != ':') error("expected ':'");
      ++pos_;
      members.emplace_back(std::move(key), parse_value(depth + 1));
      skip_space();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == '}') {
        ++pos_;
        return Value::make_object(std::move(members));
      }
      error("expected ',' or '}'");
    }
  }
  Value parse_array(int depth) {
    ++pos_;
    std::vector<Value> items;
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == ']') {
      ++pos_;
      return Value::make_array(std::move(items));
    }
    while (true) {
      items.push_back(parse_value(depth + 1));
      skip_space();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == ']') {
        ++pos_;
        return Value::make_array(std::move(items));
      }
      error("expected ',' or ']'");
    }
  }
  Value parse_number() {
    const size_t start = pos_;
    auto digits = [&] {
      const size_t from = pos_;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
      return pos_ > from;
    };
    if (text_[pos_] == '-') ++pos_;
    if (pos_ < text_.size() && text_[pos_] == '0') {
      ++pos_;
    } else if (!digits()) {
      error("malformed number");
    }
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      if (!digits()) error("malformed number: digits must follow '.'");
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (!digits()) error("malformed number: digits must follow the exponent");
    }
    return Value::make_number_text(std::string(text_.substr(start, pos_ - start)));
  }
  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  uint32_t parse_hex4() {
    if (pos_ + 4 > text_.size()) error("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
      else error("bad hex digit in \\u escape");
    }
    return v;
  }
  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) error("unterminated string");
      const char c = text_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= text_.size()) error("unterminated escape");
      const char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {
            if (!consume("\\u")) error("unpaired surrogate");
            const uint32_t low = parse_hex4();
            if (low < 0xDC00 || low >= 0xE000) error("bad low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            error("unpaired surrogate");
          }
          append_utf8(out, cp);
          break;
        }
        default: error(std::string("bad escape '\\") + e + "'");
      }
    }
  }

  std::string_view text_;
  std::string source_;
  size_t pos_ = 0;
};
}  // namespace detail

// Parses a whole document; `source` names it in error messages (a file name, "header", ...).
inline Value parse(std::string_view text, const std::string& source = "json") {
  return detail::Parser(text, source).parse_document();
}

// Serialises a string as a JSON string literal.
inline std::string quote(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

}  // namespace vox::json
