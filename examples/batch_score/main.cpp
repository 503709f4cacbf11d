// Batch scoring: the log-likelihood of several texts under a model, all texts in one forward pass
// (each is its own sequence with its own cache; the projections and experts run over all rows).
//   batch_score MODEL_DIR [--check] TEXT...     (no TEXT: one text per line of stdin)
// Prints, per text: total log-probability of its tokens after the first, token count, perplexity.
// --check also scores every text alone and fails unless the two agree to 1e-3 per token.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>
#include <dsv4/dsv4.hpp>

namespace {

struct Score {
  double logprob = 0;  // sum over tokens 1..n-1 of log p(token | the tokens before it)
  int64_t predicted = 0;
};

// logits: [rows, V], row i predicting token i + 1 of `ids`.
Score score(const float* logits, int64_t V, const std::vector<int32_t>& ids) {
  Score s;
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    const float* row = logits + int64_t(i) * V;
    double mx = row[0], sum = 0;
    for (int64_t v = 1; v < V; ++v) mx = std::max(mx, double(row[v]));
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
    s.logprob += double(row[ids[i + 1]]) - mx - std::log(sum);
    ++s.predicted;
  }
  return s;
}

// Scores every sequence of `texts` in one batched forward pass.
std::vector<Score> score_batch(const dsv4::Model& model, const std::vector<std::vector<int32_t>>& texts) {
  std::vector<dsv4::SequenceCache> caches;
  for (size_t i = 0; i < texts.size(); ++i) caches.push_back(model.new_cache());
  std::vector<dsv4::SequenceInput> batch;
  for (size_t i = 0; i < texts.size(); ++i) batch.push_back({&caches[i], texts[i]});
  std::vector<float> logits;  // [sum of tokens, V]
  model.forward<dsv4::FastCpu>(batch, logits, dsv4::LogitRows::All);
  const int64_t V = model.config().vocab_size;
  std::vector<Score> out;
  int64_t row = 0;
  for (const auto& ids : texts) {
    out.push_back(score(logits.data() + row * V, V, ids));
    row += int64_t(ids.size());
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) return std::cerr << "usage: batch_score MODEL_DIR [--check] [TEXT...]\n", 2;
  const dsv4::Model model = dsv4::Model::load(argv[1]);
  const dsv4::text::Tokenizer tok = dsv4::text::Tokenizer::load(argv[1]);
  bool check = false;
  std::vector<std::string> texts;
  for (int i = 2; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--check")) check = true;
    else texts.push_back(argv[i]);
  }
  if (texts.empty())
    for (std::string line; std::getline(std::cin, line);)
      if (!line.empty()) texts.push_back(line);
  std::vector<std::vector<int32_t>> ids;
  for (const auto& t : texts) ids.push_back(tok.encode(t, /*add_bos=*/true));

  const std::vector<Score> scores = score_batch(model, ids);
  std::printf("%12s %7s %10s  text\n", "logprob", "tokens", "perplexity");
  for (size_t i = 0; i < texts.size(); ++i) {
    const Score& s = scores[i];
    const double ppl = s.predicted ? std::exp(-s.logprob / double(s.predicted)) : 0.0;
    std::printf("%12.4f %7lld %10.3f  %s\n", s.logprob, (long long)s.predicted, ppl, texts[i].c_str());
  }
  if (check) {
    for (size_t i = 0; i < texts.size(); ++i) {
      const Score alone = score_batch(model, {ids[i]})[0];
      const double diff = std::fabs(alone.logprob - scores[i].logprob);
      if (diff > 1e-3 * double(std::max<int64_t>(1, alone.predicted))) {
        std::fprintf(stderr, "batch_score: text %zu scores %.6f in the batch but %.6f alone\n", i,
                     scores[i].logprob, alone.logprob);
        return 1;
      }
    }
    std::printf("check: batched and one-at-a-time scores agree\n");
  }
} catch (const dsv4::Error& e) {
  std::cerr << "batch_score: " << e.what() << "\n";
  return 1;
}
