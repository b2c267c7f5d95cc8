// CUDA kernels of the WKV recurrence (no torch types; launched from cuda.cu). One thread per (sequence b,
// channel c) walks time; neighbouring threads take neighbouring channels, so every load of k, v, y and the
// saved states is coalesced. Same recurrences as cpu.cpp (see README.md for the backward).
#pragma once
#include <cstdint>

namespace ssmlab::ops::wkv_kernels {

template <typename T>
struct Params {
  int64_t batch, len, chans;
  const T *w, *u, *k, *v, *h0;  // h0 may be null (empty state)
  T *y, *fin, *states;           // states (B, L, 3, C)
  const T *dy, *dfin;            // may be null
  T *dk, *dv, *dw_part, *du_part, *dh0;
};

template <typename T>
__device__ __forceinline__ T exp_(T x);
template <>
__device__ __forceinline__ float exp_(float x) { return __expf(x); }
template <>
__device__ __forceinline__ double exp_(double x) { return exp(x); }

template <typename T>
__global__ void forward_kernel(Params<T> p, T empty) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.batch * p.chans) return;
  const int64_t b = idx / p.chans, c = idx % p.chans, C = p.chans, L = p.len;
  T aa = p.h0 ? p.h0[(b * 3 + 0) * C + c] : T(0);
  T bb = p.h0 ? p.h0[(b * 3 + 1) * C + c] : T(0);
  T pp = p.h0 ? p.h0[(b * 3 + 2) * C + c] : empty;
  const T w = p.w[c], u = p.u[c];
  for (int64_t t = 0; t < L; ++t) {
    const int64_t i = (b * L + t) * C + c;
    T* st = p.states + (b * L + t) * 3 * C + c;
    st[0] = aa;
    st[C] = bb;
    st[2 * C] = pp;
    const T kt = p.k[i], vt = p.v[i];
    const T ww = u + kt;
    T o = pp > ww ? pp : ww;
    T e1 = exp_(pp - o), e2 = exp_(ww - o);
    p.y[i] = (e1 * aa + e2 * vt) / (e1 * bb + e2);
    const T wp = w + pp;
    o = wp > kt ? wp : kt;
    e1 = exp_(wp - o);
    e2 = exp_(kt - o);
    aa = e1 * aa + e2 * vt;
    bb = e1 * bb + e2;
    pp = o;
  }
  p.fin[(b * 3 + 0) * C + c] = aa;
  p.fin[(b * 3 + 1) * C + c] = bb;
  p.fin[(b * 3 + 2) * C + c] = pp;
}

template <typename T>
__global__ void backward_kernel(Params<T> p) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.batch * p.chans) return;
  const int64_t b = idx / p.chans, c = idx % p.chans, C = p.chans, L = p.len;
  T ga = p.dfin ? p.dfin[(b * 3 + 0) * C + c] : T(0);
  T gb = p.dfin ? p.dfin[(b * 3 + 1) * C + c] : T(0);
  T dw = T(0), du = T(0);
  const T w = p.w[c], u = p.u[c];
  for (int64_t t = L - 1; t >= 0; --t) {
    const int64_t i = (b * L + t) * C + c;
    const T* st = p.states + (b * L + t) * 3 * C + c;
    const T aa = st[0], bb = st[C], pp = st[2 * C];
    const T g = p.dy ? p.dy[i] : T(0);
    const T kt = p.k[i], vt = p.v[i], yt = p.y[i];
    const T ww = u + kt;
    const T o = pp > ww ? pp : ww;
    const T e1 = exp_(pp - o), e2 = exp_(ww - o);
    const T gd = g / (e1 * bb + e2);
    const T wp = w + pp;
    const T p1 = wp > kt ? wp : kt;
    const T f1 = exp_(wp - p1), f2 = exp_(kt - p1);
    const T direct = e2 * (vt - yt) * gd;
    p.dk[i] = f2 * (vt * ga + gb) + direct;
    p.dv[i] = f2 * ga + e2 * gd;
    dw += f1 * (aa * ga + bb * gb);
    du += direct;
    ga = e1 * gd + f1 * ga;
    gb = -e1 * yt * gd + f1 * gb;
  }
  p.dw_part[b * C + c] = dw;
  p.du_part[b * C + c] = du;
  if (p.dh0) {
    p.dh0[(b * 3 + 0) * C + c] = ga;
    p.dh0[(b * 3 + 1) * C + c] = gb;
    p.dh0[(b * 3 + 2) * C + c] = p.h0[(b * 3 + 0) * C + c] * ga + p.h0[(b * 3 + 1) * C + c] * gb;
  }
}

}  // namespace ssmlab::ops::wkv_kernels
