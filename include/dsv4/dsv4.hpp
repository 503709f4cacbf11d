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
#include "dsv4/io/synth.hpp"
#include "dsv4/core/bandwidth.hpp"
