// libFuzzer target: dsv4::parse_safetensors on arbitrary bytes. A dsv4::Error is the expected
// answer to bad input; any other exception, a crash, a sanitizer report, or a returned view that
// is inconsistent (outside the input, size not shape x dtype) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "dsv4/io/safetensors.hpp"
#include "dsv4/quant/schemes.hpp"

namespace {

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<dsv4::TensorView> views;
  try {
    views = dsv4::parse_safetensors({data, size}, "fuzz.safetensors");
  } catch (const dsv4::Error&) {
    return 0;
  }
  volatile uint64_t sink = 0;
  for (const auto& v : views) {
    require(v.numel() >= 0, "numel >= 0");
    require(uint64_t(v.numel()) * dsv4::dtype_bytes(v.dtype) == v.nbytes, "nbytes == numel * dtype size");
    if (v.nbytes == 0) continue;
    require(v.data >= data && v.data + v.nbytes <= data + size, "view inside the input");
    sink = sink + v.data[0] + v.data[v.nbytes - 1];  // ASan checks both ends
    switch (v.dtype) {
      case dsv4::DType::I64: case dsv4::DType::I32: case dsv4::DType::I16: case dsv4::DType::I8: case dsv4::DType::U8:
        sink = sink + uint64_t(v.int_at(v.numel() - 1));
        break;
      default: break;
    }
    // A 2-D float view decodes as a matrix; decode its last row.
    if (v.shape.size() == 2 && v.shape[1] <= 4096 && (v.dtype == dsv4::DType::F32 || v.dtype == dsv4::DType::BF16)) {
      std::vector<float> row(static_cast<size_t>(v.shape[1]));
      const dsv4::Matrix m = v.dtype == dsv4::DType::F32 ? dsv4::Matrix(dsv4::F32Matrix{v.data, v.shape[0], v.shape[1]})
                                                         : dsv4::Matrix(dsv4::Bf16Matrix{v.data, v.shape[0], v.shape[1]});
      dsv4::decode_row(m, v.shape[0] - 1, row.data());
    }
  }
  return 0;
}
