// dsv4: the command-line tool. Other tools and checks drive the library through it.
//   dsv4 info --model DIR
//   dsv4 logits --model DIR --input IN.safetensors --out OUT.safetensors [--mode reference|fast]
//               [--chunks a,b,...] [--threads N]
//   dsv4 generate --model DIR --prompt-ids 5,17,42 --max-new-tokens N
//               [--greedy | --temperature T --top-p P --seed S] [--mode ...] [--ignore-eos]
// Errors: non-zero exit and one line on stderr.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "dsv4/dsv4.hpp"

namespace {

using namespace dsv4;

const char* kUsage =
    "usage: dsv4 <command> [options]\n"
    "  info      --model DIR\n"
    "  logits    --model DIR --input IN.safetensors --out OUT.safetensors [--mode reference|fast]\n"
    "            [--chunks a,b,...] [--threads N]\n"
    "  generate  --model DIR --prompt-ids 5,17,42 --max-new-tokens N [--greedy | --temperature T\n"
    "            --top-p P --seed S] [--mode reference|fast] [--threads N] [--ignore-eos]\n";

// --key value options and --flag switches, each checked against what the command accepts.
class Args {
 public:
  Args(int argc, char** argv, int first, const std::set<std::string>& keys, const std::set<std::string>& flags) {
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) fail("unexpected argument '", a, "'");
      std::string k = a.substr(2);
      if (flags.count(k)) {
        flags_.insert(k);
      } else if (keys.count(k)) {
        if (i + 1 >= argc) fail("option --", k, " needs a value");
        values_[k] = argv[++i];
      } else {
        fail("unknown option --", k);
      }
    }
  }
  bool has(const std::string& k) const { return values_.count(k) || flags_.count(k); }
  std::string get(const std::string& k) const {
    auto it = values_.find(k);
    if (it == values_.end()) fail("missing option --", k);
    return it->second;
  }
  std::string get(const std::string& k, const std::string& def) const { return has(k) ? get(k) : def; }

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> flags_;
};

int64_t parse_int(const std::string& s, const std::string& what) {
  try {
    size_t used = 0;
    long long v = std::stoll(s, &used);
    if (used == s.size()) return v;
  } catch (...) {
  }
  fail(what, ": '", s, "' is not an integer");
}

double parse_double(const std::string& s, const std::string& what) {
  try {
    size_t used = 0;
    double v = std::stod(s, &used);
    if (used == s.size()) return v;
  } catch (...) {
  }
  fail(what, ": '", s, "' is not a number");
}

std::vector<int64_t> parse_int_list(const std::string& s, const std::string& what) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    out.push_back(parse_int(s.substr(start, comma - start), what));
    start = comma + 1;
  }
  return out;
}

void apply_threads(const Args& a) {
  if (a.has("threads")) {
    int64_t n = parse_int(a.get("threads"), "--threads");
    if (n < 1 || n > 4096) fail("--threads: must be in [1, 4096]");
    set_num_threads(int(n));
  }
}

// Runs fn.template operator()<Bundle>() for the bundle --mode names. Until the fast kernels land,
// fast mode runs the reference bundle.
template <class Fn>
void with_mode(const Args& a, Fn&& fn) {
  std::string mode = a.get("mode", "fast");
  if (mode == "reference" || mode == "fast") fn.template operator()<Fp32Reference>();
  else fail("--mode: unknown mode '", mode, "' (reference or fast)");
}

int cmd_info(const Args& a) {
  const Model m = Model::load(a.get("model"));
  const ModelConfig& c = m.config();
  std::printf("model: %s (%s layout)\n", a.get("model").c_str(),
              m.layout() == TensorLayout::Release ? "release" : "transformers");
  std::printf("vocab %lld, hidden %lld, layers %lld, heads %lld x %lld (rope %lld), q_lora %lld, o_groups %lld x %lld\n",
              (long long)c.vocab_size, (long long)c.hidden_size, (long long)c.num_layers, (long long)c.num_heads,
              (long long)c.head_dim, (long long)c.rope_dim, (long long)c.q_lora_rank, (long long)c.o_groups,
              (long long)c.o_lora_rank);
  std::printf("experts %lld (top %lld, width %lld, shared %lld), window %lld, mHC streams %lld (sinkhorn %lld)\n",
              (long long)c.n_routed_experts, (long long)c.n_experts_per_tok, (long long)c.moe_intermediate_size,
              (long long)c.n_shared_experts, (long long)c.sliding_window, (long long)c.hc_mult,
              (long long)c.hc_sinkhorn_iters);
  if (c.index_topk)
    std::printf("indexer %lld heads x %lld, top-k %lld\n", (long long)c.index_n_heads, (long long)c.index_head_dim,
                (long long)c.index_topk);
  for (size_t l = 0; l < m.layers().size(); ++l) {
    const LayerConfig& lc = c.layers[l];
    int64_t bytes = 0;
    std::map<std::string, int> schemes;
    auto count = [&](const char*, const Matrix& w) { bytes += storage_bytes(w), ++schemes[scheme_name(w)]; };
    std::visit([&](auto& at) { at.for_each_matrix(count); }, m.layers()[l].attn);
    const MoeWeights& moe = m.layers()[l].moe;
    for (auto* e : {&moe.experts, &moe.shared})
      for (auto& x : *e) count("", x.w1), count("", x.w2), count("", x.w3);
    std::string sch;
    for (auto& [k, v] : schemes) sch += (sch.empty() ? "" : ", ") + k + " x" + std::to_string(v);
    std::printf("layer %2zu: %-7s ratio %-4lld router %-4s  %.2f MiB  [%s]\n", l, attention_kind_name(lc.attention),
                (long long)lc.compress_ratio, router_kind_name(lc.router), double(bytes) / (1 << 20), sch.c_str());
  }
  std::map<std::string, std::pair<int, size_t>> by_dtype;
  for (auto& [name, t] : m.checkpoint().tensors()) {
    auto& e = by_dtype[std::string(dtype_name(t.dtype))];
    ++e.first, e.second += t.nbytes;
  }
  for (auto& [dt, e] : by_dtype)
    std::printf("dtype %-8s %6d tensors %12zu bytes\n", dt.c_str(), e.first, e.second);
  std::printf("weights: %zu bytes in %zu tensors\n", m.checkpoint().total_bytes(), m.checkpoint().tensors().size());
  return 0;
}

