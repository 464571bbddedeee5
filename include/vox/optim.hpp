#pragma once
// Floor 6: optimizers.
#include "vox/optim/adam.hpp"
#include "vox/optim/clip.hpp"
#include "vox/optim/optimizer.hpp"
#include "vox/optim/sgd.hpp"
