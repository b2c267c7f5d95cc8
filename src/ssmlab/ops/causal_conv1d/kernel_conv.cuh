// CUDA kernels of causal_conv1d (README.md beside this file): forward, backward and the one-step decode update.
// No torch types: raw pointers and plain Params structs with 64-bit sizes and strides (every offset is int64).
//
// Layout: x (B, L, E) with E contiguous (row strides x_sb, x_sl), weight given transposed as wt (W, E).
// xpad = concat(state, x) along time; xpad row j is x row j - S (S = W - 1), rows j < S come from the state.
//
// Forward: a thread owns VEC consecutive channels (one 8-byte load per row: 4 bf16/fp16, 2 fp32, 1 fp64)
// and kFwdRows consecutive output rows. It loads its kFwdRows + S xpad rows into registers first (all loads
// in flight at once), then forms each output row from W of them. Consecutive threads own consecutive channel
// chunks, so a warp reads one contiguous span of each row. The S halo rows are re-read by the neighbouring
// tile (L2 hits). The thread of the last tile also writes the final state (the last S xpad rows).
//
// Backward: the xpad rows [0, L + S) are cut into tiles of kBwdRows; a thread owns VEC channels of one tile
// (4-byte loads: 2 bf16/fp16, 1 fp32 or fp64)
// and computes, walking the tile's rows j in order,
//   g_r = dL/dz_r = dout_r * silu'(z_r)   (z_r, the pre-activation, recomputed from xpad rows r .. r + S)
//   dxpad_j = sum_k w_k g_{j-k} (+ dfinal_{j-L} for j >= L),   dweight_k += g_r xpad_{r+k},  dbias += g_r
// where g for the S rows before the tile are recomputed (not counted in dweight / dbias). dxpad rows j >= S
// are dx, rows j < S are d initial_state. The grid is sized to the resident blocks and strides over the
// (batch, tile) rows; a block keeps one channel range, so each thread sums dweight / dbias over all its
// tiles in registers, the block sums its warps in shared memory, and writes one partial row per block
// (part: (grid rows, W + 1, E)), summed on the host: no atomics, results do not depend on scheduling.
#pragma once
#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace ssmlab::ops::causal_conv1d_cuda {

inline constexpr int kMaxWidth = 4;
inline constexpr int kFwdRows = 8;     // output rows per forward thread
inline constexpr int kFwdThreads = 128;
inline constexpr int kBwdRows = 8;     // xpad rows per backward tile
inline constexpr int kBwdX = 32;       // backward block: kBwdX channel chunks (one warp) ...
inline constexpr int kBwdY = 8;        // ... by kBwdY tiles (one per warp)
inline constexpr int kUpdateThreads = 128;

struct Params {
  int64_t batch, len, dim;   // B, L, E
  int64_t x_sb, x_sl;        // x strides in elements (E stride 1)
  int64_t dout_sb, dout_sl;  // dout strides in elements (E stride 1)
  bool silu;
  const void* x;      // in_t
  const void* wt;     // acc_t (W, E) contiguous: the weight transposed (rounded to in_t first)
  const void* bias;   // acc_t (E) or null
  const void* state;  // in_t (B, S, E) contiguous or null (zeros)
  // forward
  void* out;  // in_t (B, L, E) contiguous
  void* fin;  // in_t (B, S, E) contiguous
  // backward
  const void* dout;  // in_t, layout dout_*, or null (zero cotangent)
  const void* dfin;  // acc_t (B, S, E) contiguous or null
  void* dx;          // in_t (B, L, E) contiguous
  void* dstate;      // acc_t (B, S, E) contiguous or null (not wanted)
  void* part;        // acc_t (rows, W + 1, E): dweight rows 0..W-1, then dbias
  int64_t rows;      // backward: grid rows (blocks per channel range)
};

// The decode step: out_t = bias + sum_k w_k xpad_k with xpad = (state rows, x_t); state shifted in place.
struct UpdateParams {
  int64_t batch, dim, width;
  int64_t x_sb;                  // x_t (B, E) batch stride (E stride 1)
  int64_t s_sb, s_sw, s_se;      // state (B, W-1, E) strides
  bool silu;
  const void* x;     // in_t
  void* state;       // s_t
  const void* w;     // w_t (E, W) contiguous
  const void* bias;  // w_t (E) or null
  void* out;         // in_t (B, E) contiguous
};

