#pragma once
// A batch is a list of segments: consecutive token rows of one sequence. Row-wise work
// (projections) runs over all rows of the batch at once; work that needs the sequence's
// history (cache, attention) runs per segment.
#include <cstdint>

namespace dsv4 {

struct Segment {
  int64_t row0 = 0;   // first row of this segment in the batch
  int64_t count = 0;  // rows
  int64_t pos0 = 0;   // position of the first row in its sequence
};

}  // namespace dsv4
