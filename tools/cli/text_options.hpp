#pragma once
// Options shared by the text commands (generate --prompt, chat): the tokenizer's folder, the
// sampling controls and the stop conditions.
#include <climits>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <unistd.h>
#include <vector>
#include <string>

#include "common.hpp"
#include "dsv4/generation/chat.hpp"
#include "dsv4/generation/session.hpp"
#include "dsv4/text/tokenizer.hpp"

namespace dsv4::cli {

// --greedy (the default), or sampling as soon as one of temperature/top-k/top-p/min-p/seed is
// given; the penalties apply to both.
inline SamplingParams sampling_params(const Args& a) {
  SamplingParams sp;
  const bool sampled = a.has("temperature") || a.has("top-k") || a.has("top-p") || a.has("min-p") || a.has("seed");
  if (a.has("greedy") && sampled) fail("--greedy cannot be combined with --temperature/--top-k/--top-p/--min-p/--seed");
  sp.greedy = !sampled;
  auto f = [&](const char* key, float& v) {
    if (a.has(key)) v = float(parse_double(a.get(key), std::string("--") + key));
  };
  f("temperature", sp.temperature);
  f("top-p", sp.top_p);
  f("min-p", sp.min_p);
  f("repetition-penalty", sp.repetition_penalty);
  f("frequency-penalty", sp.frequency_penalty);
  f("presence-penalty", sp.presence_penalty);
  if (a.has("top-k")) {
    const int64_t k = parse_int(a.get("top-k"), "--top-k");
    if (k < 0 || k > INT32_MAX) fail("--top-k: must be in [0, 2^31)");
    sp.top_k = int32_t(k);
  }
  if (a.has("seed")) sp.seed = uint64_t(parse_int(a.get("seed"), "--seed"));
  sp.validate();
  return sp;
}

// --max-new-tokens (default `def`), --stop STRING, --ignore-eos.
inline GenerationOptions generation_options(const Args& a, int64_t def) {
  GenerationOptions g;
  g.max_new_tokens = a.has("max-new-tokens") ? parse_int(a.get("max-new-tokens"), "--max-new-tokens") : def;
  if (g.max_new_tokens < 0) fail("--max-new-tokens: must be >= 0");
  if (a.has("stop")) {
    if (a.get("stop").empty()) fail("--stop: the stop string is empty");
    g.stop_strings.push_back(a.get("stop"));
  }
  g.stop_at_eos = !a.has("ignore-eos");
  return g;
}

// --mode reference|fast (default fast).
inline KernelMode kernel_mode(const Args& a) {
  const std::string m = a.get("mode", "fast");
  if (m == "reference") return KernelMode::Reference;
  if (m == "fast") return KernelMode::Fast;
  fail("--mode: unknown mode '", m, "' (reference or fast)");
}

// --tokenizer DIR, else the model's folder.
inline text::Tokenizer load_tokenizer(const Args& a) {
  const std::string dir = a.has("tokenizer") ? a.get("tokenizer") : a.has("model") ? a.get("model") : "";
  if (dir.empty()) fail("missing option --tokenizer");
  std::error_code ec;
  if (!a.has("tokenizer") && !std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json", ec))
    fail(dir, ": no tokenizer.json in the model folder (give --tokenizer DIR)");
  return text::Tokenizer::load(dir);
}

// Reads the checkpoint's *.safetensors files once so that the first forward pass does not page
// them in one fault at a time, with a progress bar on stderr when it is a terminal and the files
// are large. Skipped when they would not fit in 80% of the physical memory (then the reads would
// only evict each other).
inline void preload_checkpoint(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".safetensors") continue;
    files.push_back(e.path());
    total += uint64_t(e.file_size(ec));
  }
  const double ram = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE));
  if (files.empty() || (ram > 0 && double(total) > 0.8 * ram)) return;
  const bool bar = isatty(STDERR_FILENO) && total > (uint64_t(1) << 30);
  std::vector<char> buf(size_t(16) << 20);
  uint64_t done = 0;
  int shown = -1;
  for (const fs::path& f : files) {
    FILE* in = std::fopen(f.c_str(), "rb");
    if (!in) continue;  // Model::load reports unreadable files
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), in)) > 0) {
      done += n;
      const int pct = int(100.0 * double(done) / double(total));
      if (bar && pct != shown) {
        shown = pct;
        const int w = pct / 4;
        std::fprintf(stderr, "\rloading %s [%.*s%*s] %3d%% of %.1f GB", dir.c_str(), w,
                     "#########################", 25 - w, "", pct, double(total) / 1e9);
        std::fflush(stderr);
      }
    }
    std::fclose(in);
  }
  if (bar) std::fputs("\n", stderr);
}

}  // namespace dsv4::cli