namespace detail {

template <typename T, int N>
struct __align__(sizeof(T) * N) Pack {
  T v[N];
};

template <typename acc_t, typename T>
__device__ __forceinline__ acc_t to_acc(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return static_cast<acc_t>(__bfloat162float(v));
  } else if constexpr (std::is_same_v<T, __half>) {
    return static_cast<acc_t>(__half2float(v));
  } else {
    return static_cast<acc_t>(v);
  }
}

template <typename T, typename acc_t>
__device__ __forceinline__ T from_acc(acc_t v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16(static_cast<float>(v));
  } else if constexpr (std::is_same_v<T, __half>) {
    return __float2half(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
}

// v rounded to T and back (what the reference computes with after `.to(x.dtype)`).
template <typename T, typename acc_t>
__device__ __forceinline__ acc_t round_to(acc_t v) {
  return to_acc<acc_t>(from_acc<T>(v));
}

__device__ __forceinline__ float exp_(float v) { return __expf(v); }
__device__ __forceinline__ double exp_(double v) { return exp(v); }

template <typename T>
__device__ __forceinline__ T sigmoid(T v) {
  return T(1) / (T(1) + exp_(-v));
}

template <typename T, int N>
__device__ __forceinline__ void set_zero(Pack<T, N>& p) {
#pragma unroll
  for (int i = 0; i < N; ++i) p.v[i] = from_acc<T>(0.0f);
}

template <typename T, int N>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}

template <typename T, int N>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& v) {
  *reinterpret_cast<Pack<T, N>*>(p) = v;
}

}  // namespace detail

// Grid-stride over items (b, tile, channel chunk), channel chunk fastest. E % VEC == 0 and every row start
// VEC-aligned (the host checks).
template <typename in_t, typename acc_t, int W, int VEC>
__global__ void __launch_bounds__(kFwdThreads) conv_fwd_kernel(const Params p) {
  using namespace detail;
  using P = Pack<in_t, VEC>;
  constexpr int R = kFwdRows, S = W - 1, ROWS = R + S;
  const int64_t L = p.len, E = p.dim;
  const int64_t nec = E / VEC, ntile = (L + R - 1) / R;
  const int64_t items = p.batch * ntile * nec;
  const in_t* __restrict__ x = static_cast<const in_t*>(p.x);
  const in_t* __restrict__ st = static_cast<const in_t*>(p.state);
  const acc_t* __restrict__ wt = static_cast<const acc_t*>(p.wt);
  const acc_t* __restrict__ bias = static_cast<const acc_t*>(p.bias);
  in_t* __restrict__ out = static_cast<in_t*>(p.out);
  in_t* __restrict__ fin = static_cast<in_t*>(p.fin);

  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * kFwdThreads + threadIdx.x; idx < items;
       idx += static_cast<int64_t>(gridDim.x) * kFwdThreads) {
    const int64_t ec = idx % nec, rest = idx / nec;
    const int64_t tile = rest % ntile, b = rest / ntile;
    const int64_t e0 = ec * VEC, t0 = tile * R;

    // raw[i] = xpad row t0 + i = x row t0 + i - S.
    P raw[ROWS];
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
      const int64_t t = t0 + i - S;
      if (t >= 0 && t < L) {
        raw[i] = load_pack<in_t, VEC>(x + b * p.x_sb + t * p.x_sl + e0);
      } else if (t < 0 && st != nullptr) {
        raw[i] = load_pack<in_t, VEC>(st + (b * S + S + t) * E + e0);
      } else {
        set_zero(raw[i]);
      }
    }
    acc_t w[W][VEC], bv[VEC];
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      bv[v] = bias != nullptr ? bias[e0 + v] : acc_t(0);
#pragma unroll
      for (int k = 0; k < W; ++k) w[k][v] = wt[k * E + e0 + v];
    }
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int64_t t = t0 + i;
      if (t < L) {
        P o;
#pragma unroll
        for (int v = 0; v < VEC; ++v) {
          acc_t acc = bv[v];
#pragma unroll
          for (int k = 0; k < W; ++k) acc += w[k][v] * to_acc<acc_t>(raw[i + k].v[v]);
          if (p.silu) acc = acc * sigmoid(acc);
          o.v[v] = from_acc<in_t>(acc);
        }
        store_pack<in_t, VEC>(out + (b * L + t) * E + e0, o);
      }
    }
    // final_state = xpad rows L .. L + S - 1 = x rows L - S .. L - 1 (state rows where negative).
    if constexpr (S > 0) {
      if (tile == ntile - 1) {
#pragma unroll
        for (int i = 0; i < ROWS; ++i) {
          const int64_t t = t0 + i - S;
          if (t >= L - S && t < L) store_pack<in_t, VEC>(fin + (b * S + t - (L - S)) * E + e0, raw[i]);
        }
      }
    }
  }
}

