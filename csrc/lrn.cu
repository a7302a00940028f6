// lrn.cu: local response normalization, forward and backward (see
// triton_kernels/lrn.py for the formulas).
//
//   across channels:  scale = k + alpha/size   * sum_{j in [c - size/2, c + (size-1)/2]} x[j]^2
//   within channel:   scale = k + alpha/size^2 * sum over the size x size window of (h, w)
//   y = x * scale^-beta
//   dx = dy * scale^-beta - 2 alpha' beta x * sum_{mirrored window} dy * y / scale
//
// Design: one thread per element in a grid-stride loop over a 4-d tensor of any
// strides (NCHW, channels_last, sliced, stride-0 expanded).  The traversal order
// follows the output layout -- w innermost for NCHW, c innermost for
// channels_last -- so a warp's centre loads and stores coalesce; the window
// neighbours are the same lines re-read from L1/L2, so DRAM sees each tensor
// about once (one pass).  Each kernel exists for 32-bit and 64-bit indices: the
// 32-bit one (offsets_fit_int32) decodes the flat index with multiply-shift
// division (Divmod) and halves the offset arithmetic, which in 64 bits was most
// of an element's instructions (sm_90 SASS of the fp16 forward: 1424 -> 728
// instructions, 9 -> 0 division calls; backward: 110 -> 54 registers).  The window
// sums are accumulated in fp32 (fp64 for fp64); the forward also writes the scale
// (fp32 / fp64) when asked, and the backward reads it instead of recomputing window
// sums.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common.cuh"

namespace fastcnn {
namespace {

template <typename T, typename Acc>
struct LrnConvert {
  static FASTCNN_DEVICE Acc load(T v) { return static_cast<Acc>(v); }
  static FASTCNN_DEVICE T store(Acc v) { return static_cast<T>(v); }
};
template <>
struct LrnConvert<__half, float> {
  static FASTCNN_DEVICE float load(__half v) { return __half2float(v); }
  static FASTCNN_DEVICE __half store(float v) { return __float2half_rn(v); }
};
template <>
struct LrnConvert<__nv_bfloat16, float> {
  static FASTCNN_DEVICE float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static FASTCNN_DEVICE __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

// scale^-beta. fp32 (and so fp16/bf16) uses the hardware's ex2(e * lg2(b)), as the
// Triton twin's exp2(-beta * log2(s)) does: a few ulp (about 4e-7 relative for
// AlexNet's k = 2, beta = 0.75) where powf's exact path costs about 90 of the
// forward's 728 sm_90 SASS instructions (fp16, 32-bit indices), the backward's
// 64 of 960. Where it matters they agree: a zero scale gives inf, a negative NaN.
FASTCNN_DEVICE float pow_acc(float b, float e) { return __powf(b, e); }
FASTCNN_DEVICE double pow_acc(double b, double e) { return pow(b, e); }

// Sizes and traversal of one call, in the kernel's index type I (int32_t when every
// offset fits, see offsets_fit_int32).
template <typename I>
struct Geometry {
  I n, c, h, w;
  int size;
  bool within;
  Decode4<I> decode;  // flat index -> (n, c, h, w), in the output's order
};

// Sum of term(cc, hh, ww) over the LRN window of (c, h, w) whose first neighbour is
// `lo` before the centre: channels [c - lo, c - lo + size) across channels, or the
// size x size square at (h - lo, w - lo) within the channel; neighbours outside the
// tensor are skipped (zero padding). The forward's window and the backward's
// mirrored window differ only in `lo`.
template <typename Acc, typename I, typename Term>
FASTCNN_DEVICE Acc window_sum(const Geometry<I>& g, I c, I h, I w, int lo, Term term) {
  Acc acc = Acc(0);
  if (g.within) {
    for (int dh = 0; dh < g.size; ++dh) {
      const I hh = h + dh - lo;
      if (hh < 0 || hh >= g.h) continue;
      for (int dw = 0; dw < g.size; ++dw) {
        const I ww = w + dw - lo;
        if (ww < 0 || ww >= g.w) continue;
        acc += term(c, hh, ww);
      }
    }
  } else {
    for (int d = 0; d < g.size; ++d) {
      const I cc = c + d - lo;
      if (cc < 0 || cc >= g.c) continue;
      acc += term(cc, h, w);
    }
  }
  return acc;
}

template <typename T, typename Acc, typename I>
__global__ void lrn_forward_kernel(Geometry<I> g, const T* __restrict__ x, Strides4<I> xs,
                                   T* __restrict__ y, Strides4<I> ys, Acc* __restrict__ scale,
                                   Strides4<I> ss, Acc alpha_area, Acc beta, Acc k) {
  using C = LrnConvert<T, Acc>;
  // The loop counter stays 64-bit so that i + step cannot overflow I.
  const index_t total = static_cast<index_t>(g.n) * g.c * g.h * g.w;
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  const int lo = g.size / 2;  // window [p - size/2, p + (size-1)/2]
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    I n, c, h, w;
    g.decode(static_cast<I>(i), n, c, h, w);
    const Acc acc = window_sum<Acc>(g, c, h, w, lo, [&](I cc, I hh, I ww) {
      const Acc v = C::load(x[xs.at(n, cc, hh, ww)]);
      return v * v;
    });
    const Acc s = k + alpha_area * acc;
    const Acc xv = C::load(x[xs.at(n, c, h, w)]);
    y[ys.at(n, c, h, w)] = C::store(xv * pow_acc(s, -beta));
    if (scale != nullptr) scale[ss.at(n, c, h, w)] = s;
  }
}

template <typename T, typename Acc, typename I>
__global__ void lrn_backward_kernel(Geometry<I> g, const T* __restrict__ dy, Strides4<I> dys,
                                    const T* __restrict__ x, Strides4<I> xs,
                                    const T* __restrict__ y, Strides4<I> ys,
                                    const Acc* __restrict__ scale, Strides4<I> ss,
                                    T* __restrict__ dx, Strides4<I> dxs, Acc coef, Acc beta) {
  using C = LrnConvert<T, Acc>;
  // The loop counter stays 64-bit so that i + step cannot overflow I.
  const index_t total = static_cast<index_t>(g.n) * g.c * g.h * g.w;
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  const int lo = (g.size - 1) / 2;  // mirrored window [p - (size-1)/2, p + size/2]
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    I n, c, h, w;
    g.decode(static_cast<I>(i), n, c, h, w);
    const Acc acc = window_sum<Acc>(g, c, h, w, lo, [&](I cc, I hh, I ww) {
      return C::load(dy[dys.at(n, cc, hh, ww)]) * C::load(y[ys.at(n, cc, hh, ww)]) /
             scale[ss.at(n, cc, hh, ww)];
    });
    const Acc s = scale[ss.at(n, c, h, w)];
    const Acc g0 = C::load(dy[dys.at(n, c, h, w)]);
    const Acc xv = C::load(x[xs.at(n, c, h, w)]);
    dx[dxs.at(n, c, h, w)] = C::store(g0 * pow_acc(s, -beta) - coef * xv * acc);
  }
}

constexpr int kThreads = 256;

// The call's sizes as the entry points receive them; geometry<I>() is the kernels' view.
struct Problem {
  index_t n, c, h, w;
  int size;
  bool within;
  bool channels_inner;  // traversal order: c fastest (channels_last) or w fastest (NCHW)

