#pragma once
// safetensors: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the data; offsets are relative to the end of the header.
// parse_safetensors validates everything a corrupt or truncated file can get wrong.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "dsv4/core/error.hpp"
#include "dsv4/tensor/view.hpp"

namespace dsv4 {

inline constexpr uint64_t kMaxSafetensorsHeader = uint64_t(100) << 20;  // 100 MiB of JSON

// A JSON value for an error message: scalars as written (cut to 40 characters), arrays and objects
// by type only (dump() recurses, and a hostile header can nest a million levels deep).
inline std::string json_brief(const nlohmann::json& j) {
  if (j.is_array() || j.is_object()) return std::string("an ") + j.type_name();
  std::string s = j.dump();
  return s.size() > 40 ? s.substr(0, 40) + "..." : s;
}

// Returns one view per tensor, pointing into `file` (which must outlive them).
inline std::vector<TensorView> parse_safetensors(std::span<const uint8_t> file, const std::string& path) {
  if (file.size() < 8) fail(path, ": truncated safetensors file (", file.size(), " bytes, no header length)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[size_t(i)];
  if (n > kMaxSafetensorsHeader) fail(path, ": safetensors header length ", n, " is implausible");
  if (n > file.size() - 8)
    fail(path, ": truncated safetensors file (header says ", n, " bytes, file has ", file.size() - 8, ")");
  const uint8_t* base = file.data() + 8 + n;
  const uint64_t data_size = file.size() - 8 - n;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(file.begin() + 8, file.begin() + 8 + ptrdiff_t(n));
  } catch (const std::exception& e) {
    fail(path, ": corrupt safetensors header: ", e.what());
  }
  if (!header.is_object()) fail(path, ": corrupt safetensors header: not a JSON object");

  std::vector<TensorView> out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.cbegin(); it != header.cend(); ++it) {  // (clang 14 cannot capture structured bindings)
    const std::string& name = it.key();
    const nlohmann::json& info = it.value();
    if (name == "__metadata__") continue;
    auto where = [&] { return cat(path, ": tensor '", name, "'"); };
    if (!info.is_object()) fail(where(), ": entry is not an object");
    auto dt = info.find("dtype");
    auto sh = info.find("shape");
    auto off = info.find("data_offsets");
    if (dt == info.end() || !dt->is_string()) fail(where(), ": missing or non-string 'dtype'");
    if (sh == info.end() || !sh->is_array()) fail(where(), ": missing or non-array 'shape'");
    if (off == info.end() || !off->is_array() || off->size() != 2) fail(where(), ": 'data_offsets' must be [begin, end]");
    TensorView v;
    v.name = name;
    v.file = path;
    auto dtype = dtype_from_name(dt->get<std::string>());
    if (!dtype) fail(where(), ": unknown dtype '", dt->get<std::string>(), "'");
    v.dtype = *dtype;
    uint64_t numel = 1;
    for (auto& d : *sh) {
      if (!d.is_number_unsigned()) fail(where(), ": shape has a non-integer or negative dimension ", json_brief(d));
      uint64_t x = d.get<uint64_t>();
      if (x > (uint64_t(1) << 48) || (x && numel > std::numeric_limits<uint64_t>::max() / x / 8))
        fail(where(), ": shape is too large (dimension ", v.shape.size(), " is ", x, ")");
      numel *= x;
      v.shape.push_back(int64_t(x));
    }
    for (auto& o : *off)
      if (!o.is_number_unsigned()) fail(where(), ": data_offsets must be non-negative integers, got ", json_brief(o));
    uint64_t b = (*off)[0].get<uint64_t>(), e = (*off)[1].get<uint64_t>();
    if (b > e || e > data_size)
      fail(where(), ": data_offsets [", b, ", ", e, "] outside the data (", data_size, " bytes); file truncated?");
    if (e - b != numel * dtype_bytes(v.dtype))
      fail(where(), ": ", e - b, " bytes of data for shape ", shape_str(v.shape), " of ", dtype_name(v.dtype));
    v.data = base + b;
    v.nbytes = size_t(e - b);
    if (e > b) ranges.push_back({b, e});
    out.push_back(std::move(v));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail(path, ": corrupt safetensors header: tensor data ranges overlap");
  return out;
}

// A tensor to write: f32 or i64 data with a shape.
struct OutTensor {
  std::string name;
  DType dtype;
  Shape shape;
  std::vector<uint8_t> bytes;
};

inline OutTensor out_tensor_f32(std::string name, Shape shape, std::span<const float> v) {
  OutTensor t{std::move(name), DType::F32, std::move(shape), {}};
  DSV4_ASSERT(int64_t(v.size()) == shape_numel(t.shape));
  t.bytes.resize(v.size_bytes());
  std::memcpy(t.bytes.data(), v.data(), v.size_bytes());
  return t;
}

inline OutTensor out_tensor_i64(std::string name, Shape shape, std::span<const int64_t> v) {
  OutTensor t{std::move(name), DType::I64, std::move(shape), {}};
  DSV4_ASSERT(int64_t(v.size()) == shape_numel(t.shape));
  t.bytes.resize(v.size_bytes());
  std::memcpy(t.bytes.data(), v.data(), v.size_bytes());
  return t;
}

// Writes tensors as one safetensors file (header padded to 8 bytes so data is aligned).
inline void write_safetensors(const std::string& path, const std::vector<OutTensor>& tensors) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  uint64_t offset = 0;
  for (auto& t : tensors) {
    h[t.name] = {{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape},
                 {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = h.dump();
  while ((text.size() + 8) % 8) text.push_back(' ');
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail(path, ": cannot open for writing");
  uint64_t n = text.size();
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
  f.write(reinterpret_cast<const char*>(len), 8);
  f.write(text.data(), std::streamsize(text.size()));
  for (auto& t : tensors) f.write(reinterpret_cast<const char*>(t.bytes.data()), std::streamsize(t.bytes.size()));
  if (!f) fail(path, ": write failed");
}

}  // namespace dsv4
