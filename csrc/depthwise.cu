// depthwise.cu: depthwise 2-D convolution (groups == input channels, channel
// multiplier m: output channel k reads input channel k / m), forward (with a
// bias + residual + activation epilogue), input
// gradient and weight gradient, for fp32 / fp16 / bf16 (fp32 accumulation) and
// fp64.
//
// Design
// ------
// * Every tensor is addressed through its own 4 element strides, so NCHW,
//   channels_last, sliced and stride-0 expanded tensors need no copies.
// * forward / input gradient: one thread per output element in a grid-stride
//   loop; the traversal follows the output's layout (channel innermost for
//   channels_last, w innermost for NCHW), so a warp's loads of x / dy and its
//   stores coalesce in both layouts.  The weight (k x kh x kw, tiny) stays in L1.
//   The input gradient is a gather (no atomics): each dx element sums the dy
//   taps that read it, skipping stride phases that do not divide.
// * The forward's epilogue adds bias and residual and applies the activation in
//   the accumulator type before the single rounding store, so a folded
//   conv -> BatchNorm -> (+ residual) -> ReLU block is one pass over memory.
// * Every kernel exists for 32-bit and 64-bit indices (see common.cuh): the 32-bit
//   one, taken when offsets_fit_int32 holds for every tensor, replaces the per-element
//   and per-tap integer divisions with multiply-shift ones (Divmod).
// * weight gradient: one block per weight element (k, r, s) reduces dy * x over
//   the N * OH * OW output pixels with a fixed-order shared-memory tree:
//   deterministic, no atomics.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common.cuh"

