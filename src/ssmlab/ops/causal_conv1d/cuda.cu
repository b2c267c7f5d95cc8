// Host launchers of the CUDA causal_conv1d (cuda.h): dtype and layout preparation, the vector width and
// grid choice, dtype / width dispatch, launches on the current stream. Kernels: kernel_conv.cuh.
#include "ssmlab/ops/causal_conv1d/cuda.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <utility>

#include <cstdlib>
#include <string>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ssmlab/ops/causal_conv1d/kernel_conv.cuh"

namespace ssmlab::ops::causal_conv1d_cuda_host {
namespace {

namespace k = ssmlab::ops::causal_conv1d_cuda;
using at::Tensor;

at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

bool float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

// Blocks of `kernel` (with `threads` threads) resident on the whole current device at once; asked once per
// (kernel, device) and cached (the occupancy query is not free at decode-step scales).
int64_t resident_blocks(const void* kernel, int threads) {
  int dev = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int64_t> cache;
  const std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find({kernel, dev});
  if (it != cache.end()) return it->second;
  int sms = 1, per_sm = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
  const int64_t n = static_cast<int64_t>(std::max(per_sm, 1)) * sms;
  cache.emplace(std::make_pair(kernel, dev), n);
  return n;
}

// Whether rows of `t` (E contiguous, row strides `sb`, `sl` in elements) can be read `vec` elements at a time.
bool vec_ok(const Tensor& t, int64_t sb, int64_t sl, int64_t e, int vec) {
  if (!t.defined()) return true;
  const auto addr = reinterpret_cast<std::uintptr_t>(t.const_data_ptr());
  return addr % (static_cast<std::uintptr_t>(vec) * t.element_size()) == 0 && sb % vec == 0 && sl % vec == 0 &&
         e % vec == 0;
}

// x with E contiguous (a row-strided view is kept as is).
Tensor rows_of(const Tensor& t) { return t.stride(2) == 1 ? t : t.contiguous(); }

struct Prepared {
  Tensor x, wt, bias, state;  // x: E contiguous; wt (W, E), bias: compute dtype; state: x's dtype, contiguous
  int64_t b, l, e, w;
};

Prepared prepare(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& state) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 3, "causal_conv1d_cuda: x must be a CUDA (B, L, E) tensor");
  const auto xt = x.scalar_type(), ct = acc_dtype(xt);
  TORCH_CHECK(float_dtype(xt), "causal_conv1d_cuda: x must be float32/float64/bfloat16/float16; got ", xt);
  Prepared q;
  q.b = x.size(0);
  q.l = x.size(1);
  q.e = x.size(2);
  q.w = weight.size(1);
  TORCH_CHECK(q.w >= 1 && q.w <= k::kMaxWidth, "causal_conv1d_cuda: W = ", q.w, " outside [1, ", k::kMaxWidth, "]");
  q.x = rows_of(x);
  // Rounded to x's dtype first (what the reference computes with), then widened.
  q.wt = weight.to(xt).to(ct).t().contiguous();
  if (bias.defined()) q.bias = bias.to(xt).to(ct).contiguous();
  if (state.defined() && q.w > 1) q.state = state.to(xt).contiguous();
  return q;
}

k::Params params_of(const Prepared& q, bool silu) {
  k::Params p{};
  p.batch = q.b;
  p.len = q.l;
  p.dim = q.e;
  p.x_sb = q.x.stride(0);
  p.x_sl = q.x.stride(1);
  p.silu = silu;
  p.x = q.x.const_data_ptr();
  p.wt = q.wt.const_data_ptr();
  p.bias = q.bias.defined() ? q.bias.const_data_ptr() : nullptr;
  p.state = q.state.defined() ? q.state.const_data_ptr() : nullptr;
  return p;
}

