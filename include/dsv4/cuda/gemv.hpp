#pragma once
// CUDA backend, first slice: weight matrices uploaded once in their stored format (FP8 E4M3 with
// block scales, packed FP4 with per-group E8M0, BF16, F32) and a GEMV that decodes them in
// registers. The compiled part lives in src/cuda/ (target dsv4::cuda); this header includes no CUDA
// header, so host code builds with any C++20 compiler.
#include <cstdint>
#include <memory>
#include <span>
#include <variant>

#include "dsv4/core/error.hpp"
#include "dsv4/quant/schemes.hpp"

namespace dsv4::cuda {

// The plain description of a stored matrix that crosses into the compiled component.
struct MatrixView {
  enum Kind : int { F32 = 0, Bf16 = 1, Fp8Block = 2, Fp4Group = 3 } kind = F32;
  const uint8_t* data = nullptr;   // host bytes in the stored layout
  const uint8_t* scale = nullptr;  // host scale bytes (FP8 / FP4), else null
  bool scale_is_f32 = false;
  int64_t n = 0, k = 0, bm = 128, bn = 128, group = 32, data_bytes = 0, scale_bytes = 0;
};

// The device's ceilings, measured now (src/cuda/ceilings.cu): device-to-device copy bandwidth in
// bytes/s counting read + write, and the cuBLAS BF16 GEMM rate (fp32 accumulation) in FLOP/s.
double measure_copy_bandwidth(int64_t bytes = int64_t(1) << 30);
double measure_bf16_gemm_flops(int64_t m, int64_t n, int64_t k);

// True when a CUDA device can be used (false without a GPU or driver; never throws).
bool device_available();

// A matrix resident on the device in its stored format.
class DeviceMatrix {
 public:
  explicit DeviceMatrix(const MatrixView& v);  // uploads once; throws dsv4::Error on CUDA failure
  ~DeviceMatrix();
  DeviceMatrix(const DeviceMatrix&) = delete;
  DeviceMatrix& operator=(const DeviceMatrix&) = delete;
  int64_t rows() const { return view_.n; }
  int64_t cols() const { return view_.k; }
  const MatrixView& view() const { return view_; }  // points at device memory
  // y = W x for `batch` rows: x [batch, K] host f32, y [batch, N] host f32 (copies in and out; the
  // device-resident path is matvec_device).
  void matvec(std::span<const float> x, std::span<float> y, int64_t batch = 1) const;
  // Same on device pointers, enqueued on `stream` (a cudaStream_t, or null for the default stream).
  void matvec_device(const float* x, float* y, int64_t batch, void* stream) const;  // x [batch,K] y [batch,N]

 private:
  MatrixView view_;  // data/scale point at device memory after construction
};

// FP8 and FP4 GEMVs run on the tensor cores by default (products exact, fp32 accumulation; see
// src/cuda/gemv.cu). set_legacy_gemv(true), or DSV4_CUDA_GEMV=legacy in the environment at start,
// selects the earlier per-warp FMA kernels instead (for comparisons).
void set_legacy_gemv(bool on);
bool legacy_gemv();

// The decode-path kernels are launched with programmatic dependent launch where the GPU has it
// (compute capability 9.0): each may start while the one before it finishes, and waits on the device
// before it touches that one's results (src/cuda/pdl.cuh). set_pdl(false), or DSV4_CUDA_PDL=0 in
// the environment at start, launches them plainly (for comparisons; results are bit for bit the same).
void set_pdl(bool on);
bool pdl_enabled();

// y [batch, rows row0..row1) = W x on device pointers: x [batch, K] with row stride ldx, y with row
// stride ldy; enqueued on `stream` (a cudaStream_t). w describes device memory that no kernel writes
// while PDL is on (a weight: the tensor-core kernel reads it before waiting on the kernel before).
void gemv(const MatrixView& w, const float* x, int64_t ldx, int64_t batch, float* y, int64_t ldy, int64_t row0,
          int64_t row1, void* stream);

// A block-diagonal product in one launch (the grouped low-rank attention output): W [groups m, K],
// rows [g m, (g+1) m) times columns [g x_group, g x_group + K) of x [batch, *] (row stride ldx), into
// columns [g y_group, g y_group + m) of y (row stride ldy). FP8/FP4 take the tensor-core GEMV with
// the groups on grid.z; other formats one gemv a group. W as in gemv: a weight.
void gemv_grouped(const MatrixView& w, const float* x, int64_t ldx, int64_t batch, float* y, int64_t ldy,
                  int64_t groups, int64_t x_group, int64_t y_group, void* stream);

// Two GEMVs of the same x in one launch: y1 [batch, w1.n] (row stride ldy1) = W1 x and y2 = W2 x
// (x [batch, K], row stride ldx). One tensor-core launch when both are FP8 (or both FP4) of the same
// layout, else two gemv calls. W1 and W2 as in gemv: weights.
void gemv_pair(const MatrixView& w1, float* y1, int64_t ldy1, const MatrixView& w2, float* y2, int64_t ldy2,
               const float* x, int64_t ldx, int64_t batch, void* stream);

// Describes a loaded dsv4 weight matrix for upload.
inline MatrixView view_of(const Matrix& m) {
  MatrixView v;
  std::visit(
      [&](const auto& w) {
        using T = std::decay_t<decltype(w)>;
        v.n = w.rows();
        v.k = w.cols();
        if constexpr (std::is_same_v<T, F32Matrix>) {
          v.kind = MatrixView::F32;
          v.data = w.data;
          v.data_bytes = w.n * w.k * 4;
        } else if constexpr (std::is_same_v<T, Bf16Matrix>) {
          v.kind = MatrixView::Bf16;
          v.data = w.data;
          v.data_bytes = w.n * w.k * 2;
        } else if constexpr (std::is_same_v<T, Fp8BlockMatrix>) {
          v.kind = MatrixView::Fp8Block;
          v.data = w.q;
          v.scale = w.scale;
          v.scale_is_f32 = w.scale_is_f32;
          v.bm = w.bm;
          v.bn = w.bn;
          v.data_bytes = w.n * w.k;
          v.scale_bytes = ((w.n + w.bm - 1) / w.bm) * w.scale_cols() * (w.scale_is_f32 ? 4 : 1);
        } else {
          v.kind = MatrixView::Fp4Group;
          v.data = w.q;
          v.scale = w.scale;
          v.group = w.group;
          if (w.k % 2 != 0) throw Error("cuda: FP4 matrix with odd K");
          v.data_bytes = w.n * (w.k / 2);
          v.scale_bytes = w.n * w.scale_cols();
        }
      },
      m);
  return v;
}

}  // namespace dsv4::cuda
