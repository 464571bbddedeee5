#pragma once
// vox::parallel_for and the thread count, shared with the floor-1 CPU kernels.
#include "kernels/cpu/parallel.hpp"

namespace vox {
using kernels::cpu::num_threads;
using kernels::cpu::parallel_for;
using kernels::cpu::set_num_threads;
}  // namespace vox
