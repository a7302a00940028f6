// fastcnn csrc: conventions shared by every kernel file and by bindings.cpp.
//
// The csrc layer (DESIGN.md) holds CUDA C++ kernels and ONE pybind11 module,
// fastcnn._C.  Entry points take raw device pointers, sizes, strides and a
// cudaStream_t; they never allocate and never include libtorch headers, so one
// build works with any torch version and compiles on a machine with no GPU.
//
// Conventions
// -----------
// * Every entry point is a host function in namespace fastcnn that returns
//   cudaError_t: cudaSuccess, cudaErrorInvalidValue for bad arguments, or the
//   error the launch produced.  Entry points never throw and never print;
//   bindings.cpp turns a non-success code into a Python RuntimeError that names
//   the op (see check_status there).
// * Entry points validate their arguments (negative sizes, null pointers when
//   there is work to do, unknown dtype codes) and return cudaErrorInvalidValue
//   instead of launching.  A zero-sized problem returns cudaSuccess without
//   launching (a zero-sized grid is itself a launch error).
// * Indices and sizes are 64-bit (index_t); a kernel that wants 32-bit
//   arithmetic for speed must prove the problem fits first.
// * After each <<<>>> launch use FASTCNN_CHECK_LAUNCH(); wrap other runtime
//   calls in FASTCNN_CHECK(...).
// * Each kernel file declares its entry points in the "entry points" section at
//   the bottom of this header, which is also included by bindings.cpp; so this
//   header must stay valid for the host C++ compiler (no device code outside
//   the __CUDACC__ block).
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

namespace fastcnn {

// 64-bit index / size type used by every kernel.
using index_t = std::int64_t;

// dtype codes shared by the kernels, the bindings (exported as _C.DTYPE_*) and
// fastcnn/_ext.py.  Never renumber: Python code maps torch dtypes to these.
enum DType : int {
  kFloat32 = 0,
  kFloat16 = 1,
  kBFloat16 = 2,
  kFloat64 = 3,
};

inline const char* dtype_name(int code) {
  switch (code) {
    case kFloat32: return "float32";
    case kFloat16: return "float16";
    case kBFloat16: return "bfloat16";
    case kFloat64: return "float64";
    default: return "unknown";
  }
}

}  // namespace fastcnn

// Return the error of a runtime call from the enclosing entry point.
#define FASTCNN_CHECK(expr)                        \
  do {                                             \
    cudaError_t fastcnn_err_ = (expr);             \
    if (fastcnn_err_ != cudaSuccess) return fastcnn_err_; \
  } while (0)

// Put right after every kernel launch: returns the launch error (bad
// configuration, no kernel image for this device, ...) from the entry point.
// Errors raised while the kernel runs are asynchronous and surface at the next
// synchronising call, as they do in PyTorch.
#define FASTCNN_CHECK_LAUNCH() FASTCNN_CHECK(cudaGetLastError())

// Argument check inside an entry point.
#define FASTCNN_REQUIRE(cond)                                  \
  do {                                                         \
    if (!(cond)) return cudaErrorInvalidValue;                 \
  } while (0)

#if defined(__CUDACC__)
#define FASTCNN_HOST_DEVICE __host__ __device__ __forceinline__
#define FASTCNN_DEVICE __device__ __forceinline__

namespace fastcnn {

// Grid size for a grid-stride loop over n elements: enough blocks to fill the
// GPU, capped so that huge n does not launch millions of blocks.
inline unsigned int grid_stride_blocks(index_t n, int threads, unsigned int max_blocks = 65535u) {
  index_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > static_cast<index_t>(max_blocks)) blocks = max_blocks;
  return static_cast<unsigned int>(blocks);
}

}  // namespace fastcnn
#endif  // __CUDACC__

// ---------------------------------------------------------------------------
// Entry points (one block per kernel file).  Plain host declarations only.
// ---------------------------------------------------------------------------
namespace fastcnn {

// smoke.cu: out[i] = alpha * x[i] + beta * y[i] for i in [0, n), contiguous
// buffers of dtype `dtype` (a DType code); computed in fp32 (fp64 for fp64).
cudaError_t axpby(index_t n, double alpha, const void* x, double beta, const void* y,
                  void* out, int dtype, cudaStream_t stream);

// lrn.cu: local response normalization over an (n, c, h, w) tensor; every
// *_stride is a host array of 4 element strides (any layout, 0 allowed).
// Across channels (within == false) or over a size x size spatial window
// (within == true); alpha is divided by size (size^2).  scale (nullable in the
// forward: then not written) is float for fp32/fp16/bf16 and double for fp64.
cudaError_t lrn_forward(index_t n, index_t c, index_t h, index_t w, int size, double alpha,
                        double beta, double k, bool within, const void* x,
                        const index_t* x_stride, void* y, const index_t* y_stride, void* scale,
                        const index_t* scale_stride, int dtype, cudaStream_t stream);
cudaError_t lrn_backward(index_t n, index_t c, index_t h, index_t w, int size, double alpha,
                         double beta, double k, bool within, const void* dy,
                         const index_t* dy_stride, const void* x, const index_t* x_stride,
                         const void* y, const index_t* y_stride, const void* scale,
                         const index_t* scale_stride, void* dx, const index_t* dx_stride,
                         int dtype, cudaStream_t stream);

// depthwise.cu: depthwise convolution, input (n, c, h, w), weight (c * m, 1, kh, kw),
// output (n, c * m, oh, ow) with oh / ow the convolution's output size for stride
// (sh, sw), padding (ph, pw), dilation (dh, dw).  Every *_stride is a host array of
// 4 element strides; bias (nullable) has bias_stride.  Accumulates in fp32 (fp64
// for fp64).  The weight gradient is written in full (zeros for an empty batch).
cudaError_t depthwise_conv2d_forward(index_t n, index_t c, index_t h, index_t w, int m, int kh,
                                     int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                                     index_t oh, index_t ow, const void* x,
                                     const index_t* x_stride, const void* weight,
                                     const index_t* w_stride, const void* bias,
                                     index_t bias_stride, void* y, const index_t* y_stride,
                                     int dtype, cudaStream_t stream);
cudaError_t depthwise_conv2d_input_grad(index_t n, index_t c, index_t h, index_t w, int m,
                                        int kh, int kw, int sh, int sw, int ph, int pw, int dh,
                                        int dw, index_t oh, index_t ow, const void* dy,
                                        const index_t* dy_stride, const void* weight,
                                        const index_t* w_stride, void* dx,
                                        const index_t* dx_stride, int dtype,
                                        cudaStream_t stream);
cudaError_t depthwise_conv2d_weight_grad(index_t n, index_t c, index_t h, index_t w, int m,
                                         int kh, int kw, int sh, int sw, int ph, int pw, int dh,
                                         int dw, index_t oh, index_t ow, const void* dy,
                                         const index_t* dy_stride, const void* x,
                                         const index_t* x_stride, void* dweight,
                                         const index_t* dw_stride, int dtype,
                                         cudaStream_t stream);

}  // namespace fastcnn
