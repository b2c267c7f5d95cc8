// Host launchers of the CUDA selective scan (cuda.h): layout and dtype preparation, the Params struct,
// dtype / max-N dispatch, launches on the current stream. Kernels: kernel_scan.cuh.
#include "ssmlab/ops/selective_scan/cuda.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <type_traits>
#include <string>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ssmlab/ops/selective_scan/kernel_scan.cuh"
#include "ssmlab/ops/selective_scan/kernel_scan_fast.cuh"

namespace ssmlab::ops::selective_scan_cuda_host {
namespace {

namespace k = ssmlab::ops::selective_scan_cuda;
using at::Tensor;

static_assert(kMaxState == k::kMaxState, "cuda.h and kernel_scan.cuh disagree on the largest N");

at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Everything the kernels read, in their layout: u, delta, z, B, C contiguous in u's dtype (B, C viewed as
// (B, L, G, N)); A, D, bias, h0 contiguous in the compute dtype.
struct Prepared {
  Tensor u, delta, z, B, C, A, D, bias, h0;
  int64_t b, l, e, n, g, k;
};

Prepared prepare(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                 const Tensor& D, const Tensor& z, const Tensor& bias, const Tensor& h0) {
  TORCH_CHECK(u.is_cuda(), "selective_scan_cuda: u must be a CUDA tensor; got ", u.device());
  const auto it = u.scalar_type();
  TORCH_CHECK(it == at::kFloat || it == at::kDouble || it == at::kBFloat16 || it == at::kHalf,
              "selective_scan_cuda: u must be float32/float64/bfloat16/float16; got ", it);
  for (const Tensor* t : {&delta, &B, &C, &z})
    if (t->defined())
      TORCH_CHECK(t->scalar_type() == it, "selective_scan_cuda: delta, z, B, C must have u's dtype ", it,
                  "; got ", t->scalar_type());
  const auto ct = acc_dtype(it);
  Prepared p;
  p.b = u.size(0);
  p.l = u.size(1);
  p.e = u.size(2);
  p.n = A.size(1);
  p.g = B.dim() == 4 ? B.size(2) : 1;
  p.k = (p.l + k::kChunk - 1) / k::kChunk;
  TORCH_CHECK(p.n >= 1 && p.n <= kMaxState, "selective_scan_cuda: N = ", p.n, " outside [1, ", kMaxState, "]");
  p.u = u.contiguous();
  p.delta = delta.contiguous();
  p.z = z.defined() ? z.contiguous() : Tensor();
  p.B = B.contiguous().view({p.b, p.l, p.g, p.n});
  p.C = C.contiguous().view({p.b, p.l, p.g, p.n});
  auto conv = [&](const Tensor& t) { return t.defined() ? t.to(ct).contiguous() : Tensor(); };
  p.A = conv(A);
  p.D = conv(D);
  p.bias = conv(bias);
  p.h0 = conv(h0);
  return p;
}

k::Params params_of(const Prepared& q, bool softplus) {
  k::Params p{};
  p.batch = q.b;
  p.len = q.l;
  p.dim = q.e;
  p.dstate = q.n;
  p.ngroups = q.g;
  p.chunks = q.k;
  p.dim_per_group = q.e / q.g;
  p.x_sb = q.l * q.e;
  p.x_sl = q.e;
  p.bc_sb = q.l * q.g * q.n;
  p.bc_sl = q.g * q.n;
  p.bc_sg = q.n;
  p.softplus = softplus;
  auto cptr = [](const Tensor& t) -> const void* { return t.defined() ? t.const_data_ptr() : nullptr; };
  p.u = cptr(q.u);
  p.delta = cptr(q.delta);
  p.z = cptr(q.z);
  p.Bm = cptr(q.B);
  p.Cm = cptr(q.C);
  p.A = cptr(q.A);
  p.D = cptr(q.D);
  p.bias = cptr(q.bias);
  p.h0 = cptr(q.h0);
  return p;
}

void* mptr(Tensor& t) { return t.defined() ? t.mutable_data_ptr() : nullptr; }

// SSMLAB_SCAN_FWD=legacy selects the warp-per-channel kernels (kernel_scan.cuh) for comparisons; the
// default is the tiled forward and backward of kernel_scan_fast.cuh wherever they apply.
bool plain_kernels_requested() {
  static const bool legacy = [] {
    const char* v = std::getenv("SSMLAB_SCAN_FWD");
    return v != nullptr && std::string(v) == "legacy";
  }();
  return legacy;
}

// Whether the tiled kernels may take these inputs at all: not forced off, and in-tile offsets fit 32 bits.
bool tiled_kernels_apply(const k::Params& p) {
  return !plain_kernels_requested() && 64 * std::max(p.x_sl, p.bc_sl) < std::numeric_limits<int32_t>::max();
}

// Lanes per channel at N <= 16: 4, or 8 / 16 where few (b, e) pairs would leave SMs idle (long sequences at
// small batch). Blocks of 128 threads at 4 lanes per channel: pairs / 32.
int lanes_at_small_n(const k::Params& p) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t blocks4 = (p.batch * p.dim + 31) / 32;
  return blocks4 < sms ? 16 : (blocks4 < 2 * sms ? 8 : 4);
}

// The tiled kernels' grid for EB channels per block: (blocks along E, batch); false where it does not apply
// (a block would straddle two groups of B / C, or a grid dimension overflows).
bool tiled_grid(const k::Params& p, int EB, dim3& grid) {
  if (p.ngroups > 1 && p.dim_per_group % EB != 0) return false;
  if (p.batch > 65535) return false;
  const int64_t blocks = (p.dim + EB - 1) / EB;
  if (blocks > std::numeric_limits<int32_t>::max()) return false;
  grid = dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(p.batch));
  return true;
}

