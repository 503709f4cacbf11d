// Runs a model on the GPU through the installed package and compares the last position's logits
// with the CPU oracle's. Without a CUDA device it says so and exits 0 (it was built: that is the check).
//   consumer_cuda MODEL_DIR
#include <cmath>
#include <cstdio>
#include <vector>

#include <dsv4/cuda/device_model.hpp>
#include <dsv4/dsv4.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer_cuda MODEL_DIR\n");
    return 2;
  }
  if (!dsv4::cuda::device_available()) {
    std::printf("built against the installed dsv4::cuda; no CUDA device to run it\n");
    return 0;
  }
  try {
    const dsv4::Model model = dsv4::Model::load(argv[1]);
    const std::vector<int32_t> ids{1, 5, 17, 42, 7, 99, 3};
    dsv4::SequenceCache cpu_cache = model.new_cache();
    dsv4::SequenceInput cpu_in{&cpu_cache, ids};
    std::vector<float> cpu, gpu;
    model.forward<dsv4::Fp32Reference>({&cpu_in, 1}, cpu, dsv4::LogitRows::Last);
    dsv4::cuda::DeviceModel device(model);
    dsv4::cuda::DeviceCache cache = device.new_cache();
    dsv4::cuda::DeviceSequenceInput in{&cache, ids};
    device.forward({&in, 1}, gpu, dsv4::LogitRows::Last);
    double err = 0;
    for (size_t i = 0; i < cpu.size(); ++i) err = std::fmax(err, std::fabs(double(cpu[i]) - double(gpu[i])));
    std::printf("GPU vs CPU max abs logit difference %.3g\n", err);
    return err < 5e-2 ? 0 : 1;
  } catch (const dsv4::Error& e) {
    std::fprintf(stderr, "consumer_cuda: %s\n", e.what());
    return 1;
  }
}
