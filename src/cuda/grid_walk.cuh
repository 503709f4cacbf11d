#pragma once
// Strided walks over a row-major [rows, cols] array as (row, column) pairs, one division at the
// start instead of one per element (a run-time divisor costs ~20 instructions in 32 bits and ~100
// as int64: the per-element division and modulo were most of attend_split's and the indexer's
// shared-memory fills).
#include <cuda_runtime.h>

namespace dsv4::cuda {

// Elements start, start + step, start + 2 step, ... of an array with `cols` columns (cols > 0).
struct RowColWalk {
  int row, col;
  int cols, drow, dcol;
  __device__ RowColWalk(int start, int step, int cols_)
      : row(start / cols_), col(start % cols_), cols(cols_), drow(step / cols_), dcol(step % cols_) {}
  __device__ void next() {
    row += drow, col += dcol;
    if (col >= cols) col -= cols, ++row;
  }
};

}  // namespace dsv4::cuda
