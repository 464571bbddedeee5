#pragma once
// Floor 6: mixed precision. Autocast scopes over the ops' cast policy (vox/ops/autocast.hpp) and
// the dynamic loss scaler.
#include "vox/amp/autocast.hpp"
#include "vox/amp/grad_scaler.hpp"
#include "vox/ops/autocast.hpp"
