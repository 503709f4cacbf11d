// The shortest program that works: load a model and its tokenizer, stream a continuation.
//   embed MODEL_DIR "prompt" [max_new_tokens]   (MODEL_DIR holds config.json, *.safetensors, tokenizer.json)
#include <cstdlib>
#include <iostream>
#include <dsv4/dsv4.hpp>

int main(int argc, char** argv) try {
  if (argc < 3) return std::cerr << "usage: embed MODEL_DIR PROMPT [N]\n", 2;
  const dsv4::Model model = dsv4::Model::load(argv[1]);
  dsv4::Session session(model, dsv4::text::Tokenizer::load(argv[1]));
  session.prefill_text(argv[2], /*add_bos=*/true);

  dsv4::SamplingParams params;  // greedy; set greedy = false, temperature, top_p, seed to sample
  dsv4::Sampler sampler(params);
  dsv4::GenerationOptions options;
  options.max_new_tokens = argc > 3 ? std::atoi(argv[3]) : 32;
  const dsv4::GenerationResult r = session.generate(sampler, options, [](int32_t, std::string_view text) {
    std::cout << text << std::flush;  // text arrives as it is decoded
    return true;                      // false stops early
  });
  std::cout << "\n[" << r.tokens.size() << " tokens, " << r.tokens_per_second() << " tokens/s, "
            << dsv4::stop_reason_name(r.reason) << "]\n";
} catch (const dsv4::Error& e) {
  std::cerr << "embed: " << e.what() << "\n";
  return 1;
}
