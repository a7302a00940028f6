// smoke.cu: one small real kernel that proves the csrc path end to end
// (nvcc build, pybind11 binding, raw pointers and a stream from PyTorch,
// error reporting).  out = alpha * x + beta * y over n contiguous elements.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common.cuh"

namespace fastcnn {
namespace {

// Load/store in the storage type, compute in Acc (fp32, or fp64 for fp64).
template <typename T, typename Acc>
struct Convert {
  static FASTCNN_DEVICE Acc load(T v) { return static_cast<Acc>(v); }
  static FASTCNN_DEVICE T store(Acc v) { return static_cast<T>(v); }
};
template <>
struct Convert<__half, float> {
  static FASTCNN_DEVICE float load(__half v) { return __half2float(v); }
  static FASTCNN_DEVICE __half store(float v) { return __float2half_rn(v); }
};
template <>
struct Convert<__nv_bfloat16, float> {
  static FASTCNN_DEVICE float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static FASTCNN_DEVICE __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

template <typename T, typename Acc>
__global__ void axpby_kernel(index_t n, Acc alpha, const T* __restrict__ x, Acc beta,
                             const T* __restrict__ y, T* __restrict__ out) {
  using C = Convert<T, Acc>;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = C::store(alpha * C::load(x[i]) + beta * C::load(y[i]));
  }
}

template <typename T, typename Acc>
cudaError_t launch_axpby(index_t n, double alpha, const void* x, double beta, const void* y,
                         void* out, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const unsigned int blocks = grid_stride_blocks(n, kThreads);
  axpby_kernel<T, Acc><<<blocks, kThreads, 0, stream>>>(
      n, static_cast<Acc>(alpha), static_cast<const T*>(x), static_cast<Acc>(beta),
      static_cast<const T*>(y), static_cast<T*>(out));
  FASTCNN_CHECK_LAUNCH();
  return cudaSuccess;
}

}  // namespace

cudaError_t axpby(index_t n, double alpha, const void* x, double beta, const void* y,
                  void* out, int dtype, cudaStream_t stream) {
  FASTCNN_REQUIRE(n >= 0);
  FASTCNN_REQUIRE(dtype == kFloat32 || dtype == kFloat16 || dtype == kBFloat16 ||
                  dtype == kFloat64);
  if (n == 0) return cudaSuccess;
  FASTCNN_REQUIRE(x != nullptr && y != nullptr && out != nullptr);
  switch (dtype) {
    case kFloat32: return launch_axpby<float, float>(n, alpha, x, beta, y, out, stream);
    case kFloat16: return launch_axpby<__half, float>(n, alpha, x, beta, y, out, stream);
    case kBFloat16:
      return launch_axpby<__nv_bfloat16, float>(n, alpha, x, beta, y, out, stream);
    case kFloat64: return launch_axpby<double, double>(n, alpha, x, beta, y, out, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace fastcnn
