// Session state save/restore (io/cache_file.hpp) and chunked prefill (Session::set_prefill_chunk):
//   - a restored session continues bit for bit like the uninterrupted one, for every cache type;
//   - files of another model, damaged, truncated or of another version are refused, naming the
//     file, and the session is left as it was;
//   - a long prompt prefilled in chunks gives the one-pass logits, and its working memory does not
//     grow with the prompt (heap measured by counting operator new in this test binary).
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <malloc.h>
#include <new>
#include <unistd.h>

#include "dsv4/dsv4.hpp"

using namespace dsv4;
namespace fs = std::filesystem;

// ---- heap accounting: live bytes and their peak since the last reset
namespace {
std::atomic<int64_t> g_live{0}, g_peak{0};
void note_alloc(void* p) {
  if (!p) return;
  const int64_t now = g_live.fetch_add(int64_t(malloc_usable_size(p))) + int64_t(malloc_usable_size(p));
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}
void note_free(void* p) {
  if (p) g_live.fetch_sub(int64_t(malloc_usable_size(p)));
}
}  // namespace

// gcc pairs the inlined malloc/free across these replacements and warns; they are matched.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(size_t n) {
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  note_alloc(p);
  return p;
}
void* operator new[](size_t n) { return operator new(n); }
// The nothrow forms too (Catch2 uses them), so every pointer the deletes below see came from malloc.
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  void* p = std::malloc(n ? n : 1);
  note_alloc(p);
  return p;
}
void* operator new[](size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept {
  note_free(p);
  std::free(p);
}
void operator delete[](void* p) noexcept { operator delete(p); }
void operator delete(void* p, size_t) noexcept { operator delete(p); }
void operator delete[](void* p, size_t) noexcept { operator delete(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { operator delete(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { operator delete(p); }

namespace {

const std::string kTiny = std::string(DSV4_TEST_DATA) + "/tiny";

const Model& tiny() {
  static const Model m = Model::load(kTiny + "/orig");
  return m;
}

struct TempFile {
  fs::path path = fs::temp_directory_path() / ("dsv4_cachefile_" + std::to_string(::getpid()) + "_" +
                                              std::to_string(std::rand()) + ".kvc");
  ~TempFile() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};

std::vector<int32_t> prompt(int64_t n, int64_t vocab, int salt = 0) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = int32_t((i * 37 + 11 + salt * 101) % vocab);
  return ids;
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

}  // namespace

TEST_CASE("save/restore: the resumed session continues like the uninterrupted one", "[cachefile]") {
  const Model& m = tiny();
  const int64_t V = m.config().vocab_size;
  const KernelMode mode = GENERATE(KernelMode::Reference, KernelMode::Fast);
  const CacheType type = GENERATE(CacheType::F32, CacheType::BF16, CacheType::Compact);
  INFO("mode " << kernel_mode_name(mode) << " cache " << cache_type_name(type));
  TempFile f;
  Session a(m, mode, type);
  a.prefill(prompt(150, V));  // 150: past the window (16), mid-way through CSA (4) and HCA (16) windows
  a.save(f.path);

  Session b(m, mode);  // f32 by default: restore adopts the file's type
  b.restore(f.path);
  CHECK(b.cache_type() == type);
  CHECK(b.position() == a.position());
  CHECK(b.tokens() == a.tokens());
  REQUIRE(b.logits().size() == a.logits().size());
  CHECK(std::equal(a.logits().begin(), a.logits().end(), b.logits().begin()));
  for (size_t i = 0; i < a.cache().num_layers(); ++i) CHECK(b.cache().layer_bytes(i) == a.cache().layer_bytes(i));

  // Continue both by the same 40 tokens, then greedily: identical, bit for bit.
  const auto more = prompt(40, V, 1);
  a.prefill(more), b.prefill(more);
  REQUIRE(std::equal(a.logits().begin(), a.logits().end(), b.logits().begin()));
  Sampler sa(SamplingParams{}), sb(SamplingParams{});
  GenerationOptions g;
  g.max_new_tokens = 12;
  g.stop_at_eos = false;
  CHECK(a.generate(sa, g).tokens == b.generate(sb, g).tokens);
  CHECK(std::equal(a.logits().begin(), a.logits().end(), b.logits().begin()));
}

TEST_CASE("save/restore: a DeepSeek-V3 (MLA) session resumes too", "[cachefile][v3]") {
  const Model m = Model::load(std::string(DSV4_TEST_DATA) + "/v3tiny/orig");
  const int64_t V = m.config().vocab_size;
  TempFile f;
  Session a(m, KernelMode::Fast);
  a.prefill(prompt(33, V));
  a.save(f.path);
  Session b(m, KernelMode::Fast);
  b.restore(f.path);
  const auto more = prompt(5, V, 3);
  a.prefill(more), b.prefill(more);
  CHECK(std::equal(a.logits().begin(), a.logits().end(), b.logits().begin()));
  CHECK_THROWS_WITH(Session(m, KernelMode::Fast, CacheType::Compact), Catch::Contains("MLA"));
}

TEST_CASE("save/restore: other models, damage and truncation are refused, nothing changes", "[cachefile]") {
  const Model& m = tiny();
  const int64_t V = m.config().vocab_size;
  TempFile f, g;
  Session a(m, KernelMode::Reference, CacheType::Compact);
  a.prefill(prompt(70, V));
  a.save(f.path);
  const std::vector<uint8_t> good = read_bytes(f.path);

  Session victim(m, KernelMode::Reference);
  victim.prefill(prompt(9, V, 2));
  const auto before = std::vector<float>(victim.logits().begin(), victim.logits().end());
  auto refused = [&](const std::vector<uint8_t>& bytes, const std::string& why) {
    write_bytes(g.path, bytes);
    INFO("expect: " << why);
    CHECK_THROWS_WITH(victim.restore(g.path), Catch::Contains(g.path.string()) && Catch::Contains(why));
    CHECK(victim.position() == 9);
    CHECK(std::vector<float>(victim.logits().begin(), victim.logits().end()) == before);
  };
  SECTION("another model (same shapes, other weights)") {
    const Model other = Model::load(kTiny + "/hf");
    Session o(other, KernelMode::Reference, CacheType::Compact);
    CHECK_THROWS_WITH(o.restore(f.path), Catch::Contains("different model"));
  }
  SECTION("not a cache file, another version") {
    refused({'h', 'e', 'l', 'l', 'o'}, "not a dsv4 cache file");
    refused({}, "not a dsv4 cache file");
    auto v = good;
    v[7] = 9;
    refused(v, "format version 9");
  }
  SECTION("a flipped bit anywhere is caught by the checksum") {
    for (size_t at : {size_t(9), size_t(40), good.size() / 2, good.size() - 9, good.size() - 1}) {
      auto v = good;
      v[at] ^= 0x10;
      refused(v, "checksum");
    }
  }
  SECTION("truncated at many points") {
    for (size_t n = 8; n < good.size(); n += std::max<size_t>(1, good.size() / 37))
      refused(std::vector<uint8_t>(good.begin(), good.begin() + ptrdiff_t(n)), "");
  }
  SECTION("a missing file") {
    CHECK_THROWS_WITH(victim.restore(g.path.string() + ".none"), Catch::Contains("cannot open"));
    CHECK(victim.position() == 9);
  }
  // The good file still works after all that.
  victim.restore(f.path);
  CHECK(victim.position() == 70);
}

TEST_CASE("chunked prefill: one-pass logits, working memory independent of the prompt", "[cachefile][prefill]") {
  const Model& m = tiny();
  const int64_t V = m.config().vocab_size;
  const CacheType type = GENERATE(CacheType::F32, CacheType::Compact);
  INFO("cache " << cache_type_name(type));
  auto prefill = [&](int64_t n, int64_t chunk, std::vector<float>* logits) {
    Session s(m, KernelMode::Reference, type);
    s.set_prefill_chunk(chunk);
    const auto ids = prompt(n, V);
    const int64_t base = g_live.load();
    g_peak.store(base);
    s.prefill(ids);
    const int64_t peak = g_peak.load();
    if (logits) logits->assign(s.logits().begin(), s.logits().end());
    // Working memory: the peak above what the session keeps (its cache, tokens and logits row).
    return peak - base - s.cache().total_bytes() - int64_t(ids.size() * 4) - V * 4;
  };
  std::vector<float> whole, chunked;
  prefill(400, 1 << 20, &whole);
  const int64_t w_small = prefill(64, 32, nullptr), w_long = prefill(400, 32, &chunked);
  const int64_t w_one_pass = prefill(400, 1 << 20, nullptr);
  WARN(cache_type_name(type) << ": working memory of a prefill in chunks of 32: " << w_small << " B for 64 tokens, "
                             << w_long << " B for 400; in one pass of 400: " << w_one_pass << " B");
  REQUIRE(chunked.size() == whole.size());
  double err = 0;
  for (size_t i = 0; i < whole.size(); ++i) err = std::max(err, double(std::fabs(whole[i] - chunked[i])));
  CHECK(err < 1e-5);
  CHECK(w_long < w_small * 5 / 4 + 8192);  // what grows is O(entries): scores and ids of the visible ones
  CHECK(w_one_pass > 3 * w_small);         // and the measurement can tell: one pass grows with the prompt
  CHECK_THROWS_WITH(Session(m).set_prefill_chunk(0), Catch::Contains("prefill chunk"));
}

TEST_CASE("synthetic long context: the allocation of a real cache, and a step runs on it", "[cachefile][synthetic]") {
  const Model& m = tiny();
  for (CacheType t : {CacheType::F32, CacheType::BF16, CacheType::Compact}) {
    INFO("cache " << cache_type_name(t));
    SequenceCache c = m.new_cache(t);
    fill_synthetic_context(m, c, 5000);
    CHECK(c.position() == 5000);
    for (size_t l = 0; l < c.num_layers(); ++l)
      CHECK(c.layer_bytes(l) == predict_layer_cache_bytes(m.config(), m.config().layers[l], 5000, t).total());
    std::vector<int32_t> one{7};
    std::vector<float> a, b;
    SequenceInput in{&c, one};
    SequenceCache copy = c;
    m.forward<FastCpu>({&in, 1}, a, LogitRows::Last);
    SequenceInput in2{&copy, one};
    m.forward<Fp32Reference>({&in2, 1}, b, LogitRows::Last);
    REQUIRE(a.size() == size_t(m.config().vocab_size));
    double err = 0;
    for (size_t i = 0; i < a.size(); ++i) err = std::max(err, double(std::fabs(a[i] - b[i])));
    CHECK(std::isfinite(err));
    CHECK(err < 1e-2);  // fast against reference at a 5000-token context
    CHECK(c.position() == 5001);
    CHECK_THROWS_WITH(fill_synthetic_context(m, c, 10), Catch::Contains("empty"));
  }
}