// grid: kBwdRows-row tiles of xpad; blockIdx.x = channel range (kBwdX chunks of VEC) + nEx * grid row.
template <typename in_t, typename acc_t, int W, int VEC>
__global__ void __launch_bounds__(kBwdX* kBwdY) conv_bwd_kernel(const Params p) {
  using namespace detail;
  using P = Pack<in_t, VEC>;
  constexpr int R = kBwdRows, S = W - 1;
  const int64_t L = p.len, E = p.dim;
  const int64_t nec = E / VEC, nex = (nec + kBwdX - 1) / kBwdX;
  const int64_t ntile = (L + S + R - 1) / R, items = p.batch * ntile;
  const int64_t ex = blockIdx.x % nex, row = blockIdx.x / nex;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t ec = ex * kBwdX + tx;
  const bool on = ec < nec;
  const int64_t e0 = ec * VEC;

  const in_t* __restrict__ x = static_cast<const in_t*>(p.x);
  const in_t* __restrict__ st = static_cast<const in_t*>(p.state);
  const in_t* __restrict__ dout = static_cast<const in_t*>(p.dout);
  const acc_t* __restrict__ dfin = static_cast<const acc_t*>(p.dfin);
  const acc_t* __restrict__ wt = static_cast<const acc_t*>(p.wt);
  const acc_t* __restrict__ bias = static_cast<const acc_t*>(p.bias);
  in_t* __restrict__ dx = static_cast<in_t*>(p.dx);
  acc_t* __restrict__ dstate = static_cast<acc_t*>(p.dstate);

  acc_t w[W][VEC], bv[VEC], dw[W][VEC], db[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    bv[v] = (on && bias != nullptr) ? bias[e0 + v] : acc_t(0);
    db[v] = 0;
#pragma unroll
    for (int k = 0; k < W; ++k) {
      w[k][v] = on ? wt[k * E + e0 + v] : acc_t(0);
      dw[k][v] = 0;
    }
  }

  if (on) {
    for (int64_t item = row * kBwdY + ty; item < items; item += static_cast<int64_t>(p.rows) * kBwdY) {
      const int64_t b = item / ntile, j0 = (item % ntile) * R;
      // xr[i] = xpad row j0 - S + i (i < R + 2S); dr[i] = dout row r = j0 - S + i (i < R + S).
      P xr[R + 2 * S], dr[R + S];
#pragma unroll
      for (int i = 0; i < R + 2 * S; ++i) {
        const int64_t j = j0 - S + i, t = j - S;
        if (t >= 0 && t < L) {
          xr[i] = load_pack<in_t, VEC>(x + b * p.x_sb + t * p.x_sl + e0);
        } else if (j >= 0 && t < 0 && st != nullptr) {
          xr[i] = load_pack<in_t, VEC>(st + (b * S + j) * E + e0);
        } else {
          set_zero(xr[i]);
        }
      }
#pragma unroll
      for (int i = 0; i < R + S; ++i) {
        const int64_t r = j0 - S + i;
        if (r >= 0 && r < L && dout != nullptr) {
          dr[i] = load_pack<in_t, VEC>(dout + b * p.dout_sb + r * p.dout_sl + e0);
        } else {
          set_zero(dr[i]);
        }
      }
      acc_t g[R + S][VEC];  // g[i] = dL/dz of output row j0 - S + i (zero outside [0, L))
#pragma unroll
      for (int i = 0; i < R + S; ++i) {
        const int64_t r = j0 - S + i;
        const bool valid = r >= 0 && r < L;
#pragma unroll
        for (int v = 0; v < VEC; ++v) {
          acc_t gv = to_acc<acc_t>(dr[i].v[v]);
          if (p.silu) {
            acc_t z = bv[v];
#pragma unroll
            for (int k = 0; k < W; ++k) z += w[k][v] * to_acc<acc_t>(xr[i + k].v[v]);
            const acc_t s = sigmoid(z);
            gv = gv * s * (acc_t(1) + z * (acc_t(1) - s));
          }
          g[i][v] = valid ? gv : acc_t(0);
          if (i >= S) {  // row r is this tile's own: counted once in dweight / dbias
#pragma unroll
            for (int k = 0; k < W; ++k) dw[k][v] += g[i][v] * to_acc<acc_t>(xr[i + k].v[v]);
            db[v] += g[i][v];
          }
        }
        if (i >= S) {
          const int64_t j = j0 + i - S;  // xpad row whose gradient is now complete
          if (j < L + S) {
            acc_t d[VEC];
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
              acc_t acc = (j >= L && dfin != nullptr) ? dfin[(b * S + j - L) * E + e0 + v] : acc_t(0);
#pragma unroll
              for (int k = 0; k < W; ++k) acc += w[k][v] * g[i - k][v];
              d[v] = acc;
            }
            if (j >= S) {
              P o;
#pragma unroll
              for (int v = 0; v < VEC; ++v) o.v[v] = from_acc<in_t>(d[v]);
              store_pack<in_t, VEC>(dx + (b * L + j - S) * E + e0, o);
            } else if (dstate != nullptr) {
#pragma unroll
              for (int v = 0; v < VEC; ++v) dstate[(b * S + j) * E + e0 + v] = d[v];
            }
          }
        }
      }
    }
  }

  // Block sum of dweight / dbias over the kBwdY warps, then one partial row per block.
  __shared__ acc_t red[kBwdY][W + 1][kBwdX * VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
#pragma unroll
    for (int k = 0; k < W; ++k) red[ty][k][tx * VEC + v] = dw[k][v];
    red[ty][W][tx * VEC + v] = db[v];
  }
  __syncthreads();
  // (W + 1) * kBwdX * VEC sums, spread over the block's threads.
  acc_t* __restrict__ part = static_cast<acc_t*>(p.part);
  const int tid = ty * kBwdX + tx;
  for (int q = tid; q < (W + 1) * kBwdX * VEC; q += kBwdX * kBwdY) {
    const int k = q / (kBwdX * VEC), c = q % (kBwdX * VEC);
    const int64_t e = ex * kBwdX * VEC + c;
    if (e >= E) continue;
    acc_t s = 0;
#pragma unroll
    for (int y = 0; y < kBwdY; ++y) s += red[y][k][c];
    part[(row * (W + 1) + k) * E + e] = s;
  }
}

