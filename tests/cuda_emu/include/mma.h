// Host emulation of the warp matrix functions (nvcuda::wmma) that csrc/ uses
// (tests/cuda_emu). Every thread of a warp holds the whole tile and computes the
// whole product in fp32 (the tensor cores' exact products, accumulated in fp32);
// lane 0 alone stores it, so the warp's collective store writes each element once.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_runtime.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment;

template <int M, int N, int K, typename T>
struct fragment<matrix_a, M, N, K, T, row_major> {
  static constexpr int rows = M, cols = K;
  float x[M * K];
};
template <int M, int N, int K, typename T>
struct fragment<matrix_b, M, N, K, T, row_major> {
  static constexpr int rows = K, cols = N;
  float x[K * N];
};
template <int M, int N, int K>
struct fragment<accumulator, M, N, K, float, void> {
  static constexpr int rows = M, cols = N;
  float x[M * N];
};

template <typename Frag>
inline void fill_fragment(Frag& f, float v) {
  for (float& e : f.x) e = v;
}

template <typename Use, int M, int N, int K, typename T, typename S>
inline void load_matrix_sync(fragment<Use, M, N, K, T, row_major>& f, const S* p, unsigned int ldm) {
  using F = fragment<Use, M, N, K, T, row_major>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = to_float(p[r * ldm + c]);
}

template <int M, int N, int K, typename T>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, row_major>& a,
                     const fragment<matrix_b, M, N, K, T, row_major>& b,
                     const fragment<accumulator, M, N, K, float>& c) {
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float s = c.x[i * N + j];
      for (int k = 0; k < K; ++k) s += a.x[i * K + k] * b.x[k * N + j];
      out[i * N + j] = s;
    }
  for (int e = 0; e < M * N; ++e) d.x[e] = out[e];
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned int ldm,
                              layout_t layout) {
  if (::emu::lane() != 0) return;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      const float v = f.x[i * N + j];
      if (layout == mem_row_major) p[i * ldm + j] = v;
      else p[j * ldm + i] = v;
    }
}

}  // namespace wmma
}  // namespace nvcuda
