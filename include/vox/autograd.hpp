#pragma once
// Floor 3: the define-by-run tape, the backward engine, no_grad and checkpointing.
#include "vox/autograd/autocast_mode.hpp"
#include "vox/autograd/checkpoint.hpp"
#include "vox/autograd/engine.hpp"
#include "vox/autograd/grad_mode.hpp"
#include "vox/autograd/node.hpp"
