#pragma once
// Optional observation of a forward pass (tests, debugging): the streams entering each layer
// and the indexer's choices. Costs nothing when not requested.
#include <cstdint>
#include <map>
#include <vector>

namespace dsv4 {

struct ForwardTrace {
  bool record_hidden = false;
  std::vector<std::vector<float>> hidden;  // [layer] -> [T, n, D] streams entering the layer; last: final normed [T, D]
  std::map<int64_t, std::vector<std::vector<int64_t>>> indexer_topk;  // layer -> per row, chosen entries
};

}  // namespace dsv4
