#pragma once
// safetensors: an 8-byte little-endian header length, a JSON header mapping names to
// {dtype, shape, data_offsets} (plus an optional "__metadata__" of string pairs), then the raw
// little-endian data. It is how PyTorch state_dicts travel without pickle. The reader checks
// every length, offset and size against the file and throws vox::Error naming the file, the
// tensor and the byte offset; it never reads outside the buffer.
#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <string>

#include "vox/core/tensor.hpp"
#include "vox/io/file.hpp"
#include "vox/io/json.hpp"

namespace vox::io {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; vox reads it in place");

struct Safetensors {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;

  const Tensor& at(const std::string& name) const {
    const auto it = tensors.find(name);
    VOX_CHECK(it != tensors.end(), "safetensors", "no tensor named \"", name, "\"");
    return it->second;
  }
  bool contains(const std::string& name) const { return tensors.count(name) != 0; }
};

namespace safetensors_detail {
inline DType dtype_from_code(const std::string& code, const std::string& where) {
  static const std::map<std::string, DType> codes{{"F32", DType::f32}, {"F64", DType::f64}, {"F16", DType::f16},
                                                  {"BF16", DType::bf16}, {"I8", DType::i8}, {"U8", DType::u8},
                                                  {"I32", DType::i32}, {"I64", DType::i64}, {"BOOL", DType::boolean}};
  const auto it = codes.find(code);
  if (it == codes.end()) throw Error(where + ": dtype \"" + code + "\" is not supported (F32, F64, F16, BF16, I8, U8, I32, I64, BOOL)");
  return it->second;
}
inline const char* code_of(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i8: return "I8";
    case DType::u8: return "U8";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::boolean: return "BOOL";
  }
  return "?";
}
}  // namespace safetensors_detail

// The largest header read: real files need a few hundred bytes a tensor (tens of thousands of
// tensors fit), and the JSON parse holds at most about 22 bytes per header byte.
constexpr uint64_t kMaxSafetensorsHeaderBytes = uint64_t{8} << 20;

// Parses a safetensors image held in memory; `source` names it in errors. Every entry is checked
// (dtype, shape, range inside the data, no two ranges overlapping) before any tensor is made, so
// a hostile header costs no more memory than the file itself.
inline Safetensors parse_safetensors(const char* data, size_t size, const std::string& source) {
  using safetensors_detail::dtype_from_code;
  VOX_CHECK(size >= 8, "safetensors", source, ": file is ", size, " bytes, too short for the 8-byte header length");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<unsigned char>(data[i]);
  VOX_CHECK(header_size <= size - 8, "safetensors", source, ": header length ", header_size, " at byte 0 runs past the end of the ",
            size, "-byte file");
  VOX_CHECK(header_size <= kMaxSafetensorsHeaderBytes, "safetensors", source, ": header length ", header_size, " exceeds ",
            kMaxSafetensorsHeaderBytes >> 20, " MiB");
  const json::Value header = json::parse(std::string_view(data + 8, static_cast<size_t>(header_size)), source + " header");
  VOX_CHECK(header.is_object(), "safetensors", source, ": the header must be a JSON object");
  const uint64_t data_start = 8 + header_size;
  const uint64_t data_size = size - data_start;
  struct Entry {
    const std::string* name;
    DType dtype;
    Shape shape;
    uint64_t begin, end;
  };
  Safetensors out;
  std::vector<Entry> entries;
  for (const auto& [name, entry] : header.as_object()) {
    const std::string where = source + ": tensor \"" + name + "\"";
    if (name == "__metadata__") {
      VOX_CHECK(entry.is_object(), "safetensors", source, ": __metadata__ must be an object of strings");
      for (const auto& [k, v] : entry.as_object()) {
        VOX_CHECK(v.is_string(), "safetensors", source, ": __metadata__ value for \"", k, "\" is not a string");
        out.metadata[k] = v.as_string();
      }
      continue;
    }
    VOX_CHECK(entry.is_object(), "safetensors", where, " must be an object");
    const json::Value* dtype = entry.find("dtype");
    const json::Value* shape = entry.find("shape");
    const json::Value* offsets = entry.find("data_offsets");
    VOX_CHECK(dtype && shape && offsets, "safetensors", where, " needs dtype, shape and data_offsets");
    VOX_CHECK(dtype->is_string(), "safetensors", where, ": dtype must be a string");
    const DType t = dtype_from_code(dtype->as_string(), where);
    VOX_CHECK(shape->is_array() && shape->as_array().size() <= static_cast<size_t>(kMaxRank), "safetensors", where,
              ": shape must be an array of at most ", kMaxRank, " sizes");
    Shape s;
    uint64_t count = 1;
    for (const json::Value& d : shape->as_array()) {
      VOX_CHECK(d.is_number(), "safetensors", where, ": shape entries must be integers");
      const int64_t v = d.as_int64("shape entry");
      VOX_CHECK(v >= 0 && v <= (int64_t{1} << 40), "safetensors", where, ": shape entry ", v, " is out of range");
      VOX_CHECK(v == 0 || count <= (uint64_t{1} << 48) / static_cast<uint64_t>(v), "safetensors", where,
                ": element count overflows");
      count *= static_cast<uint64_t>(v);
      s.push_back(v);
    }
    VOX_CHECK(offsets->is_array() && offsets->as_array().size() == 2, "safetensors", where,
              ": data_offsets must be [begin, end]");
    const int64_t begin = offsets->as_array()[0].as_int64("data_offsets[0]");
    const int64_t end = offsets->as_array()[1].as_int64("data_offsets[1]");
    VOX_CHECK(begin >= 0 && begin <= end && static_cast<uint64_t>(end) <= data_size, "safetensors", where, ": data_offsets [",
              begin, ", ", end, "] fall outside the ", data_size, "-byte data section at byte ", data_start);
    const uint64_t expected = count * dtype_size(t);
    VOX_CHECK(static_cast<uint64_t>(end - begin) == expected, "safetensors", where, ": ", end - begin,
              " bytes of data for shape ", s, " of ", dtype_name(t), ", which needs ", expected);
    entries.push_back({&name, t, std::move(s), static_cast<uint64_t>(begin), static_cast<uint64_t>(end)});
  }
  // Ranges in order, none overlapping, so that together they fit the data section.
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    VOX_CHECK(by_offset[i]->begin >= by_offset[i - 1]->end, "safetensors", source, ": tensors \"", *by_offset[i - 1]->name,
              "\" and \"", *by_offset[i]->name, "\" overlap at data byte ", by_offset[i]->begin);
  for (const Entry& e : entries) {
    const std::string where = source + ": tensor \"" + *e.name + "\"";
    const size_t bytes = static_cast<size_t>(e.end - e.begin);
    const auto* from = reinterpret_cast<const unsigned char*>(data + data_start + e.begin);
    if (e.dtype == DType::boolean)
      for (size_t i = 0; i < bytes; ++i)
        VOX_CHECK(from[i] <= 1, "safetensors", where, ": bool byte ", i, " holds ", static_cast<int>(from[i]));
    Tensor tensor = empty(e.shape, e.dtype);
    if (bytes > 0) std::memcpy(tensor.raw_data(), from, bytes);
    out.tensors.emplace(*e.name, std::move(tensor));
  }
  return out;
}

