// The forward pass of both CPU bundles, instantiated once for everything that links
// dsv4::cpu_kernels (compiled for the baseline ISA; the kernels it calls are dispatched).
#include "dsv4/dsv4.hpp"

namespace dsv4 {
template void Model::forward<Fp32Reference>(std::span<const SequenceInput>, std::vector<float>&, LogitRows,
                                            ForwardTrace*) const;
template void Model::forward<FastCpu>(std::span<const SequenceInput>, std::vector<float>&, LogitRows,
                                      ForwardTrace*) const;
}  // namespace dsv4