  bool fits_int32(const index_t* stride) const {
    return stride == nullptr || offsets_fit_int32(n, c, h, w, stride);
  }
  template <typename I>
  Geometry<I> geometry() const {
    return Geometry<I>{static_cast<I>(n), static_cast<I>(c), static_cast<I>(h), static_cast<I>(w),
                       size, within, Decode4<I>(c, h, w, channels_inner)};
  }
};

template <typename T, typename Acc>
cudaError_t launch_forward(const Problem& p, double alpha_area, double beta, double k,
                           const void* x, const index_t* xs, void* y, const index_t* ys,
                           void* scale, const index_t* ss, cudaStream_t stream) {
  const index_t total = p.n * p.c * p.h * p.w;
  const bool fits = p.fits_int32(xs) && p.fits_int32(ys) && (scale == nullptr || p.fits_int32(ss));
  return with_index_type(fits, [&](auto index) {
    using I = decltype(index);
    lrn_forward_kernel<T, Acc, I><<<grid_stride_blocks(total, kThreads), kThreads, 0, stream>>>(
        p.geometry<I>(), static_cast<const T*>(x), Strides4<I>(xs), static_cast<T*>(y),
        Strides4<I>(ys), static_cast<Acc*>(scale), Strides4<I>(scale != nullptr ? ss : nullptr),
        static_cast<Acc>(alpha_area), static_cast<Acc>(beta), static_cast<Acc>(k));
    FASTCNN_CHECK_LAUNCH();
    return cudaSuccess;
  });
}

template <typename T, typename Acc>
cudaError_t launch_backward(const Problem& p, double coef, double beta, const void* dy,
                            const index_t* dys, const void* x, const index_t* xs, const void* y,
                            const index_t* ys, const void* scale, const index_t* ss, void* dx,
                            const index_t* dxs, cudaStream_t stream) {
  const index_t total = p.n * p.c * p.h * p.w;
  const bool fits = p.fits_int32(dys) && p.fits_int32(xs) && p.fits_int32(ys) &&
                    p.fits_int32(ss) && p.fits_int32(dxs);
  return with_index_type(fits, [&](auto index) {
    using I = decltype(index);
    lrn_backward_kernel<T, Acc, I><<<grid_stride_blocks(total, kThreads), kThreads, 0, stream>>>(
        p.geometry<I>(), static_cast<const T*>(dy), Strides4<I>(dys), static_cast<const T*>(x),
        Strides4<I>(xs), static_cast<const T*>(y), Strides4<I>(ys),
        static_cast<const Acc*>(scale), Strides4<I>(ss), static_cast<T*>(dx), Strides4<I>(dxs),
        static_cast<Acc>(coef), static_cast<Acc>(beta));
    FASTCNN_CHECK_LAUNCH();
    return cudaSuccess;
  });
}

bool valid_dtype(int dtype) {
  return dtype == kFloat32 || dtype == kFloat16 || dtype == kBFloat16 || dtype == kFloat64;
}

double window_area(int size, bool within) {
  return within ? static_cast<double>(size) * size : static_cast<double>(size);
}

}  // namespace

