// Host launcher of the CUDA selective_state_update (cuda.h): layout and dtype preparation, the Params struct,
// dtype / max-N dispatch, one launch on the current stream. Kernel: kernel_update.cuh. x, dt, z, B, C are
// read in place when they are in x's dtype with a unit inner stride (the row-strided views a Mamba layer
// makes are fine), so a decode step costs one launch.
#include "ssmlab/ops/selective_state_update/cuda.h"

#include <cstdint>
#include <limits>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ssmlab/ops/selective_state_update/kernel_update.cuh"

namespace ssmlab::ops::selective_state_update_cuda_host {
namespace {

namespace k = ssmlab::ops::selective_state_update_cuda;
using at::Tensor;

static_assert(kMaxState == k::kMaxState, "cuda.h and kernel_update.cuh disagree on the largest N");

// In dtype `t` with a unit last stride (a view when it already is).
Tensor rows_in(const Tensor& v, at::ScalarType t) {
  Tensor r = v.scalar_type() == t ? v : v.to(t);
  return r.stride(-1) == 1 ? r : r.contiguous();
}

template <typename in_t, typename acc_t, int MAXN>
void launch(const k::Params& p) {
  using Sh = k::Shape<acc_t, MAXN>;
  const int64_t threads = p.batch * p.dim * Sh::TPG;
  if (threads == 0) return;
  const int64_t blocks = (threads + k::kThreads - 1) / k::kThreads;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "selective_state_update_cuda: B * E too large");
  k::state_update_kernel<in_t, acc_t, MAXN>
      <<<static_cast<unsigned>(blocks), k::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename in_t, typename acc_t>
void launch_n(const k::Params& p) {
  if (p.dstate <= 16)
    launch<in_t, acc_t, 16>(p);
  else if (p.dstate <= 32)
    launch<in_t, acc_t, 32>(p);
  else if (p.dstate <= 64)
    launch<in_t, acc_t, 64>(p);
  else if (p.dstate <= 128)
    launch<in_t, acc_t, 128>(p);
  else
    launch<in_t, acc_t, 256>(p);
}

}  // namespace

Tensor update(Tensor& state, const Tensor& x_in, const Tensor& dt_in, const Tensor& A_in, const Tensor& B_in,
              const Tensor& C_in, const Tensor& D_in, const Tensor& z_in, const Tensor& bias_in, bool softplus) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto xt = x_in.scalar_type(), ct = state.scalar_type();
  TORCH_CHECK(xt == at::kFloat || xt == at::kDouble || xt == at::kBFloat16 || xt == at::kHalf,
              "selective_state_update_cuda: x must be float32/float64/bfloat16/float16; got ", xt);
  TORCH_CHECK(ct == (xt == at::kDouble ? at::kDouble : at::kFloat),
              "selective_state_update_cuda: state must be in the compute dtype; got ", ct);
  const int64_t b = x_in.size(0), e = x_in.size(1), n = A_in.size(1);
  TORCH_CHECK(n >= 1 && n <= kMaxState, "selective_state_update_cuda: N = ", n, " outside [1, ", kMaxState, "]");
  const Tensor x = rows_in(x_in, xt), dt = rows_in(dt_in, xt);
  const Tensor z = z_in.defined() ? rows_in(z_in, xt) : Tensor();
  const int64_t g = B_in.dim() == 3 ? B_in.size(1) : 1;
  const Tensor Bv = rows_in(B_in, xt).view({b, g, n});  // a view: B, C may be row-strided
  const Tensor Cv = rows_in(C_in, xt).view({b, g, n});
  auto conv = [&](const Tensor& t) { return t.defined() ? t.to(ct).contiguous() : Tensor(); };
  const Tensor A = conv(A_in), D = conv(D_in), bias = conv(bias_in);
  Tensor h = state.is_contiguous() ? state : state.contiguous();
  Tensor y = at::empty({b, e}, x.options().memory_format(at::MemoryFormat::Contiguous));

  k::Params p{};
  p.batch = b;
  p.dim = e;
  p.dstate = n;
  p.ngroups = g;
  p.dim_per_group = e / g;
  p.x_sb = x.stride(0);
  p.dt_sb = dt.stride(0);
  p.z_sb = z.defined() ? z.stride(0) : 0;
  p.b_sb = Bv.stride(0);
  p.b_sg = Bv.stride(1);
  p.c_sb = Cv.stride(0);
  p.c_sg = Cv.stride(1);
  p.softplus = softplus;
  const auto aligned = [](const Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.const_data_ptr()) % 16 == 0; };
  const int64_t ch = 16 / static_cast<int64_t>(h.element_size());
  p.vec = n % ch == 0 && aligned(h) && aligned(A);
  p.x = x.const_data_ptr();
  p.dt = dt.const_data_ptr();
  p.z = z.defined() ? z.const_data_ptr() : nullptr;
  p.Bm = Bv.const_data_ptr();
  p.Cm = Cv.const_data_ptr();
  p.A = A.const_data_ptr();
  p.D = D.defined() ? D.const_data_ptr() : nullptr;
  p.bias = bias.defined() ? bias.const_data_ptr() : nullptr;
  p.state = h.mutable_data_ptr();
  p.y = y.mutable_data_ptr();
  switch (xt) {
    case at::kFloat: launch_n<float, float>(p); break;
    case at::kDouble: launch_n<double, double>(p); break;
    case at::kBFloat16: launch_n<__nv_bfloat16, float>(p); break;
    case at::kHalf: launch_n<__half, float>(p); break;
    default: TORCH_CHECK(false, "selective_state_update_cuda: unsupported dtype ", xt);
  }
  if (!h.is_same(state)) state.copy_(h);
  return y;
}

}  // namespace ssmlab::ops::selective_state_update_cuda_host
