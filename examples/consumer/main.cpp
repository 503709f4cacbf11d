// The smallest useful program: load a checkpoint, greedily continue a prompt of token ids.
//   consumer MODEL_DIR [N]
#include <cstdio>
#include <cstdlib>
#include <dsv4/dsv4.hpp>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: consumer MODEL_DIR [N]\n");
    return 2;
  }
  try {
    const dsv4::Model model = dsv4::Model::load(argv[1]);
    dsv4::SequenceCache cache = model.new_cache();
    std::vector<int32_t> feed = {5, 17, 42};
    std::vector<float> logits;
    const int n = argc > 2 ? std::atoi(argv[2]) : 8;
    for (int i = 0; i < n; ++i) {
      dsv4::SequenceInput in{&cache, feed};
      model.forward<dsv4::Fp32Reference>({&in, 1}, logits, dsv4::LogitRows::Last);
      feed = {dsv4::argmax(logits)};
      std::printf("%s%d", i ? " " : "", feed[0]);
    }
    std::printf("\n");
  } catch (const dsv4::Error& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