namespace fastcnn {
namespace {

template <typename T, typename Acc>
struct DwConvert {
  static FASTCNN_DEVICE Acc load(T v) { return static_cast<Acc>(v); }
  static FASTCNN_DEVICE T store(Acc v) { return static_cast<T>(v); }
};
template <>
struct DwConvert<__half, float> {
  static FASTCNN_DEVICE float load(__half v) { return __half2float(v); }
  static FASTCNN_DEVICE __half store(float v) { return __float2half_rn(v); }
};
template <>
struct DwConvert<__nv_bfloat16, float> {
  static FASTCNN_DEVICE float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static FASTCNN_DEVICE __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

// Sizes of one call in the kernel's index type I (int32_t when every offset fits,
// see offsets_fit_int32), with the divisors the kernels divide by.
template <typename I>
struct DwGeom {
  I n, c, h, w;   // input
  I k, oh, ow;    // output channels (c * m) and spatial size
  int m, kh, kw, sh, sw, ph, pw, dh, dw;
  Divmod<I> m_div, sh_div, sw_div;  // k / m; the input gradient's stride phases
  Divmod<I> ow_div, oh_div;         // the weight gradient's pixel index -> (n, oh, ow)
};

// The loop counters of the grid-stride loops stay 64-bit so that i + step cannot
// overflow I.
template <typename T, typename Acc, typename I>
__global__ void dw_forward_kernel(DwGeom<I> g, Decode4<I> decode, const T* __restrict__ x,
                                  Strides4<I> xs, const T* __restrict__ wt, Strides4<I> ws,
                                  const T* __restrict__ bias, index_t bias_stride,
                                  const T* __restrict__ res, Strides4<I> rs, int act,
                                  T* __restrict__ y, Strides4<I> ys) {
  using Cv = DwConvert<T, Acc>;
  const index_t total = static_cast<index_t>(g.n) * g.k * g.oh * g.ow;
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    I n, k, oh, ow;
    decode(static_cast<I>(i), n, k, oh, ow);
    const I c = g.m_div.div(k);
    Acc acc = bias != nullptr ? Cv::load(bias[k * bias_stride]) : Acc(0);
    for (int r = 0; r < g.kh; ++r) {
      const I ih = oh * g.sh - g.ph + r * g.dh;
      if (ih < 0 || ih >= g.h) continue;
      for (int s = 0; s < g.kw; ++s) {
        const I iw = ow * g.sw - g.pw + s * g.dw;
        if (iw < 0 || iw >= g.w) continue;
        acc += Cv::load(x[xs.at(n, c, ih, iw)]) * Cv::load(wt[ws.at(k, 0, r, s)]);
      }
    }
    if (res != nullptr) acc += Cv::load(res[rs.at(n, k, oh, ow)]);
    y[ys.at(n, k, oh, ow)] = Cv::store(activate(acc, act));
  }
}

template <typename T, typename Acc, typename I>
__global__ void dw_input_grad_kernel(DwGeom<I> g, Decode4<I> decode, const T* __restrict__ dy,
                                     Strides4<I> dys, const T* __restrict__ wt, Strides4<I> ws,
                                     T* __restrict__ dx, Strides4<I> dxs) {
  using Cv = DwConvert<T, Acc>;
  const index_t total = static_cast<index_t>(g.n) * g.c * g.h * g.w;
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    I n, c, h, w;
    decode(static_cast<I>(i), n, c, h, w);
    Acc acc = Acc(0);
    for (int mm = 0; mm < g.m; ++mm) {
      const I k = c * g.m + mm;
      for (int r = 0; r < g.kh; ++r) {
        const I th = h + g.ph - r * g.dh;  // = oh * sh
        if (th < 0) continue;
        I phase;
        const I oh = g.sh_div.divmod(th, phase);
        if (phase != 0 || oh >= g.oh) continue;
        for (int s = 0; s < g.kw; ++s) {
          const I tw = w + g.pw - s * g.dw;
          if (tw < 0) continue;
          const I ow = g.sw_div.divmod(tw, phase);
          if (phase != 0 || ow >= g.ow) continue;
          acc += Cv::load(dy[dys.at(n, k, oh, ow)]) * Cv::load(wt[ws.at(k, 0, r, s)]);
        }
      }
    }
    dx[dxs.at(n, c, h, w)] = Cv::store(acc);
  }
}

constexpr int kWgradThreads = 256;

template <typename T, typename Acc, typename I>
__global__ void dw_weight_grad_kernel(DwGeom<I> g, const T* __restrict__ dy, Strides4<I> dys,
                                      const T* __restrict__ x, Strides4<I> xs,
                                      T* __restrict__ dwt, Strides4<I> dws) {
  using Cv = DwConvert<T, Acc>;
  __shared__ Acc partial[kWgradThreads];
  const index_t e = blockIdx.x;  // (k, r, s)
  const int s = static_cast<int>(e % g.kw);
  const int r = static_cast<int>((e / g.kw) % g.kh);
  const I k = static_cast<I>(e / (static_cast<index_t>(g.kw) * g.kh));
  const I c = g.m_div.div(k);
  const index_t pixels = static_cast<index_t>(g.n) * g.oh * g.ow;
  Acc acc = Acc(0);
  for (index_t j = threadIdx.x; j < pixels; j += kWgradThreads) {
    I ow, oh;
    const I n = g.oh_div.divmod(g.ow_div.divmod(static_cast<I>(j), ow), oh);
    const I ih = oh * g.sh - g.ph + r * g.dh;
    const I iw = ow * g.sw - g.pw + s * g.dw;
    if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
    acc += Cv::load(dy[dys.at(n, k, oh, ow)]) * Cv::load(x[xs.at(n, c, ih, iw)]);
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kWgradThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) dwt[dws.at(k, 0, r, s)] = Cv::store(partial[0]);
}

constexpr int kThreads = 256;

bool valid_dtype(int dtype) {
  return dtype == kFloat32 || dtype == kFloat16 || dtype == kBFloat16 || dtype == kFloat64;
}

// The call's sizes as the entry points receive them; geometry<I>() is the kernels' view.
struct DwProblem {
  index_t n, c, h, w;   // input
  index_t k, oh, ow;    // output channels (c * m) and spatial size
  int m, kh, kw, sh, sw, ph, pw, dh, dw;

