#pragma once
// A strict JSON parser (RFC 8259) for headers and configs. Errors are vox::Error naming the
// source and the byte offset. Nesting is limited so hostile input cannot exhaust the stack.
// Integers are kept exactly (64 bits), other numbers as their text, so nothing is lost in reading.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vox/core/error.hpp"

namespace vox::json {

// A parsed value in 16 bytes: the kind, and either a boolean, an exact 64-bit integer or a
// pointer to the text, the items or the members (empty arrays and objects allocate nothing).
// With the exact-size containers the parser builds, a document costs at most about 22 bytes of
// memory per byte of its text, whatever its shape: 8 for an array of digits, 16 to 21 for arrays
// of one-element arrays, short floats or empty strings (tests/test_hostile_files.cpp parses
// 20 MB of the worst shapes under a memory limit).
class Value {
 public:
  enum class Kind : uint8_t { null, boolean, number, string, array, object };
  using Member = std::pair<std::string, Value>;

  Value() = default;
  Value(const Value& other) { copy_from(other); }
  Value(Value&& other) noexcept : kind_(other.kind_), flag_(other.flag_), payload_(other.payload_) { other.release(); }
  Value& operator=(const Value& other) {
    if (this != &other) {
      Value copy(other);
      swap(copy);
    }
    return *this;
  }
  Value& operator=(Value&& other) noexcept {
    Value moved(std::move(other));
    swap(moved);
    return *this;
  }
  ~Value() { destroy(); }

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::null; }
  bool is_object() const { return kind_ == Kind::object; }
  bool is_array() const { return kind_ == Kind::array; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_number() const { return kind_ == Kind::number; }

  const std::string& as_string(const char* what = "value") const {
    VOX_CHECK(kind_ == Kind::string, "json", what, " must be a string");
    return *payload_.text;
  }
  bool as_bool(const char* what = "value") const {
    VOX_CHECK(kind_ == Kind::boolean, "json", what, " must be true or false");
    return flag_;
  }
  double as_double(const char* what = "value") const {
    VOX_CHECK(kind_ == Kind::number, "json", what, " must be a number");
    // (an int64 converts to the double nearest to it, as strtod rounds its text)
    return flag_ ? static_cast<double>(payload_.integer) : std::strtod(payload_.text->c_str(), nullptr);
  }
  // Exact integer, or an Error if the number has a fraction, exponent or overflows int64.
  int64_t as_int64(const char* what = "value") const {
    VOX_CHECK(kind_ == Kind::number, "json", what, " must be an integer");
    VOX_CHECK(flag_, "json", what, " must be an integer that fits in 64 bits, got ", *payload_.text);
    return payload_.integer;
  }
  const std::vector<Value>& as_array(const char* what = "value") const {
    VOX_CHECK(kind_ == Kind::array, "json", what, " must be an array");
    return payload_.items ? *payload_.items : empty_items();
  }
  const std::vector<Member>& as_object(const char* what = "value") const {
    VOX_CHECK(kind_ == Kind::object, "json", what, " must be an object");
    return payload_.members ? *payload_.members : empty_members();
  }
  const Value* find(std::string_view key) const {
    if (kind_ != Kind::object || !payload_.members) return nullptr;
    for (const auto& [k, v] : *payload_.members)
      if (k == key) return &v;
    return nullptr;
  }

  static Value make_null() { return Value(); }
  static Value make_bool(bool b) {
    Value v;
    v.kind_ = Kind::boolean;
    v.flag_ = b;
    return v;
  }
  // A number from its JSON text: plain integers that fit 64 bits are kept as integers (no
  // allocation), everything else as its text, so that nothing is lost either way.
  static Value make_number_text(std::string_view text) {
    Value v;
    v.kind_ = Kind::number;
    int64_t integer = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), integer);
    if (ec == std::errc() && end == text.data() + text.size() && text != "-0") {
      v.flag_ = true;
      v.payload_.integer = integer;
    } else {
      v.payload_.text = new std::string(text);
    }
    return v;
  }
  static Value make_string(std::string s) {
    Value v;
    v.kind_ = Kind::string;
    v.payload_.text = new std::string(std::move(s));
    return v;
  }
  static Value make_array(std::vector<Value> items) {
    Value v;
    v.kind_ = Kind::array;
    if (!items.empty()) v.payload_.items = new std::vector<Value>(std::move(items));
    return v;
  }
  static Value make_object(std::vector<Member> members) {
    Value v;
    v.kind_ = Kind::object;
    if (!members.empty()) v.payload_.members = new std::vector<Member>(std::move(members));
    return v;
  }

 private:
  union Payload {
    int64_t integer;
    std::string* text;  // strings, and numbers that are not 64-bit integers
    std::vector<Value>* items;
    std::vector<Member>* members;
  };

  static const std::vector<Value>& empty_items() {
    static const std::vector<Value> none;
    return none;
  }
  static const std::vector<Member>& empty_members() {
    static const std::vector<Member> none;
    return none;
  }
  bool owns_text() const { return kind_ == Kind::string || (kind_ == Kind::number && !flag_); }
  void release() {
    kind_ = Kind::null;
    flag_ = false;
    payload_.integer = 0;
  }
  void destroy() {
    if (owns_text()) delete payload_.text;
    else if (kind_ == Kind::array) delete payload_.items;
    else if (kind_ == Kind::object) delete payload_.members;
    release();
  }
  void copy_from(const Value& other) {
    kind_ = other.kind_;
    flag_ = other.flag_;
    payload_.integer = 0;
    if (other.owns_text()) payload_.text = new std::string(*other.payload_.text);
    else if (kind_ == Kind::array) payload_.items = other.payload_.items ? new std::vector<Value>(*other.payload_.items) : nullptr;
    else if (kind_ == Kind::object) payload_.members = other.payload_.members ? new std::vector<Member>(*other.payload_.members) : nullptr;
    else payload_ = other.payload_;
  }
  void swap(Value& other) noexcept {
    std::swap(kind_, other.kind_);
    std::swap(flag_, other.flag_);
    std::swap(payload_, other.payload_);
  }

  Kind kind_ = Kind::null;
  bool flag_ = false;  // a boolean's value; for a number, whether it is held as an integer
  Payload payload_{.integer = 0};
};

