#pragma once
// Helpers shared by the unit tests: temporary directories, raw safetensors editing, bit-exact
// little-endian packing, and a Catch2 matcher for dsv4::Error messages.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <unistd.h>
#include <vector>

// Only the library parts under test (not dsv4/dsv4.hpp, so these tests build on their own).
#include "dsv4/io/checkpoint.hpp"
#include "dsv4/io/config_json.hpp"
#include "dsv4/io/mapped_file.hpp"
#include "dsv4/io/safetensors.hpp"
#include "dsv4/io/weight_source.hpp"
#include "dsv4/kernels/bundle.hpp"
#include "dsv4/model/model.hpp"
#include "dsv4/numeric/bf16.hpp"
#include "dsv4/numeric/e2m1.hpp"
#include "dsv4/numeric/e4m3.hpp"
#include "dsv4/numeric/e8m0.hpp"
#include "dsv4/quant/schemes.hpp"

namespace dsv4::testing {

namespace fs = std::filesystem;

inline const std::string kTinyDir = std::string(DSV4_TEST_DATA) + "/tiny";

// A fresh directory under the system temp dir, removed (with its contents) on destruction.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path_ = fs::temp_directory_path() /
            ("dsv4_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + std::to_string(stamp));
    fs::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

// A copy of a checkpoint directory (config.json, *.safetensors, ...) in a TempDir.
inline void copy_dir(const fs::path& from, const fs::path& to) {
  for (auto& e : fs::directory_iterator(from)) fs::copy_file(e.path(), to / e.path().filename());
}

inline std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  REQUIRE(f.good());
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  REQUIRE(f.good());
}

inline void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
  REQUIRE(f.good());
}

// One tensor of a safetensors file with its dtype as a free string (so tests can write
// dtypes the library does not know) and its shape as JSON (so tests can write bad shapes).
struct RawTensor {
  std::string name;
  std::string dtype;
  nlohmann::json shape;
  std::vector<uint8_t> bytes;
};

inline std::vector<RawTensor> read_raw(const fs::path& p) {
  MappedFile m(p.string());
  std::vector<RawTensor> out;
  for (auto& v : parse_safetensors({m.data(), m.size()}, p.string()))
    out.push_back({v.name, std::string(dtype_name(v.dtype)), v.shape, {v.data, v.data + v.nbytes}});
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name < b.name; });
  return out;
}

// 8-byte length + header text + data.
inline std::vector<uint8_t> safetensors_bytes(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b(8 + header.size() + data.size());
  for (int i = 0; i < 8; ++i) b[size_t(i)] = uint8_t(uint64_t(header.size()) >> (8 * i));
  std::memcpy(b.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(b.data() + 8 + header.size(), data.data(), data.size());
  return b;
}

inline std::vector<uint8_t> raw_file_bytes(const std::vector<RawTensor>& ts) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  h["__metadata__"] = {{"format", "pt"}};
  std::vector<uint8_t> data;
  for (auto& t : ts) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data.insert(data.end(), t.bytes.begin(), t.bytes.end());
  }
  std::string text = h.dump();
  while (text.size() % 8) text.push_back(' ');
  return safetensors_bytes(text, data);
}

inline void write_raw(const fs::path& p, const std::vector<RawTensor>& ts) { write_bytes(p, raw_file_bytes(ts)); }

inline RawTensor& find_raw(std::vector<RawTensor>& ts, const std::string& name) {
  for (auto& t : ts)
    if (t.name == name) return t;
  FAIL("no tensor " << name);
  return ts.front();
}

template <class T>
std::vector<uint8_t> le_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());  // the test machines are little-endian
  return b;
}

// Builds a small n x k matrix in scheme S whose logical values are exact in every scheme:
// an E2M1 value times a power-of-two scale that varies by tile / group (so scale indexing
// matters). `d` owns the bytes; `want` gets the logical values, row-major.
struct SchemeData {
  std::vector<uint8_t> q, scale;
};

template <class S>
S make_scheme(SchemeData& d, int64_t n, int64_t k, std::vector<float>& want) {
  static const float kFp4[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  auto code_at = [](int64_t i, int64_t j) { return uint8_t((i * 7 + j * 3) % 16); };
  auto value = [&](uint8_t c) { return c < 8 ? kFp4[c] : -kFp4[c - 8]; };
  auto pow2 = [](int64_t e) { return std::ldexp(1.0f, int(e)); };
  want.assign(size_t(n * k), 0.f);
  d = {};
  if constexpr (std::is_same_v<S, F32Matrix> || std::is_same_v<S, Bf16Matrix>) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) want[size_t(i * k + j)] = value(code_at(i, j)) * pow2((i + j) % 3 - 1);
    if constexpr (std::is_same_v<S, F32Matrix>) {
      d.q = le_bytes(want);
    } else {
      std::vector<uint16_t> h;
      for (float v : want) h.push_back(f32_to_bf16(v));
      d.q = le_bytes(h);
    }
    return {d.q.data(), n, k};
  } else if constexpr (std::is_same_v<S, Fp8BlockMatrix>) {
    const int64_t b = 16, sc = (k + b - 1) / b;
    d.scale.resize(size_t(((n + b - 1) / b) * sc));
    for (size_t t = 0; t < d.scale.size(); ++t) d.scale[t] = uint8_t(126 + t % 3);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) {
        const float v = value(code_at(i, j));
        d.q.push_back(f32_to_e4m3(v));
        want[size_t(i * k + j)] = v * pow2(d.scale[size_t((i / b) * sc + j / b)] - 127);
      }
    return {d.q.data(), d.scale.data(), false, n, k, b, b};
  } else {
    static_assert(std::is_same_v<S, Fp4GroupMatrix>);
    const int64_t g = 32, sc = (k + g - 1) / g;
    d.scale.resize(size_t(n * sc));
    for (size_t t = 0; t < d.scale.size(); ++t) d.scale[t] = uint8_t(126 + (t * 5) % 3);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) {
        if (j % 2 == 0) d.q.push_back(uint8_t(code_at(i, j) | (code_at(i, j + 1) << 4)));
        want[size_t(i * k + j)] = value(code_at(i, j)) * pow2(d.scale[size_t(i * sc + j / g)] - 127);
      }
    return {d.q.data(), d.scale.data(), n, k, g};
  }
}

// Matches a dsv4::Error whose message contains every one of the given parts.
class MessageContains : public Catch::MatcherBase<dsv4::Error> {
 public:
  MessageContains(std::initializer_list<std::string> parts) : parts_(parts) {}
  bool match(const dsv4::Error& e) const override {
    const std::string what = e.what();
    for (auto& p : parts_)
      if (what.find(p) == std::string::npos) return false;
    return true;
  }
  std::string describe() const override {
    std::string s = "message contains";
    for (auto& p : parts_) s += " \"" + p + "\"";
    return s;
  }

 private:
  std::vector<std::string> parts_;
};

}  // namespace dsv4::testing

// The expression throws a dsv4::Error whose message contains every string given.
#define REQUIRE_DSV4_ERROR(expr, ...) \
  REQUIRE_THROWS_MATCHES(expr, dsv4::Error, ::dsv4::testing::MessageContains({__VA_ARGS__}))
