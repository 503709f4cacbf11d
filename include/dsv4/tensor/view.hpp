#pragma once
// A read-only view of one stored tensor: dtype, shape and the bytes (usually in an mmap).
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "dsv4/core/error.hpp"
#include "dsv4/tensor/dtype.hpp"

namespace dsv4 {

using Shape = std::vector<int64_t>;

inline std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

inline int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

struct TensorView {
  std::string name;  // full name in the checkpoint, for error messages
  std::string file;  // file it lives in, for error messages
  DType dtype{};
  Shape shape;
  const uint8_t* data = nullptr;  // not necessarily aligned: read through memcpy
  size_t nbytes = 0;

  int64_t numel() const { return shape_numel(shape); }
  int64_t dim(size_t i) const { return shape.at(i); }

  // Element i of an integer tensor (I32/I64/I16/I8/U8), widened.
  int64_t int_at(int64_t i) const {
    switch (dtype) {
      case DType::I64: { int64_t v; std::memcpy(&v, data + 8 * i, 8); return v; }
      case DType::I32: { int32_t v; std::memcpy(&v, data + 4 * i, 4); return v; }
      case DType::I16: { int16_t v; std::memcpy(&v, data + 2 * i, 2); return v; }
      case DType::I8: return int8_t(data[i]);
      case DType::U8: return data[i];
      default: fail("tensor '", name, "' in ", file, ": dtype ", dtype_name(dtype), " is not an integer type");
    }
  }
};

}  // namespace dsv4
