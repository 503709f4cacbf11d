#pragma once
// Reads golden expected*.safetensors files for tests.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dsv4/dsv4.hpp"

namespace dsv4::testing {

class Golden {
 public:
  explicit Golden(const std::string& path) : file_(std::make_unique<MappedFile>(path)) {
    for (auto& t : parse_safetensors({file_->data(), file_->size()}, path)) tensors_[t.name] = t;
  }
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  const TensorView& at(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) fail("golden file has no tensor '", name, "'");
    return it->second;
  }
  std::vector<float> floats(const std::string& name) const {
    const TensorView& t = at(name);
    std::vector<float> v(size_t(t.numel()));
    std::memcpy(v.data(), t.data, t.nbytes);
    return v;
  }
  std::vector<int32_t> ids(const std::string& name) const {
    const TensorView& t = at(name);
    std::vector<int32_t> v;
    for (int64_t i = 0; i < t.numel(); ++i) v.push_back(int32_t(t.int_at(i)));
    return v;
  }
  std::vector<int64_t> ints(const std::string& name) const {
    const TensorView& t = at(name);
    std::vector<int64_t> v;
    for (int64_t i = 0; i < t.numel(); ++i) v.push_back(t.int_at(i));
    return v;
  }

 private:
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
};

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 1e30;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

}  // namespace dsv4::testing