template <typename in_t, int S, int NS, int T>
bool try_fast_forward(const k::Params& p) {
  dim3 grid;
  if (!tiled_grid(p, k::fast::kThreads / S, grid)) return false;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  k::fast::scan_fwd_fast<in_t, S, NS, T><<<grid, k::fast::kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

template <typename in_t>
bool fast_forward(const k::Params& p) {
  if (!tiled_kernels_apply(p)) return false;
  if (p.dstate <= 16) {
    const int lanes = lanes_at_small_n(p);
    if (lanes == 16) return try_fast_forward<in_t, 16, 1, 32>(p);
    if (lanes == 8) return try_fast_forward<in_t, 8, 2, 32>(p);
    return try_fast_forward<in_t, 4, 4, 32>(p);
  }
  if (p.dstate <= 32) return try_fast_forward<in_t, 4, 8, 32>(p);
  if (p.dstate <= 64) return try_fast_forward<in_t, 4, 16, 16>(p);
  if (p.dstate <= 128) return try_fast_forward<in_t, 8, 16, 16>(p);
  return try_fast_forward<in_t, 16, 16, 8>(p);
}

// The tiled backward (kernel_scan_fast.cuh): writes per-block dB / dC partials (blocks, B, L, N) that the
// caller sums; false when the case is not covered (then the plain kernel runs).
struct Partials {
  Tensor dB, dC;  // (blocks along E, B, L, N) fp32
};

template <typename in_t, int S, int NS, int T>
bool try_fast_backward(k::Params& p, const at::TensorOptions& opts, Partials& out) {
  using Cfg = k::fast::BwdConfig<S, NS, T>;
  dim3 grid;
  if (!tiled_grid(p, Cfg::EB, grid)) return false;
  out.dB = at::empty({static_cast<int64_t>(grid.x), p.batch, p.len, p.dstate}, opts);
  out.dC = at::empty({static_cast<int64_t>(grid.x), p.batch, p.len, p.dstate}, opts);
  auto kernel = k::fast::scan_bwd_fast<in_t, S, NS, T>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kDynamicBytes));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  kernel<<<grid, k::fast::kThreads, Cfg::kDynamicBytes, stream>>>(p, out.dB.mutable_data_ptr<float>(),
                                                                   out.dC.mutable_data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

template <typename in_t>
bool fast_backward(k::Params& p, const at::TensorOptions& opts, Partials& out) {
  if (!tiled_kernels_apply(p)) return false;
  if (p.dstate <= 16) {
    const int lanes = lanes_at_small_n(p);
    if (lanes == 16) return try_fast_backward<in_t, 16, 1, 16>(p, opts, out);
    if (lanes == 8) return try_fast_backward<in_t, 8, 2, 16>(p, opts, out);
    return try_fast_backward<in_t, 4, 4, 16>(p, opts, out);
  }
  if (p.dstate <= 32) return try_fast_backward<in_t, 4, 8, 8>(p, opts, out);
  if (p.dstate <= 64) return try_fast_backward<in_t, 8, 8, 8>(p, opts, out);
  if (p.dstate <= 128) return try_fast_backward<in_t, 16, 8, 8>(p, opts, out);
  return false;
}

bool dispatch_fast_backward(at::ScalarType it, k::Params& p, const at::TensorOptions& opts, Partials& out) {
  switch (it) {
    case at::kFloat: return fast_backward<float>(p, opts, out);
    case at::kBFloat16: return fast_backward<__nv_bfloat16>(p, opts, out);
    case at::kHalf: return fast_backward<__half>(p, opts, out);
    default: return false;
  }
}

template <typename in_t, typename acc_t, int MAXN>
void launch(bool fwd, const k::Params& p) {
  const int64_t pairs = p.batch * p.dim;
  if (pairs == 0) return;
  if constexpr (!std::is_same_v<acc_t, double>) {
    if (fwd && fast_forward<in_t>(p)) return;
  }
  const int64_t blocks = (pairs + k::kWarpsPerBlock - 1) / k::kWarpsPerBlock;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "selective_scan_cuda: B * E = ", pairs,
              " too large for one grid");
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>(blocks)), block(32 * k::kWarpsPerBlock);
  if (fwd)
    k::scan_fwd_kernel<in_t, acc_t, MAXN><<<grid, block, 0, stream>>>(p);
  else
    k::scan_bwd_kernel<in_t, acc_t, MAXN><<<grid, block, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename in_t, typename acc_t>