template <typename in_t, typename acc_t, int W, int VEC>
void launch_fwd(const k::Params& p) {
  const int64_t items = p.batch * ((p.len + k::kFwdRows - 1) / k::kFwdRows) * (p.dim / VEC);
  if (items == 0) return;
  auto kernel = &k::conv_fwd_kernel<in_t, acc_t, W, VEC>;
  const int64_t needed = (items + k::kFwdThreads - 1) / k::kFwdThreads;
  const int64_t cap = std::min<int64_t>(std::numeric_limits<int32_t>::max(),
                                        8 * resident_blocks(reinterpret_cast<const void*>(kernel), k::kFwdThreads));
  const int64_t blocks = std::min(needed, cap);  // beyond that the kernel strides
  kernel<<<static_cast<unsigned>(blocks), k::kFwdThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Returns the grid rows (the partial rows of dweight / dbias).
template <typename in_t, typename acc_t, int W, int VEC>
int64_t bwd_rows(const k::Params& p) {
  const int64_t items = p.batch * ((p.len + W - 1 + k::kBwdRows - 1) / k::kBwdRows);
  const int64_t nex = (p.dim / VEC + k::kBwdX - 1) / k::kBwdX;
  auto kernel = &k::conv_bwd_kernel<in_t, acc_t, W, VEC>;
  const int64_t resident = resident_blocks(reinterpret_cast<const void*>(kernel), k::kBwdX * k::kBwdY);
  // Enough blocks to fill the device once; each thread then walks ~items / (rows * kBwdY) tiles.
  const int64_t max_rows = std::max<int64_t>(1, (items + k::kBwdY - 1) / k::kBwdY);
  return std::clamp<int64_t>(resident / std::max<int64_t>(nex, 1), 1, max_rows);
}

template <typename in_t, typename acc_t, int W, int VEC>
void launch_bwd(const k::Params& p) {
  const int64_t nex = (p.dim / VEC + k::kBwdX - 1) / k::kBwdX;
  const int64_t blocks = nex * p.rows;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "causal_conv1d_cuda: E = ", p.dim,
              " too large for one grid");
  const dim3 block(k::kBwdX, k::kBwdY);
  k::conv_bwd_kernel<in_t, acc_t, W, VEC>
      <<<static_cast<unsigned>(blocks), block, 0, c10::cuda::getCurrentCUDAStream()>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Vector widths: 8-byte rows in the forward (2 fp32, 1 fp64), 4-byte rows for 16-bit inputs and in the backward (it
// holds more rows in registers). Chosen by register counts (ptxas -v, sm_90, W 4): 8-byte bf16 rows (4 channels a
// thread) took 127 registers (16 warps per SM) and ran the bf16 forward at 124 us against 78 us for fp32 at
// B8 E1536 L2048 on an H100 (2026-12-07, peers kit); 4-byte bf16 rows take 72 registers, as fp32's 8-byte rows (70),
// no spills, with half of fp32's bytes per load. SSMLAB_CONV_FWD_VEC16=4 selects the 8-byte 16-bit rows again (for
// timing the two side by side; read on every call).
template <typename in_t>
constexpr int kVecFwd = sizeof(in_t) == 2 ? 2 : static_cast<int>(8 / sizeof(in_t));

bool wide_16bit_rows() {
  const char* v = std::getenv("SSMLAB_CONV_FWD_VEC16");
  return v != nullptr && std::string(v) == "4";
}
template <typename in_t>
constexpr int kVecBwd = sizeof(in_t) >= 4 ? 1 : static_cast<int>(4 / sizeof(in_t));

template <typename F>
void dispatch_dtype(at::ScalarType t, const F& f) {
  switch (t) {
    case at::kFloat: return f(float{}, float{});
    case at::kDouble: return f(double{}, double{});
    case at::kBFloat16: return f(__nv_bfloat16{}, float{});
    case at::kHalf: return f(__half{}, float{});
    default: TORCH_CHECK(false, "causal_conv1d_cuda: unsupported dtype ", t);
  }
}

template <typename F>
void dispatch_width(int64_t w, const F& f) {
  switch (w) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    default: TORCH_CHECK(false, "causal_conv1d_cuda: unsupported width ", w);
  }
}

}  // namespace