  // Whether the input-, output- and weight-shaped tensors with these strides (and
  // the output-shaped residual's, when there is one) allow 32-bit offsets.
  bool fits_int32(const index_t* input_stride, const index_t* output_stride,
                  const index_t* weight_stride, const index_t* residual_stride = nullptr) const {
    return offsets_fit_int32(n, c, h, w, input_stride) &&
           offsets_fit_int32(n, k, oh, ow, output_stride) &&
           offsets_fit_int32(k, 1, kh, kw, weight_stride) &&
           (residual_stride == nullptr || offsets_fit_int32(n, k, oh, ow, residual_stride));
  }
  template <typename I>
  DwGeom<I> geometry() const {
    return DwGeom<I>{static_cast<I>(n), static_cast<I>(c), static_cast<I>(h), static_cast<I>(w),
                     static_cast<I>(k), static_cast<I>(oh), static_cast<I>(ow),
                     m, kh, kw, sh, sw, ph, pw, dh, dw,
                     Divmod<I>(m), Divmod<I>(sh), Divmod<I>(sw),
                     Divmod<I>(ow > 0 ? ow : 1), Divmod<I>(oh > 0 ? oh : 1)};
  }
};

// Checks shared by the three entry points; fills p.
bool make_problem(DwProblem& p, index_t n, index_t c, index_t h, index_t w, int m, int kh,
                  int kw, int sh, int sw, int ph, int pw, int dh, int dw, index_t oh,
                  index_t ow) {
  if (n < 0 || c < 0 || h < 0 || w < 0 || oh < 0 || ow < 0) return false;
  if (m < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 || dh < 1 || dw < 1)
    return false;
  // the output size must be the convolution's (0 when the kernel does not fit)
  const index_t span_h = h + 2 * static_cast<index_t>(ph) - static_cast<index_t>(dh) * (kh - 1) - 1;
  const index_t span_w = w + 2 * static_cast<index_t>(pw) - static_cast<index_t>(dw) * (kw - 1) - 1;
  if (oh != (span_h < 0 ? 0 : span_h / sh + 1)) return false;
  if (ow != (span_w < 0 ? 0 : span_w / sw + 1)) return false;
  p = DwProblem{n, c, h, w, c * m, oh, ow, m, kh, kw, sh, sw, ph, pw, dh, dw};
  return true;
}

template <typename T, typename Acc>
cudaError_t launch_fwd(const DwProblem& p, const void* x, const index_t* xs, const void* wt,
                       const index_t* ws, const void* bias, index_t bias_stride,
                       const void* res, const index_t* rs, int act, void* y, const index_t* ys,
                       cudaStream_t stream) {
  const index_t total = p.n * p.k * p.oh * p.ow;
  return with_index_type(p.fits_int32(xs, ys, ws, res != nullptr ? rs : nullptr), [&](auto index) {
    using I = decltype(index);
    dw_forward_kernel<T, Acc, I><<<grid_stride_blocks(total, kThreads), kThreads, 0, stream>>>(
        p.geometry<I>(), Decode4<I>(p.k, p.oh, p.ow, ys[1] == 1 && p.k > 1),
        static_cast<const T*>(x), Strides4<I>(xs), static_cast<const T*>(wt), Strides4<I>(ws),
        static_cast<const T*>(bias), bias_stride, static_cast<const T*>(res),
        Strides4<I>(res != nullptr ? rs : nullptr), act, static_cast<T*>(y), Strides4<I>(ys));
    FASTCNN_CHECK_LAUNCH();
    return cudaSuccess;
  });
}

template <typename T, typename Acc>
cudaError_t launch_dgrad(const DwProblem& p, const void* dy, const index_t* dys, const void* wt,
                         const index_t* ws, void* dx, const index_t* dxs, cudaStream_t stream) {
  const index_t total = p.n * p.c * p.h * p.w;
  return with_index_type(p.fits_int32(dxs, dys, ws), [&](auto index) {
    using I = decltype(index);
    dw_input_grad_kernel<T, Acc, I><<<grid_stride_blocks(total, kThreads), kThreads, 0, stream>>>(
        p.geometry<I>(), Decode4<I>(p.c, p.h, p.w, dxs[1] == 1 && p.c > 1),
        static_cast<const T*>(dy), Strides4<I>(dys), static_cast<const T*>(wt), Strides4<I>(ws),
        static_cast<T*>(dx), Strides4<I>(dxs));
    FASTCNN_CHECK_LAUNCH();
    return cudaSuccess;
  });
}

template <typename T, typename Acc>
cudaError_t launch_wgrad(const DwProblem& p, const void* dy, const index_t* dys, const void* x,
                         const index_t* xs, void* dwt, const index_t* dws, cudaStream_t stream) {
  const index_t blocks = p.k * p.kh * p.kw;
  FASTCNN_REQUIRE(blocks <= 0x7fffffffLL);
  return with_index_type(p.fits_int32(xs, dys, dws), [&](auto index) {
    using I = decltype(index);
    dw_weight_grad_kernel<T, Acc, I>
        <<<static_cast<unsigned int>(blocks), kWgradThreads, 0, stream>>>(
            p.geometry<I>(), static_cast<const T*>(dy), Strides4<I>(dys),
            static_cast<const T*>(x), Strides4<I>(xs), static_cast<T*>(dwt), Strides4<I>(dws));
    FASTCNN_CHECK_LAUNCH();
    return cudaSuccess;
  });
}

}  // namespace

