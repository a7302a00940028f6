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
// about once (one pass).  The window sums are accumulated in fp32 (fp64 for
// fp64); the forward also writes the scale (fp32 / fp64) when asked, and the
// backward reads it instead of recomputing window sums.
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

FASTCNN_DEVICE float pow_acc(float b, float e) { return powf(b, e); }
FASTCNN_DEVICE double pow_acc(double b, double e) { return pow(b, e); }

struct Strides4 {
  index_t n, c, h, w;
};

struct Geometry {
  index_t n, c, h, w;
  int size;
  bool within;
  bool channels_inner;  // traversal order: c fastest (channels_last) or w fastest (NCHW)
};

FASTCNN_DEVICE index_t offset(const Strides4& s, index_t n, index_t c, index_t h, index_t w) {
  return n * s.n + c * s.c + h * s.h + w * s.w;
}

FASTCNN_DEVICE void decode(index_t i, const Geometry& g, index_t& n, index_t& c, index_t& h,
                           index_t& w) {
  if (g.channels_inner) {
    c = i % g.c;
    i /= g.c;
    w = i % g.w;
    i /= g.w;
    h = i % g.h;
    n = i / g.h;
  } else {
    w = i % g.w;
    i /= g.w;
    h = i % g.h;
    i /= g.h;
    c = i % g.c;
    n = i / g.c;
  }
}

template <typename T, typename Acc>
__global__ void lrn_forward_kernel(Geometry g, const T* __restrict__ x, Strides4 xs,
                                   T* __restrict__ y, Strides4 ys, Acc* __restrict__ scale,
                                   Strides4 ss, Acc alpha_area, Acc beta, Acc k) {
  using C = LrnConvert<T, Acc>;
  const index_t total = g.n * g.c * g.h * g.w;
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  const int lo = g.size / 2;  // window [p - size/2, p + (size-1)/2]
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    index_t n, c, h, w;
    decode(i, g, n, c, h, w);
    Acc acc = Acc(0);
    if (g.within) {
      for (int dh = 0; dh < g.size; ++dh) {
        const index_t hh = h + dh - lo;
        if (hh < 0 || hh >= g.h) continue;
        for (int dw = 0; dw < g.size; ++dw) {
          const index_t ww = w + dw - lo;
          if (ww < 0 || ww >= g.w) continue;
          const Acc v = C::load(x[offset(xs, n, c, hh, ww)]);
          acc += v * v;
        }
      }
    } else {
      for (int d = 0; d < g.size; ++d) {
        const index_t cc = c + d - lo;
        if (cc < 0 || cc >= g.c) continue;
        const Acc v = C::load(x[offset(xs, n, cc, h, w)]);
        acc += v * v;
      }
    }
    const Acc s = k + alpha_area * acc;
    const Acc xv = C::load(x[offset(xs, n, c, h, w)]);
    y[offset(ys, n, c, h, w)] = C::store(xv * pow_acc(s, -beta));
    if (scale != nullptr) scale[offset(ss, n, c, h, w)] = s;
  }
}

template <typename T, typename Acc>
__global__ void lrn_backward_kernel(Geometry g, const T* __restrict__ dy, Strides4 dys,
                                    const T* __restrict__ x, Strides4 xs,
                                    const T* __restrict__ y, Strides4 ys,
                                    const Acc* __restrict__ scale, Strides4 ss,
                                    T* __restrict__ dx, Strides4 dxs, Acc coef, Acc beta) {
  using C = LrnConvert<T, Acc>;
  const index_t total = g.n * g.c * g.h * g.w;
  const index_t step = static_cast<index_t>(gridDim.x) * blockDim.x;
  const int lo = (g.size - 1) / 2;  // mirrored window [p - (size-1)/2, p + size/2]
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    index_t n, c, h, w;
    decode(i, g, n, c, h, w);
    Acc acc = Acc(0);
    if (g.within) {
      for (int dh = 0; dh < g.size; ++dh) {
        const index_t hh = h + dh - lo;
        if (hh < 0 || hh >= g.h) continue;
        for (int dw = 0; dw < g.size; ++dw) {
          const index_t ww = w + dw - lo;
          if (ww < 0 || ww >= g.w) continue;
          acc += C::load(dy[offset(dys, n, c, hh, ww)]) * C::load(y[offset(ys, n, c, hh, ww)]) /
                 scale[offset(ss, n, c, hh, ww)];
        }
      }
    } else {
      for (int d = 0; d < g.size; ++d) {
        const index_t cc = c + d - lo;
        if (cc < 0 || cc >= g.c) continue;
        acc += C::load(dy[offset(dys, n, cc, h, w)]) * C::load(y[offset(ys, n, cc, h, w)]) /
               scale[offset(ss, n, cc, h, w)];
      }
    }
    const Acc s = scale[offset(ss, n, c, h, w)];
    const Acc g0 = C::load(dy[offset(dys, n, c, h, w)]);
    const Acc xv = C::load(x[offset(xs, n, c, h, w)]);
    dx[offset(dxs, n, c, h, w)] = C::store(g0 * pow_acc(s, -beta) - coef * xv * acc);
  }
}

Strides4 strides_of(const index_t* s) { return Strides4{s[0], s[1], s[2], s[3]}; }

constexpr int kThreads = 256;

template <typename T, typename Acc>
cudaError_t launch_forward(const Geometry& g, double alpha_area, double beta, double k,
                           const void* x, const index_t* xs, void* y, const index_t* ys,
                           void* scale, const index_t* ss, cudaStream_t stream) {
  const index_t total = g.n * g.c * g.h * g.w;
  lrn_forward_kernel<T, Acc><<<grid_stride_blocks(total, kThreads), kThreads, 0, stream>>>(
      g, static_cast<const T*>(x), strides_of(xs), static_cast<T*>(y), strides_of(ys),
      static_cast<Acc*>(scale), scale != nullptr ? strides_of(ss) : Strides4{0, 0, 0, 0},
      static_cast<Acc>(alpha_area), static_cast<Acc>(beta), static_cast<Acc>(k));
  FASTCNN_CHECK_LAUNCH();
  return cudaSuccess;
}

template <typename T, typename Acc>
cudaError_t launch_backward(const Geometry& g, double coef, double beta, const void* dy,
                            const index_t* dys, const void* x, const index_t* xs, const void* y,
                            const index_t* ys, const void* scale, const index_t* ss, void* dx,
                            const index_t* dxs, cudaStream_t stream) {
  const index_t total = g.n * g.c * g.h * g.w;
  lrn_backward_kernel<T, Acc><<<grid_stride_blocks(total, kThreads), kThreads, 0, stream>>>(
      g, static_cast<const T*>(dy), strides_of(dys), static_cast<const T*>(x), strides_of(xs),
      static_cast<const T*>(y), strides_of(ys), static_cast<const Acc*>(scale), strides_of(ss),
      static_cast<T*>(dx), strides_of(dxs), static_cast<Acc>(coef), static_cast<Acc>(beta));
  FASTCNN_CHECK_LAUNCH();
  return cudaSuccess;
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
  const Geometry g{n, c, h, w, size, within, y_stride[1] == 1 && c > 1};
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
  const Geometry g{n, c, h, w, size, within, dx_stride[1] == 1 && c > 1};
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
