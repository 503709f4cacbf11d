#pragma once
// Storage types of checkpoint tensors, with the safetensors spelling of each.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace dsv4 {

enum class DType : uint8_t { F32, F16, BF16, F8_E4M3, F8_E8M0, I8, U8, I32, I64, F64, I16, BOOL };

inline constexpr struct {
  DType type;
  std::string_view name;
  size_t bytes;
} kDTypes[] = {
    {DType::F32, "F32", 4},         {DType::F16, "F16", 2},         {DType::BF16, "BF16", 2},
    {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E8M0, "F8_E8M0", 1}, {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},           {DType::I32, "I32", 4},         {DType::I64, "I64", 8},
    {DType::F64, "F64", 8},         {DType::I16, "I16", 2},         {DType::BOOL, "BOOL", 1},
};

inline std::optional<DType> dtype_from_name(std::string_view s) {
  for (auto& d : kDTypes)
    if (d.name == s) return d.type;
  return std::nullopt;
}

inline std::string_view dtype_name(DType t) {
  for (auto& d : kDTypes)
    if (d.type == t) return d.name;
  return "?";
}

inline size_t dtype_bytes(DType t) {
  for (auto& d : kDTypes)
    if (d.type == t) return d.bytes;
  return 0;
}

}  // namespace dsv4
