// bindings.cpp: the single pybind11 module fastcnn._C.
//
// Compiled by the host C++ compiler (not nvcc) against pybind11 and the CUDA
// runtime headers only -- never libtorch.  Device buffers arrive as Python ints
// (tensor.data_ptr()), streams as ints (torch.cuda.current_stream().cuda_stream).
// A non-success cudaError_t from an entry point becomes a RuntimeError naming
// the op; bad arguments the binding can see become ValueError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common.cuh"

// setup.py writes fastcnn_build_config.h (FASTCNN_ARCH_LIST, the exact
// -gencode targets, e.g. "sm_80;sm_90a;compute_90") into the build directory.
#if defined(__has_include)
#if __has_include("fastcnn_build_config.h")
#include "fastcnn_build_config.h"
#endif
#endif
#ifndef FASTCNN_ARCH_LIST
#define FASTCNN_ARCH_LIST ""
#endif

namespace py = pybind11;

namespace {

std::string cuda_error_text(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + " (" + std::to_string(static_cast<int>(err)) +
         "): " + cudaGetErrorString(err);
}

// Turn an entry point's status into a Python RuntimeError naming the op.
void check_status(const char* op, cudaError_t err) {
  if (err == cudaSuccess) return;
  std::string msg = std::string("fastcnn._C.") + op + " failed: " + cuda_error_text(err);
  if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction) {
    msg += std::string(" [fastcnn._C was built for ") + FASTCNN_ARCH_LIST +
           "; rebuild with FASTCNN_CUDA_ARCHS set to include this GPU]";
  }
  throw std::runtime_error(msg);
}

std::vector<std::string> built_archs() {
  std::vector<std::string> out;
  std::string s = FASTCNN_ARCH_LIST;
  std::size_t start = 0;
  while (start <= s.size()) {
    std::size_t end = s.find(';', start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string version_text(int v) {  // 13000 -> "13.0"
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

// Does one of the built targets run on a device of compute capability
// major.minor?  sm_XY (SASS) runs on the same major with minor >= Y; sm_XYa
// only on exactly X.Y; sm_XYf on the same major with minor >= Y; compute_XY
// (PTX) is JIT-compiled for any X.Y or newer; compute_XYa only on X.Y.
bool has_kernel_image_for(int major, int minor) {
  const int dev = major * 10 + minor;
  for (const std::string& a : built_archs()) {
    const bool ptx = a.rfind("compute_", 0) == 0;
    const bool sass = a.rfind("sm_", 0) == 0;
    if (!ptx && !sass) continue;
    std::string num = a.substr(ptx ? 8 : 3);
    char suffix = 0;
    if (!num.empty() && (num.back() == 'a' || num.back() == 'f')) {
      suffix = num.back();
      num.pop_back();
    }
    if (num.size() < 2) continue;
    int code = 0;
    try {
      code = std::stoi(num);
    } catch (...) {
      continue;
    }
    const int a_major = code / 10, a_minor = code % 10;
    if (suffix == 'a') {
      if (major == a_major && minor == a_minor) return true;
    } else if (ptx) {
      if (dev >= code) return true;
    } else {  // SASS, plain or family-specific
      if (major == a_major && minor >= a_minor) return true;
    }
  }
  return false;
}

// (ok, reason): reason is None when ok.  Never raises: a machine without a
// driver or a device gets a clean sentence.  Creates no CUDA context.
std::pair<bool, std::optional<std::string>> available() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear it so it does not surface at a later launch check
    int driver = 0;
    if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
    cudaGetLastError();
    const std::string detail = " (cudaGetDeviceCount: " + cuda_error_text(err) + ")";
    if (err == cudaErrorNoDevice) return {false, "no CUDA device found" + detail};
    if (err == cudaErrorInsufficientDriver) {
      if (driver == 0) return {false, "no CUDA device: no NVIDIA driver was found" + detail};
      return {false, "no usable CUDA device: the NVIDIA driver supports CUDA " +
                         version_text(driver) + " but fastcnn._C was built with CUDA " +
                         version_text(CUDART_VERSION) + "; update the driver" + detail};
    }
    return {false, "no usable CUDA device: CUDA failed to initialise" + detail};
  }
  if (count <= 0) return {false, std::string("no CUDA device found")};

  std::string unsupported;
  for (int d = 0; d < count; ++d) {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, d) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    if (has_kernel_image_for(major, minor)) return {true, std::nullopt};
    if (!unsupported.empty()) unsupported += ", ";
    unsupported += "device " + std::to_string(d) + " is sm_" + std::to_string(major) +
                   std::to_string(minor);
  }
  return {false, std::string("fastcnn._C was built for ") + FASTCNN_ARCH_LIST +
                     ", which has no code for the GPUs here (" + unsupported +
                     "); reinstall with FASTCNN_CUDA_ARCHS naming them"};
}

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

int runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) {
    cudaGetLastError();
    return CUDART_VERSION;
  }
  return v;
}

int driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return v;
}

cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

void axpby(std::int64_t n, double alpha, std::uintptr_t x, double beta, std::uintptr_t y,
           std::uintptr_t out, int dtype, std::uintptr_t stream) {
  if (n < 0) throw py::value_error("fastcnn._C.axpby: n must be >= 0, got " + std::to_string(n));
  if (dtype != fastcnn::kFloat32 && dtype != fastcnn::kFloat16 && dtype != fastcnn::kBFloat16 &&
      dtype != fastcnn::kFloat64) {
    throw py::value_error("fastcnn._C.axpby: unsupported dtype code " + std::to_string(dtype) +
                          " (expected one of _C.DTYPE_*)");
  }
  if (n > 0 && (x == 0 || y == 0 || out == 0)) {
    throw py::value_error("fastcnn._C.axpby: x, y and out must be non-null device pointers");
  }
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = fastcnn::axpby(n, alpha, reinterpret_cast<const void*>(x), beta,
                         reinterpret_cast<const void*>(y), reinterpret_cast<void*>(out), dtype,
                         as_stream(stream));
  }
  check_status("axpby", err);
}

// ---- lrn.cu
using Strides = std::vector<std::int64_t>;

void check_lrn_args(const char* op, std::int64_t n, std::int64_t c, std::int64_t h,
                    std::int64_t w, int size, int dtype,
                    std::initializer_list<std::pair<const char*, const Strides*>> strides) {
  if (n < 0 || c < 0 || h < 0 || w < 0) {
    throw py::value_error(std::string("fastcnn._C.") + op + ": sizes must be >= 0");
  }
  if (size < 1) {
    throw py::value_error(std::string("fastcnn._C.") + op + ": size must be >= 1, got " +
                          std::to_string(size));
  }
  if (dtype != fastcnn::kFloat32 && dtype != fastcnn::kFloat16 && dtype != fastcnn::kBFloat16 &&
      dtype != fastcnn::kFloat64) {
    throw py::value_error(std::string("fastcnn._C.") + op + ": unsupported dtype code " +
                          std::to_string(dtype) + " (expected one of _C.DTYPE_*)");
  }
  for (const auto& [name, s] : strides) {
    if (s->size() != 4) {
      throw py::value_error(std::string("fastcnn._C.") + op + ": " + name +
                            " must have 4 strides, got " + std::to_string(s->size()));
    }
  }
}

void check_activation(const char* op, int activation) {
  if (!fastcnn::valid_activation(activation)) {
    throw py::value_error(std::string("fastcnn._C.") + op + ": activation code must be " +
                          std::to_string(fastcnn::kNone) + ".." + std::to_string(fastcnn::kGelu) +
                          ", got " + std::to_string(activation));
  }
}

void lrn_forward(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, int size,
                 double alpha, double beta, double k, bool within, std::uintptr_t x,
                 const Strides& x_stride, std::uintptr_t y, const Strides& y_stride,
                 std::uintptr_t scale, const Strides& scale_stride, int dtype,
                 std::uintptr_t stream) {
  check_lrn_args("lrn_forward", n, c, h, w, size, dtype,
                 {{"x_stride", &x_stride}, {"y_stride", &y_stride}, {"scale_stride", &scale_stride}});
  if (n * c * h * w > 0 && (x == 0 || y == 0)) {
    throw py::value_error("fastcnn._C.lrn_forward: x and y must be non-null device pointers");
  }
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = fastcnn::lrn_forward(n, c, h, w, size, alpha, beta, k, within,
                               reinterpret_cast<const void*>(x), x_stride.data(),
                               reinterpret_cast<void*>(y), y_stride.data(),
                               reinterpret_cast<void*>(scale), scale_stride.data(), dtype,
                               as_stream(stream));
  }
  check_status("lrn_forward", err);
}

