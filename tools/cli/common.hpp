#pragma once
// Shared pieces of the dsv4 command-line tool: option parsing and the --mode dispatch.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "dsv4/dsv4.hpp"
#if defined(DSV4_WITH_CUDA)
#include "dsv4/cuda/device_model.hpp"
#include "dsv4/cuda/nccl_communicator.hpp"
#endif

namespace dsv4::cli {

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

inline int64_t parse_int(const std::string& s, const std::string& what) {
  try {
    size_t used = 0;
    long long v = std::stoll(s, &used);
    if (used == s.size()) return v;
  } catch (...) {
  }
  fail(what, ": '", s, "' is not an integer");
}

inline double parse_double(const std::string& s, const std::string& what) {
  try {
    size_t used = 0;
    double v = std::stod(s, &used);
    if (used == s.size()) return v;
  } catch (...) {
  }
  fail(what, ": '", s, "' is not a number");
}

inline std::vector<int64_t> parse_int_list(const std::string& s, const std::string& what) {
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

inline void apply_threads(const Args& a) {
  if (a.has("threads")) {
    int64_t n = parse_int(a.get("threads"), "--threads");
    if (n < 1 || n > 4096) fail("--threads: must be in [1, 4096]");
    set_num_threads(int(n));
  }
}

// The ranks this process runs with: set by main when an MPI launcher started it (each rank then
// holds a share of every MoE layer's experts), one process otherwise.
inline Distribution& process_distribution() {
  static Distribution d;
  return d;
}

// --parallel expert (the default) or tensor: how the ranks of an MPI launch split the model.
inline Model load_model(const Args& a) {
  Distribution d = process_distribution();
  const std::string how = a.get("parallel", "expert");
  if (how != "expert" && how != "tensor") fail("--parallel: '", how, "' is not one of expert, tensor");
  d.tensor = how == "tensor";
  return Model::load(a.get("model"), d);
}

// Runs fn.template operator()<Bundle>() for the bundle --mode names.
template <class Fn>
void with_mode(const Args& a, Fn&& fn) {
  std::string mode = a.get("mode", "fast");
  if (mode == "reference") fn.template operator()<Fp32Reference>();
  else if (mode == "fast") fn.template operator()<FastCpu>();
  else fail("--mode: unknown mode '", mode, "' (reference or fast)");
}

// --cache-type f32 (default), bf16 or compact (model/cache_type.hpp).
inline CacheType cache_type(const Args& a) {
  const std::string t = a.get("cache-type", "f32");
  if (t != "f32" && t != "bf16" && t != "compact") fail("--cache-type: unknown type '", t, "' (f32, bf16 or compact)");
  return parse_cache_type(t);
}

// --backend cpu (default) or cuda; cuda only where this tool was built with the CUDA backend.
inline bool cuda_backend(const Args& a) {
  const std::string b = a.get("backend", "cpu");
  if (b != "cpu" && b != "cuda") fail("--backend: unknown backend '", b, "' (cpu or cuda)");
#if !defined(DSV4_WITH_CUDA)
  if (b == "cuda") fail("--backend cuda: this dsv4 was built without the CUDA backend (configure with nvcc present, -DDSV4_WITH_CUDA=ON)");
#endif
  return b == "cuda";
}

#if defined(DSV4_WITH_CUDA)
// --backend cuda under mpirun: one GPU per rank, the MoE shares and the head's blocks exchanged
// through NCCL (null for one process). Made on first use, on every rank alike; it picks and sets this
// rank's GPU, so it comes before the DeviceModel. Never destroyed: the process ends with it.
inline cuda::DeviceCommunicator* process_device_comm() {
  const Distribution& d = process_distribution();
  if (!d.split()) return nullptr;
#if defined(DSV4_WITH_NCCL)
  static cuda::NcclCommunicator* nccl = new cuda::NcclCommunicator(*d.comm);
  return nccl;
#else
  fail("--backend cuda under mpirun needs NCCL: this dsv4 was built without it (configure where nccl.h and "
       "libnccl are found, -DDSV4_WITH_NCCL=ON)");
#endif
}

// DeviceOptions for this process: the mode, and the device collective when split over ranks.
inline cuda::DeviceOptions device_options(KernelMode mode) {
  cuda::DeviceOptions o;
  o.mode = mode;
  o.comm = process_device_comm();
  return o;
}
#endif

// Commands: each returns the exit code; errors are thrown as dsv4::Error.
int cmd_info(const Args& a);
int cmd_logits(const Args& a);
int cmd_generate(const Args& a);
int cmd_synth(const Args& a);
int cmd_bench(const Args& a);
int cmd_kv(const Args& a);

}  // namespace dsv4::cli