cudaError_t lrn_forward(index_t n, index_t c, index_t h, index_t w, int size, double alpha,
                        double beta, double k, bool within, const void* x,
                        const index_t* x_stride, void* y, const index_t* y_stride, void* scale,
                        const index_t* scale_stride, int dtype, cudaStream_t stream) {
  FASTCNN_REQUIRE(n >= 0 && c >= 0 && h >= 0 && w >= 0 && size >= 1);
  FASTCNN_REQUIRE(valid_dtype(dtype));
  if (n == 0 || c == 0 || h == 0 || w == 0) return cudaSuccess;
  FASTCNN_REQUIRE(x != nullptr && y != nullptr && x_stride != nullptr && y_stride != nullptr);
  FASTCNN_REQUIRE(scale == nullptr || scale_stride != nullptr);
  const Problem g{n, c, h, w, size, within, y_stride[1] == 1 && c > 1};
  const double a = alpha / window_area(size, within);
  switch (dtype) {
    case kFloat32:
      return launch_forward<float, float>(g, a, beta, k, x, x_stride, y, y_stride, scale,
                                          scale_stride, stream);
    case kFloat16:
      return launch_forward<__half, float>(g, a, beta, k, x, x_stride, y, y_stride, scale,
                                           scale_stride, stream);
    case kBFloat16:
      return launch_forward<__nv_bfloat16, float>(g, a, beta, k, x, x_stride, y, y_stride,
                                                  scale, scale_stride, stream);
    case kFloat64:
      return launch_forward<double, double>(g, a, beta, k, x, x_stride, y, y_stride, scale,
                                            scale_stride, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t lrn_backward(index_t n, index_t c, index_t h, index_t w, int size, double alpha,
                         double beta, double k, bool within, const void* dy,
                         const index_t* dy_stride, const void* x, const index_t* x_stride,
                         const void* y, const index_t* y_stride, const void* scale,
                         const index_t* scale_stride, void* dx, const index_t* dx_stride,
                         int dtype, cudaStream_t stream) {
  (void)k;  // the saved scale already holds it
  FASTCNN_REQUIRE(n >= 0 && c >= 0 && h >= 0 && w >= 0 && size >= 1);
  FASTCNN_REQUIRE(valid_dtype(dtype));
  if (n == 0 || c == 0 || h == 0 || w == 0) return cudaSuccess;
  FASTCNN_REQUIRE(dy != nullptr && x != nullptr && y != nullptr && scale != nullptr &&
                  dx != nullptr);
  FASTCNN_REQUIRE(dy_stride != nullptr && x_stride != nullptr && y_stride != nullptr &&
                  scale_stride != nullptr && dx_stride != nullptr);
  const Problem g{n, c, h, w, size, within, dx_stride[1] == 1 && c > 1};
  const double coef = 2.0 * alpha * beta / window_area(size, within);
  switch (dtype) {
    case kFloat32:
      return launch_backward<float, float>(g, coef, beta, dy, dy_stride, x, x_stride, y,
                                           y_stride, scale, scale_stride, dx, dx_stride, stream);
    case kFloat16:
      return launch_backward<__half, float>(g, coef, beta, dy, dy_stride, x, x_stride, y,
                                            y_stride, scale, scale_stride, dx, dx_stride, stream);
    case kBFloat16:
      return launch_backward<__nv_bfloat16, float>(g, coef, beta, dy, dy_stride, x, x_stride, y,
                                                   y_stride, scale, scale_stride, dx, dx_stride,
                                                   stream);
    case kFloat64:
      return launch_backward<double, double>(g, coef, beta, dy, dy_stride, x, x_stride, y,
                                             y_stride, scale, scale_stride, dx, dx_stride,
                                             stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace fastcnn