void lrn_backward(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, int size,
                  double alpha, double beta, double k, bool within, std::uintptr_t dy,
                  const Strides& dy_stride, std::uintptr_t x, const Strides& x_stride,
                  std::uintptr_t y, const Strides& y_stride, std::uintptr_t scale,
                  const Strides& scale_stride, std::uintptr_t dx, const Strides& dx_stride,
                  int dtype, std::uintptr_t stream) {
  check_lrn_args("lrn_backward", n, c, h, w, size, dtype,
                 {{"dy_stride", &dy_stride}, {"x_stride", &x_stride}, {"y_stride", &y_stride},
                  {"scale_stride", &scale_stride}, {"dx_stride", &dx_stride}});
  if (n * c * h * w > 0 && (dy == 0 || x == 0 || y == 0 || scale == 0 || dx == 0)) {
    throw py::value_error(
        "fastcnn._C.lrn_backward: dy, x, y, scale and dx must be non-null device pointers");
  }
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = fastcnn::lrn_backward(n, c, h, w, size, alpha, beta, k, within,
                                reinterpret_cast<const void*>(dy), dy_stride.data(),
                                reinterpret_cast<const void*>(x), x_stride.data(),
                                reinterpret_cast<const void*>(y), y_stride.data(),
                                reinterpret_cast<const void*>(scale), scale_stride.data(),
                                reinterpret_cast<void*>(dx), dx_stride.data(), dtype,
                                as_stream(stream));
  }
  check_status("lrn_backward", err);
}

// ---- depthwise.cu
// Geometry as a list: [n, c, h, w, m, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow].
struct DwArgs {
  std::int64_t n, c, h, w;
  int m, kh, kw, sh, sw, ph, pw, dh, dw;
  std::int64_t oh, ow;
};

DwArgs parse_dw(const char* op, const Strides& geom, int dtype,
                std::initializer_list<std::pair<const char*, const Strides*>> strides) {
  if (geom.size() != 15) {
    throw py::value_error(std::string("fastcnn._C.") + op +
                          ": geometry must be [n, c, h, w, m, kh, kw, sh, sw, ph, pw, dh, dw, "
                          "oh, ow], got " + std::to_string(geom.size()) + " values");
  }
  for (std::size_t i = 0; i < geom.size(); ++i) {
    if (geom[i] < 0 || (i >= 4 && i <= 12 && geom[i] > 0x7fffffffLL)) {
      throw py::value_error(std::string("fastcnn._C.") + op + ": geometry value " +
                            std::to_string(i) + " out of range: " + std::to_string(geom[i]));
    }
  }
  check_lrn_args(op, geom[0], geom[1], geom[2], geom[3], 1, dtype, strides);
  auto i32 = [&](std::size_t i) { return static_cast<int>(geom[i]); };
  return DwArgs{geom[0], geom[1], geom[2], geom[3], i32(4), i32(5), i32(6), i32(7),
                i32(8), i32(9), i32(10), i32(11), i32(12), geom[13], geom[14]};
}

