#pragma once
// The one header most users include.
#include "dsv4/core/error.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/io/checkpoint.hpp"
#include "dsv4/io/config_json.hpp"
#include "dsv4/io/safetensors.hpp"
#include "dsv4/kernels/bundle.hpp"
#include "dsv4/kernels/cpu/fast_bundle.hpp"
#include "dsv4/model/model.hpp"
#include "dsv4/sampling/sampler.hpp"
#include "dsv4/text/tokenizer.hpp"
#include "dsv4/generation/session.hpp"
#include "dsv4/generation/chat.hpp"
#include "dsv4/serving/batch_engine.hpp"
#include "dsv4/io/synth.hpp"
#include "dsv4/io/cache_file.hpp"
#include "dsv4/model/synthetic_context.hpp"
#include "dsv4/core/bandwidth.hpp"

#if defined(DSV4_MULTIARCH)
// Built with the compiled component (dsv4::cpu_kernels): the forward pass of both bundles is
// instantiated once there (src/model_instances.cpp) instead of in every translation unit.
namespace dsv4 {
extern template void Model::forward<Fp32Reference>(std::span<const SequenceInput>, std::vector<float>&, LogitRows,
                                                   ForwardTrace*) const;
extern template void Model::forward<FastCpu>(std::span<const SequenceInput>, std::vector<float>&, LogitRows,
                                             ForwardTrace*) const;
}  // namespace dsv4
#endif
