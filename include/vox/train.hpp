#pragma once
// Floor 7: losses (and, to come, the training loop, metrics and inference).
#include "vox/train/losses.hpp"