void depthwise_forward(const Strides& geom, std::uintptr_t x, const Strides& x_stride,
                       std::uintptr_t weight, const Strides& w_stride, std::uintptr_t bias,
                       std::int64_t bias_stride, std::uintptr_t residual,
                       const Strides& residual_stride, int activation, std::uintptr_t y,
                       const Strides& y_stride, int dtype, std::uintptr_t stream) {
  const char* op = "depthwise_conv2d_forward";
  const DwArgs a = parse_dw(op, geom, dtype,
                            {{"x_stride", &x_stride}, {"w_stride", &w_stride}, {"y_stride", &y_stride}});
  check_activation(op, activation);
  if (residual != 0) check_lrn_args(op, 0, 0, 0, 0, 1, dtype, {{"residual_stride", &residual_stride}});
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = fastcnn::depthwise_conv2d_forward(
        a.n, a.c, a.h, a.w, a.m, a.kh, a.kw, a.sh, a.sw, a.ph, a.pw, a.dh, a.dw, a.oh, a.ow,
        reinterpret_cast<const void*>(x), x_stride.data(), reinterpret_cast<const void*>(weight),
        w_stride.data(), reinterpret_cast<const void*>(bias), bias_stride,
        reinterpret_cast<const void*>(residual), residual != 0 ? residual_stride.data() : nullptr,
        activation, reinterpret_cast<void*>(y), y_stride.data(), dtype, as_stream(stream));
  }
  check_status(op, err);
}

void depthwise_input_grad(const Strides& geom, std::uintptr_t dy, const Strides& dy_stride,
                          std::uintptr_t weight, const Strides& w_stride, std::uintptr_t dx,
                          const Strides& dx_stride, int dtype, std::uintptr_t stream) {
  const DwArgs a = parse_dw("depthwise_conv2d_input_grad", geom, dtype,
                            {{"dy_stride", &dy_stride}, {"w_stride", &w_stride}, {"dx_stride", &dx_stride}});
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = fastcnn::depthwise_conv2d_input_grad(
        a.n, a.c, a.h, a.w, a.m, a.kh, a.kw, a.sh, a.sw, a.ph, a.pw, a.dh, a.dw, a.oh, a.ow,
        reinterpret_cast<const void*>(dy), dy_stride.data(), reinterpret_cast<const void*>(weight),
        w_stride.data(), reinterpret_cast<void*>(dx), dx_stride.data(), dtype, as_stream(stream));
  }
  check_status("depthwise_conv2d_input_grad", err);
}

void depthwise_weight_grad(const Strides& geom, std::uintptr_t dy, const Strides& dy_stride,
                           std::uintptr_t x, const Strides& x_stride, std::uintptr_t dweight,
                           const Strides& dw_stride, int dtype, std::uintptr_t stream) {
  const DwArgs a = parse_dw("depthwise_conv2d_weight_grad", geom, dtype,
                            {{"dy_stride", &dy_stride}, {"x_stride", &x_stride}, {"dw_stride", &dw_stride}});
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = fastcnn::depthwise_conv2d_weight_grad(
        a.n, a.c, a.h, a.w, a.m, a.kh, a.kw, a.sh, a.sw, a.ph, a.pw, a.dh, a.dw, a.oh, a.ow,
        reinterpret_cast<const void*>(dy), dy_stride.data(), reinterpret_cast<const void*>(x),
        x_stride.data(), reinterpret_cast<void*>(dweight), dw_stride.data(), dtype,
        as_stream(stream));
  }
  check_status("depthwise_conv2d_weight_grad", err);
}

}  // namespace

// ---- winograd.cu (declared here rather than in common.cuh's entry-point section)
namespace fastcnn {
// Winograd F(m x m, 3 x 3), m = 2 or 4; fp32 / fp16 / bf16 (fp32 accumulation).
// winograd_filter_transform: u (alpha^2, k, c) dense, alpha = m + 2, from the 3x3
// filter w (k, c, 3, 3) addressed through w_stride (4 element strides); `flip` reads
// the taps rotated by 180 degrees.  u is fp32 for fp32, else the dtype itself.
cudaError_t winograd_filter_transform(index_t k, index_t c, int m, bool flip, const void* weight,
                                      const index_t* w_stride, void* u, int dtype,
                                      cudaStream_t stream);
// winograd_conv2d_forward: y = act(conv3x3(x, w) + bias + residual) with stride 1,
// padding (ph, pw), oh = h + 2 ph - 2, ow = w + 2 pw - 2, from u of the filter
// transform.  v_work: alpha^2 * c * P elements of u's type, m_work: alpha^2 * k * P
// floats, P = n * ceil(oh / m) * ceil(ow / m).  bias / residual nullable; activation
// 0..4 = none, relu, relu6, silu, gelu.
cudaError_t winograd_conv2d_forward(index_t n, index_t c, index_t h, index_t w, index_t k, int ph,
                                    int pw, index_t oh, index_t ow, int m, const void* x,
                                    const index_t* x_stride, const void* u, const void* bias,
                                    index_t bias_stride, const void* residual,
                                    const index_t* residual_stride, int activation, void* y,
                                    const index_t* y_stride, void* v_work, void* m_work, int dtype,
                                    cudaStream_t stream);
}  // namespace fastcnn