#define FASTCNN_DW_DISPATCH(dtype, LAUNCH, ...)                                          \
  switch (dtype) {                                                                       \
    case kFloat32: return LAUNCH<float, float>(__VA_ARGS__);                             \
    case kFloat16: return LAUNCH<__half, float>(__VA_ARGS__);                            \
    case kBFloat16: return LAUNCH<__nv_bfloat16, float>(__VA_ARGS__);                    \
    case kFloat64: return LAUNCH<double, double>(__VA_ARGS__);                           \
    default: return cudaErrorInvalidValue;                                               \
  }

cudaError_t depthwise_conv2d_forward(index_t n, index_t c, index_t h, index_t w, int m, int kh,
                                     int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                                     index_t oh, index_t ow, const void* x,
                                     const index_t* x_stride, const void* weight,
                                     const index_t* w_stride, const void* bias,
                                     index_t bias_stride, const void* residual,
                                     const index_t* residual_stride, int activation, void* y,
                                     const index_t* y_stride, int dtype, cudaStream_t stream) {
  DwProblem g;
  FASTCNN_REQUIRE(make_problem(g, n, c, h, w, m, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow));
  FASTCNN_REQUIRE(valid_dtype(dtype));
  FASTCNN_REQUIRE(valid_activation(activation));
  if (n == 0 || c == 0 || oh == 0 || ow == 0) return cudaSuccess;
  FASTCNN_REQUIRE(x != nullptr && weight != nullptr && y != nullptr);
  FASTCNN_REQUIRE(x_stride != nullptr && w_stride != nullptr && y_stride != nullptr);
  FASTCNN_REQUIRE(residual == nullptr || residual_stride != nullptr);
  FASTCNN_DW_DISPATCH(dtype, launch_fwd, g, x, x_stride, weight, w_stride, bias, bias_stride,
                      residual, residual_stride, activation, y, y_stride, stream)
}

cudaError_t depthwise_conv2d_input_grad(index_t n, index_t c, index_t h, index_t w, int m,
                                        int kh, int kw, int sh, int sw, int ph, int pw, int dh,
                                        int dw, index_t oh, index_t ow, const void* dy,
                                        const index_t* dy_stride, const void* weight,
                                        const index_t* w_stride, void* dx,
                                        const index_t* dx_stride, int dtype,
                                        cudaStream_t stream) {
  DwProblem g;
  FASTCNN_REQUIRE(make_problem(g, n, c, h, w, m, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow));
  FASTCNN_REQUIRE(valid_dtype(dtype));
  if (n == 0 || c == 0 || h == 0 || w == 0) return cudaSuccess;
  FASTCNN_REQUIRE(dy != nullptr && weight != nullptr && dx != nullptr);
  FASTCNN_REQUIRE(dy_stride != nullptr && w_stride != nullptr && dx_stride != nullptr);
  FASTCNN_DW_DISPATCH(dtype, launch_dgrad, g, dy, dy_stride, weight, w_stride, dx, dx_stride,
                      stream)
}

cudaError_t depthwise_conv2d_weight_grad(index_t n, index_t c, index_t h, index_t w, int m,
                                         int kh, int kw, int sh, int sw, int ph, int pw, int dh,
                                         int dw, index_t oh, index_t ow, const void* dy,
                                         const index_t* dy_stride, const void* x,
                                         const index_t* x_stride, void* dweight,
                                         const index_t* dw_stride, int dtype,
                                         cudaStream_t stream) {
  DwProblem g;
  FASTCNN_REQUIRE(make_problem(g, n, c, h, w, m, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow));
  FASTCNN_REQUIRE(valid_dtype(dtype));
  // An empty batch still writes the (zero) weight gradient.
  if (c == 0) return cudaSuccess;
  FASTCNN_REQUIRE(dweight != nullptr && dw_stride != nullptr);
  FASTCNN_REQUIRE(dy_stride != nullptr && x_stride != nullptr);
  FASTCNN_REQUIRE(n * oh * ow == 0 || (dy != nullptr && x != nullptr));
  FASTCNN_DW_DISPATCH(dtype, launch_wgrad, g, dy, dy_stride, x, x_stride, dweight, dw_stride,
                      stream)
}

#undef FASTCNN_DW_DISPATCH

}  // namespace fastcnn