// input_ids [S] or [B, S] (I64 or I32) from a safetensors file.
std::vector<std::vector<int32_t>> read_input_ids(const std::string& path, bool& batched) {
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
  const Model m = Model::load(a.get("model"));
  const int64_t B = int64_t(rows.size()), S = int64_t(rows[0].size()), V = m.config().vocab_size;
  std::vector<float> out(size_t(B * S * V));
  with_mode(a, [&]<class Bundle>() {
    std::vector<SequenceCache> caches;
    for (int64_t b = 0; b < B; ++b) caches.push_back(m.new_cache());
    int64_t done = 0;
    size_t next_chunk = 0;
    std::vector<float> logits;
    while (done < S) {
      int64_t n = S - done;                       // no --chunks: one pass
      if (!chunks.empty()) n = next_chunk < chunks.size() ? chunks[next_chunk++] : 1;  // then one at a time
      n = std::min(n, S - done);
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

int cmd_generate(const Args& a) {
  apply_threads(a);
  std::vector<int32_t> prompt;
  for (int64_t v : parse_int_list(a.get("prompt-ids"), "--prompt-ids")) {
    if (v < INT32_MIN || v > INT32_MAX) fail("--prompt-ids: ", v, " is out of range");
    prompt.push_back(int32_t(v));
  }
  const int64_t max_new = parse_int(a.get("max-new-tokens"), "--max-new-tokens");
  if (max_new < 0) fail("--max-new-tokens: must be >= 0");
  SamplingParams sp;
  const bool sampled = a.has("temperature") || a.has("top-p") || a.has("seed");
  if (a.has("greedy") && sampled) fail("--greedy cannot be combined with --temperature/--top-p/--seed");
  sp.greedy = !sampled;
  if (a.has("temperature")) sp.temperature = float(parse_double(a.get("temperature"), "--temperature"));
  if (a.has("top-p")) sp.top_p = float(parse_double(a.get("top-p"), "--top-p"));
  if (a.has("seed")) sp.seed = uint64_t(parse_int(a.get("seed"), "--seed"));
  Sampler sampler(sp);
  const Model m = Model::load(a.get("model"));
  const bool stop_at_eos = !a.has("ignore-eos");
  std::vector<int32_t> generated;
  with_mode(a, [&]<class Bundle>() {
    SequenceCache cache = m.new_cache();
    std::vector<float> logits;
    std::vector<int32_t> feed = prompt;
    const int64_t V = m.config().vocab_size;
    for (int64_t i = 0; i < max_new; ++i) {
      SequenceInput in{&cache, feed};
      m.forward<Bundle>({&in, 1}, logits, LogitRows::Last);
      int32_t next = sampler.next(std::span<const float>(logits).first(size_t(V)));
      generated.push_back(next);
      if (stop_at_eos && next == m.config().eos_token_id) break;
      feed.assign(1, next);
    }
  });
  for (size_t i = 0; i < generated.size(); ++i) std::printf("%s%d", i ? " " : "", generated[i]);
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs("dsv4: no command given (try 'dsv4 help')\n", stderr);
    return 2;
  }
  if (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "info") return cmd_info(Args(argc, argv, 2, {"model"}, {}));
    if (cmd == "logits")
      return cmd_logits(Args(argc, argv, 2, {"model", "input", "out", "mode", "chunks", "threads"}, {}));
    if (cmd == "generate")
      return cmd_generate(Args(argc, argv, 2,
                               {"model", "prompt-ids", "max-new-tokens", "temperature", "top-p", "seed", "mode", "threads"},
                               {"greedy", "ignore-eos"}));
    std::fprintf(stderr, "dsv4: unknown command '%s' (try 'dsv4 help')\n", cmd.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4 %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