void launch_n(bool fwd, const k::Params& p) {
  if (p.dstate <= 32)
    launch<in_t, acc_t, 32>(fwd, p);
  else if (p.dstate <= 64)
    launch<in_t, acc_t, 64>(fwd, p);
  else if (p.dstate <= 128)
    launch<in_t, acc_t, 128>(fwd, p);
  else
    launch<in_t, acc_t, 256>(fwd, p);
}

void dispatch(bool fwd, at::ScalarType it, const k::Params& p) {
  switch (it) {
    case at::kFloat: return launch_n<float, float>(fwd, p);
    case at::kDouble: return launch_n<double, double>(fwd, p);
    case at::kBFloat16: return launch_n<__nv_bfloat16, float>(fwd, p);
    case at::kHalf: return launch_n<__half, float>(fwd, p);
    default: TORCH_CHECK(false, "selective_scan_cuda: unsupported dtype ", it);
  }
}

}  // namespace

Forward forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                const Tensor& D, const Tensor& z, const Tensor& delta_bias, bool softplus, const Tensor& h0) {
  const c10::cuda::CUDAGuard guard(u.device());
  const Prepared q = prepare(u, delta, A, B, C, D, z, delta_bias, h0);
  const auto ct = acc_dtype(u.scalar_type());
  const auto sopt = u.options().dtype(ct);
  Forward out;
  out.y = at::empty({q.b, q.l, q.e}, u.options());
  out.final_state = at::empty({q.b, q.e, q.n}, sopt);
  out.starts = at::empty({q.b, q.e, q.k, q.n}, sopt);
  k::Params p = params_of(q, softplus);
  p.y = mptr(out.y);
  p.fin = mptr(out.final_state);
  p.starts = mptr(out.starts);
  dispatch(/*fwd=*/true, u.scalar_type(), p);
  return out;
}