namespace {

void check_winograd_common(const char* op, int m, int dtype) {
  if (m != 2 && m != 4) {
    throw py::value_error(std::string("fastcnn._C.") + op + ": m (output tile) must be 2 or 4, got " +
                          std::to_string(m));
  }
  if (dtype != fastcnn::kFloat32 && dtype != fastcnn::kFloat16 && dtype != fastcnn::kBFloat16) {
    throw py::value_error(std::string("fastcnn._C.") + op + ": unsupported dtype code " +
                          std::to_string(dtype) + " (expected DTYPE_FLOAT32, _FLOAT16 or _BFLOAT16)");
  }
}

void winograd_filter_transform(std::int64_t k, std::int64_t c, int m, bool flip,
                               std::uintptr_t weight, const Strides& w_stride, std::uintptr_t u,
                               int dtype, std::uintptr_t stream) {
  const char* op = "winograd_filter_transform";
  check_winograd_common(op, m, dtype);
  if (k < 0 || c < 0) throw py::value_error(std::string("fastcnn._C.") + op + ": sizes must be >= 0");
  check_lrn_args(op, 0, 0, 0, 0, 1, dtype, {{"w_stride", &w_stride}});
  if (k * c > 0 && (weight == 0 || u == 0)) {
    throw py::value_error(std::string("fastcnn._C.") + op + ": weight and u must be non-null device pointers");
  }
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = fastcnn::winograd_filter_transform(k, c, m, flip, reinterpret_cast<const void*>(weight),
                                             w_stride.data(), reinterpret_cast<void*>(u), dtype,
                                             as_stream(stream));
  }
  check_status(op, err);
}