Forward forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& state, bool silu) {
  const c10::cuda::CUDAGuard guard(x.device());
  const Prepared q = prepare(x, weight, bias, state);
  Forward f;
  f.out = at::empty({q.b, q.l, q.e}, x.options());
  f.final_state = at::empty({q.b, q.w - 1, q.e}, x.options());
  k::Params p = params_of(q, silu);
  p.out = f.out.mutable_data_ptr();
  p.fin = f.final_state.numel() > 0 ? f.final_state.mutable_data_ptr() : nullptr;
  dispatch_dtype(x.scalar_type(), [&](auto in_v, auto acc_v) {
    using in_t = decltype(in_v);
    using acc_t = decltype(acc_v);
    constexpr int V = kVecFwd<in_t>;
    auto vec_for = [&](int v) {
      return vec_ok(q.x, p.x_sb, p.x_sl, q.e, v) && vec_ok(q.state, 0, 0, q.e, v) && vec_ok(f.out, 0, 0, q.e, v) &&
             vec_ok(f.final_state, 0, 0, q.e, v);
    };
    const bool vec = vec_for(V);
    const bool wide16 = sizeof(in_t) == 2 && wide_16bit_rows() && vec_for(4);
    dispatch_width(q.w, [&](auto wc) {
      constexpr int W = decltype(wc)::value;
      if constexpr (sizeof(in_t) == 2) {
        if (wide16) return launch_fwd<in_t, acc_t, W, 4>(p);
      }
      if (vec)
        launch_fwd<in_t, acc_t, W, V>(p);
      else
        launch_fwd<in_t, acc_t, W, 1>(p);
    });
  });
  return f;
}

Grads backward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& state, bool silu,
               const Tensor& dout_in, const Tensor& dfin_in) {
  const c10::cuda::CUDAGuard guard(x.device());
  const Prepared q = prepare(x, weight, bias, state);
  const auto xt = x.scalar_type(), ct = acc_dtype(xt);
  const auto copt = x.options().dtype(ct);
  Tensor dout;
  if (dout_in.defined()) dout = rows_of(dout_in.to(xt));
  const int64_t s = q.w - 1;
  const Tensor dfin = (dfin_in.defined() && s > 0) ? dfin_in.to(ct).contiguous() : Tensor();
  Grads g;
  g.dx = at::empty({q.b, q.l, q.e}, x.options());
  Tensor dstate = (state.defined() && s > 0) ? at::empty({q.b, s, q.e}, copt) : Tensor();

  k::Params p = params_of(q, silu);
  p.dout = dout.defined() ? dout.const_data_ptr() : nullptr;
  p.dout_sb = dout.defined() ? dout.stride(0) : 0;
  p.dout_sl = dout.defined() ? dout.stride(1) : 0;
  p.dfin = dfin.defined() ? dfin.const_data_ptr() : nullptr;
  p.dx = g.dx.mutable_data_ptr();
  p.dstate = dstate.defined() ? dstate.mutable_data_ptr() : nullptr;
  Tensor part;
  dispatch_dtype(xt, [&](auto in_v, auto acc_v) {
    using in_t = decltype(in_v);
    using acc_t = decltype(acc_v);
    constexpr int V = kVecBwd<in_t>;
    const bool vec = vec_ok(q.x, p.x_sb, p.x_sl, q.e, V) && vec_ok(q.state, 0, 0, q.e, V) &&
                     vec_ok(dout, p.dout_sb, p.dout_sl, q.e, V) && vec_ok(g.dx, 0, 0, q.e, V);
    dispatch_width(q.w, [&](auto wc) {
      constexpr int W = decltype(wc)::value;
      auto run = [&](auto vc) {
        constexpr int VV = decltype(vc)::value;
        p.rows = bwd_rows<in_t, acc_t, W, VV>(p);
        part = at::empty({p.rows, W + 1, q.e}, copt);
        p.part = part.mutable_data_ptr();
        if (q.b * (q.l + s) * q.e > 0) launch_bwd<in_t, acc_t, W, VV>(p);
        else part.zero_();
      };
      if (vec)
        run(std::integral_constant<int, V>{});
      else
        run(std::integral_constant<int, 1>{});
    });
  });
  const Tensor sums = part.sum(0);  // (W + 1, E)
  g.dweight = sums.narrow(0, 0, q.w).t().contiguous().to(weight.scalar_type());
  if (bias.defined()) g.dbias = sums.select(0, q.w).to(bias.scalar_type());
  if (state.defined()) g.dstate = s > 0 ? dstate.to(state.scalar_type()) : at::zeros_like(state);
  return g;
}