static_assert(sizeof(Value) == 16, "json::Value is kept to 16 bytes: a parse's memory is bounded by a multiple of its text");

namespace detail {
class Parser {
 public:
  Parser(std::string_view text, std::string source) : text_(text), source_(std::move(source)), children_(count_children(text)) {}

  Value parse_document() {
    Value v = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) error("unexpected data after the JSON value");
    return v;
  }

 private:
  static constexpr int kMaxDepth = 64;

  // The number of direct children of every array and object, in the order they open, from one
  // pass over the text: the parser then sizes each container exactly, where growth by doubling
  // would briefly hold three times the final size. Malformed text only makes a count wrong, and
  // the parse proper reports it.
  static std::vector<uint32_t> count_children(std::string_view t) {
    std::vector<uint32_t> counts;
    std::vector<uint32_t> open;  // indices into counts of the containers enclosing the position
    bool in_string = false, fresh = false;  // fresh: the innermost container has no child yet
    for (size_t i = 0; i < t.size(); ++i) {
      const char c = t[i];
      if (in_string) {
        if (c == '\\') ++i;
        else if (c == '"') in_string = false;
        continue;
      }
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
      if (c == ']' || c == '}') {
        if (!open.empty()) open.pop_back();
        fresh = false;
        continue;
      }
      if (c == ',') {
        if (!open.empty()) ++counts[open.back()];
        continue;
      }
      if (fresh && !open.empty()) counts[open.back()] = 1;
      fresh = false;
      if (c == '"') in_string = true;
      if (c == '[' || c == '{') {
        if (open.size() > static_cast<size_t>(kMaxDepth) + 1) return counts;  // the parse rejects this depth
        open.push_back(static_cast<uint32_t>(counts.size()));
        counts.push_back(0);
        fresh = true;
      }
    }
    return counts;
  }
  // The exact size to reserve for the next container, never more than its remaining text allows.
  size_t next_reservation() {
    const size_t claimed = next_container_ < children_.size() ? children_[next_container_] : 0;
    ++next_container_;
    return std::min(claimed, (text_.size() - pos_) / 2 + 1);
  }

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
    const size_t open_at = pos_;
    ++pos_;
    std::vector<Value::Member> members;
    members.reserve(next_reservation());
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == '}') {
      ++pos_;
      return Value::make_object(std::move(members));
    }
    while (true) {
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != '"') error("expected a string key");
      std::string key = parse_string();
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
        reject_duplicate_keys(members, open_at);
        return Value::make_object(std::move(members));
      }
      error("expected ',' or '}'");
    }
  }
  // Sorting views of the keys keeps the check O(n log n) for huge objects, with 16 bytes a key.
  void reject_duplicate_keys(const std::vector<Value::Member>& members, size_t open_at) {
    if (members.size() < 2) return;
    std::vector<std::string_view> keys;
    keys.reserve(members.size());
    for (const auto& m : members) keys.emplace_back(m.first);
    std::sort(keys.begin(), keys.end());
    const auto twin = std::adjacent_find(keys.begin(), keys.end());
    if (twin != keys.end()) {
      pos_ = open_at;
      error("duplicate key \"" + std::string(*twin) + "\" in the object");
    }
  }
  Value parse_array(int depth) {
    ++pos_;
    std::vector<Value> items;
    items.reserve(next_reservation());
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
    return Value::make_number_text(text_.substr(start, pos_ - start));
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
  std::vector<uint32_t> children_;
  size_t next_container_ = 0;
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
