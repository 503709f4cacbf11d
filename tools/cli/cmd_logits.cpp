// dsv4 logits: logits of input_ids, in one pass or chunks, as safetensors.
#include <cstdio>

#include "common.hpp"
#include <climits>

namespace dsv4::cli {

// input_ids [S] or [B, S] (I64 or I32) from a safetensors file.
static std::vector<std::vector<int32_t>> read_input_ids(const std::string& path, bool& batched) {
  MappedFile f(path);
  for (const TensorView& t : parse_safetensors({f.data(), f.size()}, path)) {
    if (t.name != "input_ids") continue;
    if (t.dtype != DType::I64 && t.dtype != DType::I32)
      fail(path, ": tensor 'input_ids' has dtype ", dtype_name(t.dtype), ", expected I64 or I32");
    if (t.shape.size() != 1 && t.shape.size() != 2)
      fail(path, ": tensor 'input_ids' has shape ", shape_str(t.shape), ", expected [S] or [B, S]");
    batched = t.shape.size() == 2;
    const int64_t B = batched ? t.shape[0] : 1, S = t.shape.back();
    if (B == 0 || S == 0) fail(path, ": tensor 'input_ids' is empty (shape ", shape_str(t.shape), ")");
    std::vector<std::vector<int32_t>> rows(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < S; ++s) {
        int64_t v = t.int_at(b * S + s);
        if (v < INT32_MIN || v > INT32_MAX) fail(path, ": input_ids[", b * S + s, "] = ", v, " is out of range");
        rows[size_t(b)].push_back(int32_t(v));
      }
    return rows;
  }
  fail(path, ": no tensor 'input_ids'");
}

int cmd_logits(const Args& a) {
  apply_threads(a);
  bool batched = false;
  const auto rows = read_input_ids(a.get("input"), batched);
  const std::string out_path = a.get("out");
  std::vector<int64_t> chunks;
  if (a.has("chunks")) {
    chunks = parse_int_list(a.get("chunks"), "--chunks");
    for (auto c : chunks)
      if (c < 1) fail("--chunks: chunk sizes must be >= 1");
  }
  const bool gpu = cuda_backend(a);
  const CacheType type = cache_type(a);
  if (gpu && type != CacheType::F32) fail("--cache-type ", cache_type_name(type), ": the CUDA backend keeps an f32 cache");
  const Model m = load_model(a);
  const int64_t B = int64_t(rows.size()), S = int64_t(rows[0].size()), V = m.config().vocab_size;
  std::vector<float> out(size_t(B * S * V));
  // The chunk sizes in order: one pass without --chunks; after the listed ones, one token at a time.
  auto chunk_sizes = [&]() {
    std::vector<int64_t> sizes;
    for (int64_t done = 0, next = 0; done < S;) {
      int64_t n = chunks.empty() ? S : next < int64_t(chunks.size()) ? chunks[size_t(next++)] : 1;
      n = std::min(n, S - done);
      sizes.push_back(n);
      done += n;
    }
    return sizes;
  };
#if defined(DSV4_WITH_CUDA)
  if (gpu) {
    cuda::DeviceOptions o = device_options(parse_kernel_mode(a.get("mode", "fast")));
    o.max_context = std::max<int64_t>(S, 1);
    cuda::DeviceModel gm(m, o);
    std::vector<cuda::DeviceCache> caches;
    for (int64_t b = 0; b < B; ++b) caches.push_back(gm.new_cache());
    std::vector<float> logits;
    int64_t done = 0;
    for (int64_t n : chunk_sizes()) {
      std::vector<cuda::DeviceSequenceInput> batch;
      for (int64_t b = 0; b < B; ++b)
        batch.push_back({&caches[size_t(b)], std::span<const int32_t>(rows[size_t(b)]).subspan(size_t(done), size_t(n))});
      gm.forward(batch, logits, LogitRows::All);
      for (int64_t b = 0; b < B; ++b)
        std::copy_n(&logits[size_t(b * n * V)], n * V, &out[size_t((b * S + done) * V)]);
      done += n;
    }
    write_safetensors(out_path, {out_tensor_f32("logits", batched ? Shape{B, S, V} : Shape{S, V}, out)});
    return 0;
  }
#endif
  (void)gpu;
  with_mode(a, [&]<class Bundle>() {
    std::vector<SequenceCache> caches;
    for (int64_t b = 0; b < B; ++b) caches.push_back(m.new_cache(type));
    int64_t done = 0;
    std::vector<float> logits;
    for (int64_t n : chunk_sizes()) {
      std::vector<SequenceInput> batch;
      for (int64_t b = 0; b < B; ++b)
        batch.push_back({&caches[size_t(b)], std::span<const int32_t>(rows[size_t(b)]).subspan(size_t(done), size_t(n))});
      m.forward<Bundle>(batch, logits, LogitRows::All);
      for (int64_t b = 0; b < B; ++b)
        std::copy_n(&logits[size_t(b * n * V)], n * V, &out[size_t((b * S + done) * V)]);
      done += n;
    }
  });
  Shape shape = batched ? Shape{B, S, V} : Shape{S, V};
  write_safetensors(out_path, {out_tensor_f32("logits", shape, out)});
  return 0;
}


}  // namespace dsv4::cli