bool update_supports(const Tensor& x_t, const Tensor& state, const Tensor& weight, const Tensor& bias) {
  if (!x_t.defined() || !state.defined() || !weight.defined() || !x_t.is_cuda()) return false;
  const auto xt = x_t.scalar_type(), ct = acc_dtype(xt);
  if (!float_dtype(xt)) return false;
  if (state.device() != x_t.device() || weight.device() != x_t.device()) return false;
  if (state.scalar_type() != xt && state.scalar_type() != ct) return false;
  if (weight.scalar_type() != xt && weight.scalar_type() != ct) return false;
  if (bias.defined() && (bias.device() != x_t.device() || bias.scalar_type() != weight.scalar_type())) return false;
  return weight.dim() == 2 && weight.size(1) >= 1 && weight.size(1) <= k::kMaxWidth;
}

Tensor update(const Tensor& x_t, Tensor& state, const Tensor& weight, const Tensor& bias, bool silu) {
  TORCH_CHECK(update_supports(x_t, state, weight, bias), "causal_conv1d_cuda update: unsupported inputs");
  const c10::cuda::CUDAGuard guard(x_t.device());
  const Tensor x = x_t.stride(1) == 1 ? x_t : x_t.contiguous();
  const Tensor w = weight.contiguous();
  const Tensor b = bias.defined() ? bias.contiguous() : Tensor();
  Tensor out = at::empty({x.size(0), x.size(1)}, x.options());
  k::UpdateParams p{};
  p.batch = x.size(0);
  p.dim = x.size(1);
  p.width = w.size(1);
  p.x_sb = x.stride(0);
  p.s_sb = state.stride(0);
  p.s_sw = state.stride(1);
  p.s_se = state.stride(2);
  p.silu = silu;
  p.x = x.const_data_ptr();
  p.state = state.numel() > 0 ? state.mutable_data_ptr() : nullptr;
  p.w = w.const_data_ptr();
  p.bias = b.defined() ? b.const_data_ptr() : nullptr;
  p.out = out.mutable_data_ptr();
  const int64_t n = p.batch * p.dim;
  if (n == 0) return out;
  const int64_t blocks = (n + k::kUpdateThreads - 1) / k::kUpdateThreads;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "causal_conv1d_update: B * E too large");
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const bool s_same = state.scalar_type() == x.scalar_type(), w_same = w.scalar_type() == x.scalar_type();
  dispatch_dtype(x.scalar_type(), [&](auto in_v, auto acc_v) {
    using in_t = decltype(in_v);
    using acc_t = decltype(acc_v);
    auto go = [&](auto s_v, auto w_v) {
      k::conv_update_kernel<in_t, decltype(s_v), decltype(w_v), acc_t>
          <<<static_cast<unsigned>(blocks), k::kUpdateThreads, 0, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if constexpr (std::is_same_v<in_t, acc_t>) {
      go(in_t{}, in_t{});
    } else {
      if (s_same && w_same) go(in_t{}, in_t{});
      else if (s_same) go(in_t{}, acc_t{});
      else if (w_same) go(acc_t{}, in_t{});
      else go(acc_t{}, acc_t{});
    }
  });
  return out;
}

}  // namespace ssmlab::ops::causal_conv1d_cuda_host
