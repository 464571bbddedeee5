#pragma once
// CUDA, cuBLAS and cuDNN failures become vox::Error, naming the call (with its arguments as written),
// the error and the place.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "vox/core/error.hpp"

namespace vox::cuda {

inline void check(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  throw Error(detail::concat("CUDA error ", cudaGetErrorName(status), " (", cudaGetErrorString(status), ") in ", call, " at ",
                             file, ":", line));
}

inline void check(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw Error(detail::concat("cuBLAS error ", cublasGetStatusName(status), " (", cublasGetStatusString(status), ") in ", call,
                             " at ", file, ":", line));
}

inline void check(cudnnStatus_t status, const char* call, const char* file, int line) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  char detail[512] = {};
  cudnnGetLastErrorString(detail, sizeof(detail));  // cuDNN's own account of the failure, if it kept one
  throw Error(detail::concat("cuDNN error ", cudnnGetErrorString(status), " in ", call, " at ", file, ":", line,
                             detail[0] ? ": " : "", detail));
}

}  // namespace vox::cuda

#define VOX_CUDA_CHECK(call) ::vox::cuda::check((call), #call, __FILE__, __LINE__)
#define VOX_CUDNN_CHECK(call) ::vox::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: a bad configuration is reported at once, not at the next sync.
#define VOX_CUDA_CHECK_LAUNCH(kernel) ::vox::cuda::check(cudaGetLastError(), "launch of " kernel, __FILE__, __LINE__)
