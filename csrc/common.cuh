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
//   arithmetic for speed must prove the problem fits first (offsets_fit_int32,
//   and the Divmod / Decode4 / Strides4 helpers below).
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

// Epilogue activation codes, as triton_kernels/_common.py ACTIVATIONS: none, relu,
// relu6, silu, gelu (exact, erf).  Never renumber.
enum Act : int { kNone = 0, kRelu = 1, kRelu6 = 2, kSilu = 3, kGelu = 4 };

inline bool valid_activation(int act) { return act >= kNone && act <= kGelu; }

// Whether a tensor of these sizes and (non-negative) element strides has its element
// count and every element offset below 2^31: the condition for a kernel's 32-bit
// index instantiation.  force_int64_indexing() (set from Python by
// _C._force_int64_indexing, for tests) makes every kernel take its 64-bit one.
inline bool& force_int64_indexing() {
  static bool force = false;
  return force;
}

inline bool offsets_fit_int32(index_t n, index_t c, index_t h, index_t w, const index_t* stride) {
  constexpr index_t kMax = 0x7fffffff;
  if (force_int64_indexing()) return false;
  if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return true;  // nothing is addressed
  if (n > kMax / c || n * c > kMax / h || n * c * h > kMax / w) return false;
  index_t last = 0;  // offset of the last element; every stride is >= 0
  const index_t extent[4] = {n, c, h, w};
  for (int d = 0; d < 4; ++d) {
    if (stride[d] < 0 || (stride[d] > 0 && extent[d] - 1 > (kMax - last) / stride[d])) return false;
    last += (extent[d] - 1) * stride[d];
  }
  return true;
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
#include <cmath>

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

// ---- 32-bit index arithmetic where the problem fits
//
// A GPU has no integer divider: n / d is a routine of about 20 instructions in 32
// bits and 70 in 64, and a 64-bit offset takes two registers and twice the
// multiply-adds.  Memory-bound kernels that decode a flat index into (n, c, h, w)
// per element are instantiated for I = int32_t (when offsets_fit_int32 proves every
// offset fits) and I = int64_t (the rest), and divide through Divmod<I>.

// Division by a divisor fixed at launch (>= 1).  Divmod<int32_t> is a multiply-high,
// an add and a shift (Granlund & Montgomery, "Division by invariant integers using
// multiplication", 1994; as PyTorch's IntDivider), exact for dividends in [0, 2^31);
// Divmod<int64_t> divides.
template <typename I>
struct Divmod;

template <>
struct Divmod<std::int32_t> {
  std::uint32_t d = 1, magic = 1, shift = 0;
  Divmod() = default;
  explicit Divmod(index_t divisor) : d(static_cast<std::uint32_t>(divisor)) {
    while (shift < 32 && (std::uint64_t{1} << shift) < d) ++shift;  // 2^shift >= d
    magic = static_cast<std::uint32_t>(
        ((std::uint64_t{1} << 32) * ((std::uint64_t{1} << shift) - d)) / d + 1);
  }
  FASTCNN_DEVICE std::int32_t div(std::int32_t n) const {
    const std::uint32_t u = static_cast<std::uint32_t>(n);
    return static_cast<std::int32_t>((__umulhi(u, magic) + u) >> shift);
  }
  // n / d, and n % d in rem
  FASTCNN_DEVICE std::int32_t divmod(std::int32_t n, std::int32_t& rem) const {
    const std::int32_t q = div(n);
    rem = n - q * static_cast<std::int32_t>(d);
    return q;
  }
};

template <>
struct Divmod<std::int64_t> {
  std::int64_t d = 1;
  Divmod() = default;
  explicit Divmod(index_t divisor) : d(divisor) {}
  FASTCNN_DEVICE std::int64_t div(std::int64_t n) const { return n / d; }
  FASTCNN_DEVICE std::int64_t divmod(std::int64_t n, std::int64_t& rem) const {
    const std::int64_t q = n / d;
    rem = n - q * d;
    return q;
  }
};

// i -> (n, c, h, w) of an (n, c, h, w) index space traversed w innermost (NCHW) or c
// innermost (channels_last): a grid-stride loop in the order of the tensor it writes
// has consecutive threads store to consecutive addresses.
template <typename I>
struct Decode4 {
  Divmod<I> d0, d1, d2;  // the three inner extents, innermost first
  bool channels_inner = false;
  Decode4() = default;
  Decode4(index_t c, index_t h, index_t w, bool channels_inner_)
      : d0(channels_inner_ ? c : w), d1(channels_inner_ ? w : h), d2(channels_inner_ ? h : c),
        channels_inner(channels_inner_) {}
  FASTCNN_DEVICE void operator()(I i, I& n, I& c, I& h, I& w) const {
    I r0, r1, r2;
    i = d0.divmod(i, r0);
    i = d1.divmod(i, r1);
    n = d2.divmod(i, r2);
    if (channels_inner) {
      c = r0, w = r1, h = r2;
    } else {
      w = r0, h = r1, c = r2;
    }
  }
};

// launch(std::int32_t{}) when `fits`, else launch(std::int64_t{}): a launcher's generic
// lambda instantiates its kernel for both index types and runs the one that applies.
template <typename Launch>
cudaError_t with_index_type(bool fits, Launch&& launch) {
  return fits ? launch(std::int32_t{}) : launch(std::int64_t{});
}

// Element strides of a 4-d tensor in the kernel's index type; all 0 for an absent
// (nullptr) tensor, whose strides are never used.
template <typename I>
struct Strides4 {
  I n = 0, c = 0, h = 0, w = 0;
  Strides4() = default;
  explicit Strides4(const index_t* s) {
    if (s == nullptr) return;
    n = static_cast<I>(s[0]), c = static_cast<I>(s[1]), h = static_cast<I>(s[2]),
    w = static_cast<I>(s[3]);
  }
  FASTCNN_DEVICE I at(I n_, I c_, I h_, I w_) const { return n_ * n + c_ * c + h_ * h + w_ * w; }
};

// ---- epilogue activations (codes: Act above)
// Applied in the accumulator type. relu / relu6 keep NaN, as torch.relu and the
// Triton epilogue do (fmax / fmin would return the other operand: relu(NaN) = 0).
// One body for float and double: the std:: overloads pick expf / erff for
// float (device overloads under nvcc, <cmath>'s in the host emulation).
template <typename A>
FASTCNN_DEVICE A activate(A z, int act) {
  using std::erf;
  using std::exp;
  switch (act) {
    case kRelu: return z < A(0) ? A(0) : z;
    case kRelu6: return z < A(0) ? A(0) : (z > A(6) ? A(6) : z);
    case kSilu: return z / (A(1) + exp(-z));
    case kGelu: return A(0.5) * z * (A(1) + erf(z * A(0.70710678118654752440)));
    default: return z;
  }
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
// for fp64).  The forward writes y = act(conv + bias + residual): residual (nullable,
// output-shaped, residual_stride) and the activation code (Act) form its epilogue.
// The weight gradient is written in full (zeros for an empty batch).
cudaError_t depthwise_conv2d_forward(index_t n, index_t c, index_t h, index_t w, int m, int kh,
                                     int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                                     index_t oh, index_t ow, const void* x,
                                     const index_t* x_stride, const void* weight,
                                     const index_t* w_stride, const void* bias,
                                     index_t bias_stride, const void* residual,
                                     const index_t* residual_stride, int activation, void* y,
                                     const index_t* y_stride, int dtype, cudaStream_t stream);
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