inline Safetensors load_safetensors(const std::string& path) {
  const std::vector<char> bytes = read_file(path);
  return parse_safetensors(bytes.data(), bytes.size(), path);
}

// Writes tensors (made contiguous, little-endian) under their names, sorted, atomically.
inline void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  // Built by appends only: GCC 12 gives false -Wrestrict warnings on `"," + std::string`.
  std::string header = "{";
  uint64_t offset = 0;
  std::vector<Tensor> ordered;
  auto separator = [&header] {
    if (header.size() > 1) header += ',';
  };
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (auto it = metadata.begin(); it != metadata.end(); ++it) {
      if (it != metadata.begin()) header += ',';
      header += json::quote(it->first);
      header += ':';
      header += json::quote(it->second);
    }
    header += '}';
  }
  for (const auto& [name, t] : tensors) {
    VOX_CHECK(name != "__metadata__", "save_safetensors", "\"__metadata__\" is reserved");
    VOX_CHECK(t.device().is_cpu(), "save_safetensors", "tensor \"", name, "\" is on ", t.device());
    const Tensor c = t.detach().contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * dtype_size(c.dtype());
    separator();
    header += json::quote(name);
    header += ":{\"dtype\":\"";
    header += safetensors_detail::code_of(c.dtype());
    header += "\",\"shape\":[";
    for (int64_t i = 0; i < c.rank(); ++i) {
      if (i) header += ',';
      header += std::to_string(c.size(i));
    }
    header += "],\"data_offsets\":[";
    header += std::to_string(offset);
    header += ',';
    header += std::to_string(offset + bytes);
    header += "]}";
    offset += bytes;
    ordered.push_back(c);
  }
  header += "}";
  while (header.size() % 8 != 0) header += ' ';
  write_file_atomically(path, [&](std::ofstream& out) {
    char length[8];
    uint64_t n = header.size();
    for (char& b : length) {
      b = static_cast<char>(n & 0xFF);
      n >>= 8;
    }
    out.write(length, 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const Tensor& c : ordered)
      out.write(static_cast<const char*>(c.raw_data()), static_cast<std::streamsize>(c.numel() * static_cast<int64_t>(dtype_size(c.dtype()))));
  });
}

}  // namespace vox::io
