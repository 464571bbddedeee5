#pragma once
// Floor 5: modules, layers and models.
#include "vox/nn/dynamic.hpp"
#include "vox/nn/init.hpp"
#include "vox/nn/layers.hpp"
#include "vox/nn/models/monai_unet.hpp"
#include "vox/nn/module.hpp"