// One thread per (b, e). Values are rounded to in_t before use (state and weight as the reference takes them
// to x's dtype); the shifted state keeps those rounded values, the new last row is x_t.
template <typename in_t, typename s_t, typename w_t, typename acc_t>
__global__ void __launch_bounds__(kUpdateThreads) conv_update_kernel(const UpdateParams p) {
  using namespace detail;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kUpdateThreads + threadIdx.x;
  if (idx >= p.batch * p.dim) return;
  const int64_t b = idx / p.dim, e = idx % p.dim;
  const int W = static_cast<int>(p.width), S = W - 1;
  const in_t* __restrict__ x = static_cast<const in_t*>(p.x);
  s_t* __restrict__ st = static_cast<s_t*>(p.state);
  const w_t* __restrict__ w = static_cast<const w_t*>(p.w);
  const w_t* __restrict__ bias = static_cast<const w_t*>(p.bias);
  acc_t xp[kMaxWidth];
#pragma unroll
  for (int k = 0; k < kMaxWidth - 1; ++k)
    xp[k] = k < S ? round_to<in_t>(to_acc<acc_t>(st[b * p.s_sb + k * p.s_sw + e * p.s_se])) : acc_t(0);
  const acc_t xt = to_acc<acc_t>(x[b * p.x_sb + e]);
  acc_t acc = bias != nullptr ? round_to<in_t>(to_acc<acc_t>(bias[e])) : acc_t(0);
#pragma unroll
  for (int k = 0; k < kMaxWidth; ++k) {
    if (k < W) {
      const acc_t v = k < S ? xp[k] : xt;
      acc += round_to<in_t>(to_acc<acc_t>(w[e * W + k])) * v;
    }
  }
  if (p.silu) acc = acc * sigmoid(acc);
  static_cast<in_t*>(p.out)[idx] = from_acc<in_t>(acc);
#pragma unroll
  for (int k = 0; k < kMaxWidth - 1; ++k)
    if (k < S) st[b * p.s_sb + k * p.s_sw + e * p.s_se] = from_acc<s_t>(k + 1 < S ? xp[k + 1] : xt);
}

}  // namespace ssmlab::ops::causal_conv1d_cuda
