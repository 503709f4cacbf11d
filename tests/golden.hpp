#pragma once
// Reads golden expected*.safetensors files for tests.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

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

// One golden case: a folder with meta.json, the checkpoint in both layouts (hf/, orig/) and the
// expected outputs (expected.safetensors for hf/, expected_orig.safetensors for orig/).
struct GoldenCase {
  std::string name;                     // meta.json "case"
  std::string dir;                      // the case folder
  nlohmann::json params;                // meta.json "case_params"
  std::vector<int64_t> chunks() const { // the chunked-prefill split of "logits_incremental"
    return params.value("chunks", std::vector<int64_t>{});
  }
};

// Where golden cases live: $DSV4_GOLDEN_DIR, else the spec's ../shared/golden beside the source
// tree when it exists (it may hold more cases than the copy in tests/data), else tests/data.
inline std::string golden_root() {
  if (const char* env = std::getenv("DSV4_GOLDEN_DIR"); env && *env) return env;
  return DSV4_GOLDEN_ROOT;
}

// Every case under golden_root() whose transformers config names `architecture`
// (e.g. "DeepseekV4ForCausalLM"), sorted by name.
inline std::vector<GoldenCase> golden_cases(const std::string& architecture) {
  namespace fs = std::filesystem;
  std::vector<GoldenCase> out;
  const fs::path root = golden_root();
  if (!fs::is_directory(root)) fail("golden root '", root.string(), "' is not a folder");
  for (const auto& e : fs::directory_iterator(root)) {
    const fs::path meta = e.path() / "meta.json";
    if (!fs::is_regular_file(meta)) continue;
    std::ifstream in(meta);
    const nlohmann::json j = nlohmann::json::parse(in);
    const auto archs = j.value("hf_config", nlohmann::json::object()).value("architectures", nlohmann::json::array());
    if (std::find(archs.begin(), archs.end(), architecture) == archs.end()) continue;
    out.push_back({j.value("case", e.path().filename().string()), e.path().string(),
                   j.value("case_params", nlohmann::json::object())});
  }
  std::sort(out.begin(), out.end(), [](const GoldenCase& a, const GoldenCase& b) { return a.name < b.name; });
  return out;
}

// golden_cases(architecture), cached, failing when there is none.
inline const std::vector<GoldenCase>& required_golden_cases(const std::string& architecture) {
  static std::map<std::string, std::vector<GoldenCase>> cached;
  auto it = cached.find(architecture);
  if (it == cached.end()) {
    auto c = golden_cases(architecture);
    if (c.empty()) fail("no ", architecture, " golden case under '", golden_root(), "'");
    it = cached.emplace(architecture, std::move(c)).first;
  }
  return it->second;
}

// Feeds `ids` through a fresh cache of type `type`: in one pass when `chunks` is empty, else the
// listed chunk sizes, then one token at a time. Returns every row's logits [S, V].
template <class Bundle = Fp32Reference>
std::vector<float> run_in_chunks(const Model& m, std::span<const int32_t> ids, const std::vector<int64_t>& chunks,
                                 ForwardTrace* trace = nullptr, CacheType type = CacheType::F32) {
  SequenceCache cache = m.new_cache(type);
  const int64_t V = m.config().vocab_size, S = int64_t(ids.size());
  std::vector<float> out, logits;
  int64_t done = 0;
  size_t next = 0;
  while (done < S) {
    int64_t n = chunks.empty() ? S : next < chunks.size() ? chunks[next++] : 1;
    n = std::min(n, S - done);
    SequenceInput in{&cache, ids.subspan(size_t(done), size_t(n))};
    m.forward<Bundle>({&in, 1}, logits, LogitRows::All, trace);
    out.insert(out.end(), logits.begin(), logits.begin() + n * V);
    done += n;
  }
  return out;
}

// The two layouts of a case and the expected outputs of each.
inline constexpr std::pair<const char*, const char*> kLayouts[] = {{"/hf", "/expected.safetensors"},
                                                                   {"/orig", "/expected_orig.safetensors"}};

// n greedy tokens after `feed`, one token per forward after the prompt.
template <class Bundle = Fp32Reference>
std::vector<int32_t> greedy_tokens(const Model& m, std::vector<int32_t> feed, size_t n) {
  SequenceCache cache = m.new_cache();
  std::vector<int32_t> out;
  std::vector<float> logits;
  while (out.size() < n) {
    SequenceInput in{&cache, feed};
    m.forward<Bundle>({&in, 1}, logits, LogitRows::Last);
    out.push_back(argmax(logits));
    feed = {out.back()};
  }
  return out;
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 1e30;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

}  // namespace dsv4::testing
