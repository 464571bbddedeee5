#pragma once
// Data parallelism: process groups (a world of one, MPI), the bucketed gradient reducer
// (DataParallel) and SyncBatchNorm. See vox/dist/*.hpp.
#include "vox/dist/all_reduce.hpp"
#include "vox/dist/data_parallel.hpp"
#include "vox/dist/init.hpp"
#include "vox/dist/launch_environment.hpp"
#include "vox/dist/process_group.hpp"
#include "vox/dist/sync_batch_norm.hpp"