Grads backward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
               const Tensor& D, const Tensor& z, const Tensor& delta_bias, bool softplus, const Tensor& h0,
               const Tensor& starts, const Tensor& dy_in, const Tensor& dfin_in) {
  const c10::cuda::CUDAGuard guard(u.device());
  const Prepared q = prepare(u, delta, A, B, C, D, z, delta_bias, h0);
  const auto it = u.scalar_type(), ct = acc_dtype(it);
  const auto sopt = u.options().dtype(ct);
  TORCH_CHECK(starts.scalar_type() == ct && starts.is_contiguous() && starts.dim() == 4 &&
                  starts.size(0) == q.b && starts.size(1) == q.e && starts.size(2) == q.k && starts.size(3) == q.n,
              "selective_scan_cuda backward: saved starts ", starts.sizes(), " do not match the inputs");
  const Tensor dy = dy_in.defined() ? dy_in.to(it).contiguous() : Tensor();
  const Tensor dfin = dfin_in.defined() ? dfin_in.to(ct).contiguous() : Tensor();

  Tensor du = at::empty({q.b, q.l, q.e}, u.options());
  Tensor ddelta = at::empty({q.b, q.l, q.e}, u.options());
  Tensor dz = z.defined() ? at::empty({q.b, q.l, q.e}, u.options()) : Tensor();
  Tensor dA = at::zeros({q.e, q.n}, sopt);
  Tensor dB = at::zeros({q.b, q.l, q.g, q.n}, sopt);
  Tensor dC = at::zeros({q.b, q.l, q.g, q.n}, sopt);
  Tensor dD = D.defined() ? at::zeros({q.e}, sopt) : Tensor();
  Tensor dbias = delta_bias.defined() ? at::zeros({q.e}, sopt) : Tensor();
  Tensor dh0 = h0.defined() ? at::empty({q.b, q.e, q.n}, sopt) : Tensor();

  k::Params p = params_of(q, softplus);
  p.starts = const_cast<void*>(starts.const_data_ptr());
  p.dy = dy.defined() ? dy.const_data_ptr() : nullptr;
  p.dfin = dfin.defined() ? dfin.const_data_ptr() : nullptr;
  p.du = mptr(du);
  p.ddelta = mptr(ddelta);
  p.dz = mptr(dz);
  p.dA = mptr(dA);
  p.dB = mptr(dB);
  p.dC = mptr(dC);
  p.dD = mptr(dD);
  p.dbias = mptr(dbias);
  p.dh0 = mptr(dh0);
  Partials parts;
  if (q.b * q.e > 0 && q.l > 0 && dispatch_fast_backward(it, p, sopt, parts)) {
    // Sum the per-block partials of each group: (blocks, B, L, N) -> (B, L, G, N).
    const int64_t per_group = parts.dB.size(0) / q.g;
    auto fold = [&](const Tensor& part) {
      return part.view({q.g, per_group, q.b, q.l, q.n}).sum(1).permute({1, 2, 0, 3}).contiguous();
    };
    dB = fold(parts.dB);
    dC = fold(parts.dC);
  } else {
    dispatch(/*fwd=*/false, it, p);
  }

  auto as = [](const Tensor& grad, const Tensor& like) {
    return grad.reshape(like.sizes()).to(like.scalar_type());
  };
  Grads gr;
  gr.du = du;
  gr.ddelta = as(ddelta, delta);
  gr.dA = as(dA, A);
  gr.dB = as(dB, B);
  gr.dC = as(dC, C);
  if (D.defined()) gr.dD = as(dD, D);
  if (z.defined()) gr.dz = as(dz, z);
  if (delta_bias.defined()) gr.ddelta_bias = as(dbias, delta_bias);
  if (h0.defined()) gr.dh0 = as(dh0, h0);
  return gr;
}

}  // namespace ssmlab::ops::selective_scan_cuda_host