// geometry: [n, c, h, w, k, ph, pw, oh, ow]
void winograd_conv2d_forward(const Strides& geom, int m, std::uintptr_t x, const Strides& x_stride,
                             std::uintptr_t u, std::uintptr_t bias, std::int64_t bias_stride,
                             std::uintptr_t residual, const Strides& residual_stride,
                             int activation, std::uintptr_t y, const Strides& y_stride,
                             std::uintptr_t v_work, std::uintptr_t m_work, int dtype,
                             std::uintptr_t stream) {
  const char* op = "winograd_conv2d_forward";
  check_winograd_common(op, m, dtype);
  if (geom.size() != 9) {
    throw py::value_error(std::string("fastcnn._C.") + op +
                          ": geometry must be [n, c, h, w, k, ph, pw, oh, ow], got " +
                          std::to_string(geom.size()) + " values");
  }
  for (std::size_t i = 0; i < geom.size(); ++i) {
    if (geom[i] < 0 || ((i == 5 || i == 6) && geom[i] > 0x7fffffffLL)) {
      throw py::value_error(std::string("fastcnn._C.") + op + ": geometry value " +
                            std::to_string(i) + " out of range: " + std::to_string(geom[i]));
    }
  }
  if (geom[7] != geom[2] + 2 * geom[5] - 2 || geom[8] != geom[3] + 2 * geom[6] - 2) {
    throw py::value_error(std::string("fastcnn._C.") + op +
                          ": oh, ow must be h + 2 ph - 2, w + 2 pw - 2 (3x3, stride 1)");
  }
  check_activation(op, activation);
  check_lrn_args(op, 0, 0, 0, 0, 1, dtype, {{"x_stride", &x_stride}, {"y_stride", &y_stride}});
  if (residual != 0) check_lrn_args(op, 0, 0, 0, 0, 1, dtype, {{"residual_stride", &residual_stride}});
  const bool work = geom[0] > 0 && geom[4] > 0 && geom[7] > 0 && geom[8] > 0;
  if (work && (y == 0 || m_work == 0 || (geom[1] > 0 && (x == 0 || u == 0 || v_work == 0)))) {
    throw py::value_error(std::string("fastcnn._C.") + op +
                          ": x, u, y and the workspaces must be non-null device pointers");
  }
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = fastcnn::winograd_conv2d_forward(
        geom[0], geom[1], geom[2], geom[3], geom[4], static_cast<int>(geom[5]),
        static_cast<int>(geom[6]), geom[7], geom[8], m, reinterpret_cast<const void*>(x),
        x_stride.data(), reinterpret_cast<const void*>(u), reinterpret_cast<const void*>(bias),
        bias_stride, reinterpret_cast<const void*>(residual),
        residual != 0 ? residual_stride.data() : nullptr, activation, reinterpret_cast<void*>(y),
        y_stride.data(), reinterpret_cast<void*>(v_work), reinterpret_cast<void*>(m_work), dtype,
        as_stream(stream));
  }
  check_status(op, err);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() =
      "fastcnn._C: fastcnn's CUDA kernels.  Functions take raw device pointers (ints), sizes "
      "and a cudaStream_t (int); they never allocate.  Use fastcnn._ext, not this module, "
      "from torch code.";

  m.attr("DTYPE_FLOAT32") = static_cast<int>(fastcnn::kFloat32);
  m.attr("DTYPE_FLOAT16") = static_cast<int>(fastcnn::kFloat16);
  m.attr("DTYPE_BFLOAT16") = static_cast<int>(fastcnn::kBFloat16);
  m.attr("DTYPE_FLOAT64") = static_cast<int>(fastcnn::kFloat64);
  m.attr("CUDA_RUNTIME_VERSION_BUILT") = static_cast<int>(CUDART_VERSION);

  m.def("axpby", &axpby, py::arg("n"), py::arg("alpha"), py::arg("x"), py::arg("beta"),
        py::arg("y"), py::arg("out"), py::arg("dtype"), py::arg("stream") = 0,
        "out[i] = alpha * x[i] + beta * y[i] for i < n on `stream` (asynchronous).  x, y, out: "
        "device pointers to n contiguous elements of dtype code `dtype`.  Raises RuntimeError "
        "naming the op on a CUDA error.");
  m.def("lrn_forward", &lrn_forward, py::arg("n"), py::arg("c"), py::arg("h"), py::arg("w"),
        py::arg("size"), py::arg("alpha"), py::arg("beta"), py::arg("k"), py::arg("within"),
        py::arg("x"), py::arg("x_stride"), py::arg("y"), py::arg("y_stride"), py::arg("scale"),
        py::arg("scale_stride"), py::arg("dtype"), py::arg("stream") = 0,
        "Local response normalization forward on `stream` (asynchronous): y = x * scale^-beta, "
        "scale = k + alpha/size * window sum of x^2 (across channels, or a size x size spatial "
        "window with alpha/size^2 when `within`).  Pointers are device addresses, strides are 4 "
        "element strides (n, c, h, w); scale (float, double for fp64) may be 0: not written.");
  m.def("lrn_backward", &lrn_backward, py::arg("n"), py::arg("c"), py::arg("h"), py::arg("w"),
        py::arg("size"), py::arg("alpha"), py::arg("beta"), py::arg("k"), py::arg("within"),
        py::arg("dy"), py::arg("dy_stride"), py::arg("x"), py::arg("x_stride"), py::arg("y"),
        py::arg("y_stride"), py::arg("scale"), py::arg("scale_stride"), py::arg("dx"),
        py::arg("dx_stride"), py::arg("dtype"), py::arg("stream") = 0,
        "Local response normalization backward (asynchronous): dx from dy, x, the forward's y "
        "and saved scale.");
  m.def("depthwise_conv2d_forward", &depthwise_forward, py::arg("geometry"), py::arg("x"),
        py::arg("x_stride"), py::arg("weight"), py::arg("w_stride"), py::arg("bias"),
        py::arg("bias_stride"), py::arg("residual"), py::arg("residual_stride"),
        py::arg("activation"), py::arg("y"), py::arg("y_stride"), py::arg("dtype"),
        py::arg("stream") = 0,
        "Depthwise convolution forward (asynchronous): y = act(conv + bias + residual).  "
        "geometry: [n, c, h, w, m, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow] (m: channel "
        "multiplier); weight (c*m, 1, kh, kw); bias and residual may be 0; activation: 0 none, "
        "1 relu, 2 relu6, 3 silu, 4 gelu; strides are 4 element strides.");
  m.def("depthwise_conv2d_input_grad", &depthwise_input_grad, py::arg("geometry"), py::arg("dy"),
        py::arg("dy_stride"), py::arg("weight"), py::arg("w_stride"), py::arg("dx"),
        py::arg("dx_stride"), py::arg("dtype"), py::arg("stream") = 0,
        "Depthwise convolution input gradient (asynchronous), geometry as in the forward.");
  m.def("depthwise_conv2d_weight_grad", &depthwise_weight_grad, py::arg("geometry"),
        py::arg("dy"), py::arg("dy_stride"), py::arg("x"), py::arg("x_stride"), py::arg("dweight"),
        py::arg("dw_stride"), py::arg("dtype"), py::arg("stream") = 0,
        "Depthwise convolution weight gradient (asynchronous, deterministic), geometry as in the "
        "forward.");
  m.def("winograd_filter_transform", &winograd_filter_transform, py::arg("k"), py::arg("c"),
        py::arg("m"), py::arg("flip"), py::arg("weight"), py::arg("w_stride"), py::arg("u"),
        py::arg("dtype"), py::arg("stream") = 0,
        "Winograd F(m x m, 3 x 3) filter transform (asynchronous): u (alpha^2, k, c) dense, alpha "
        "= m + 2, from weight (k, c, 3, 3) with 4 element strides; flip rotates the taps by 180 "
        "degrees.  u is float32 for DTYPE_FLOAT32, else of the dtype.");
  m.def("winograd_conv2d_forward", &winograd_conv2d_forward, py::arg("geometry"), py::arg("m"),
        py::arg("x"), py::arg("x_stride"), py::arg("u"), py::arg("bias"), py::arg("bias_stride"),
        py::arg("residual"), py::arg("residual_stride"), py::arg("activation"), py::arg("y"),
        py::arg("y_stride"), py::arg("v_workspace"), py::arg("m_workspace"), py::arg("dtype"),
        py::arg("stream") = 0,
        "Winograd 3x3 stride-1 convolution (asynchronous): y = act(conv(x) + bias + residual) "
        "from the filter transform u.  geometry: [n, c, h, w, k, ph, pw, oh, ow]; bias / "
        "residual may be 0; activation 0..4 = none, relu, relu6, silu, gelu; v_workspace: "
        "(m+2)^2 * c * P elements of u's type, m_workspace: (m+2)^2 * k * P float32, P = n * "
        "ceil(oh/m) * ceil(ow/m).");
  m.def("_force_int64_indexing", [](bool force) { fastcnn::force_int64_indexing() = force; },
        py::arg("force"),
        "For tests: make every kernel with a 32-bit index instantiation (LRN, depthwise) take "
        "its 64-bit one, which real shapes reach only past 2^31 elements.");
  m.def("available", &available,
        "(ok, reason): whether a CUDA device this build has code for is present; reason is a "
        "sentence saying why not (no driver, no device, no kernel image) or None.");
  m.def("device_count", &device_count, "Number of CUDA devices (0 when there is no driver/device).");
  m.def("cuda_runtime_version", &runtime_version,
        "Version of the CUDA runtime linked into this module, e.g. 13000 for 13.0.");
  m.def("driver_version", &driver_version,
        "Highest CUDA version the installed driver supports, e.g. 13000; 0 when no driver.");
  m.def("built_archs", &built_archs,
        "The -gencode targets compiled in, e.g. ['sm_80', 'sm_90a', 'compute_90'] "
        "(sm_* = SASS, compute_* = PTX JIT-compiled on newer GPUs).");
  m.def("has_kernel_image_for", &has_kernel_image_for, py::arg("major"), py::arg("minor"),
        "Whether the built targets can run on a GPU of compute capability major.minor.");
}
