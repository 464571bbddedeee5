#pragma once
// Floor 5: modules, layers and models.
#include "vox/nn/attention.hpp"
#include "vox/nn/dynamic.hpp"
#include "vox/nn/init.hpp"
#include "vox/nn/layers.hpp"
#include "vox/nn/models/attention_unet.hpp"
#include "vox/nn/models/monai_unet.hpp"
#include "vox/nn/models/nnunet.hpp"
#include "vox/nn/models/registry.hpp"
#include "vox/nn/models/resnet.hpp"
#include "vox/nn/models/unet3d.hpp"
#include "vox/nn/module.hpp"
