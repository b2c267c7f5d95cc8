// Host launchers of the Mamba-3 phase kernels (phase_rotate.h has the contract, kernel_phase.cuh the kernels):
// dtype dispatch (q, k of any float dtype; compute C float32 or float64; dt, theta read as float32 when both are
// float32 and C is, else as float64) and launches on the current stream.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ssmlab/ops/mamba3/cuda.h"
#include "ssmlab/ops/mamba3/kernel_phase.cuh"

namespace ssmlab::ops::mamba3_cuda {
namespace {

namespace pk = ssmlab::ops::mamba3_phase_kernels;
namespace pm = ssmlab::ops::mamba3_phase;
using at::Tensor;

// dt and theta in the type the kernels read (P), strides kept (an expand()ed theta stays a view).
std::pair<Tensor, Tensor> phase_sources(const Tensor& dt, const Tensor& theta, at::ScalarType ct) {
  const bool wide = ct == at::kDouble || dt.scalar_type() == at::kDouble || theta.scalar_type() == at::kDouble;
  const auto pt = wide ? at::kDouble : at::kFloat;
  return {dt.scalar_type() == pt ? dt : dt.to(pt), theta.scalar_type() == pt ? theta : theta.to(pt)};
}

void check_phase_inputs(const Tensor& q, const Tensor& k, const Tensor& dt, const Tensor& theta, const Tensor& sc) {
  TORCH_CHECK(q.is_cuda() && q.dim() == 5 && k.sizes() == q.sizes() && k.scalar_type() == q.scalar_type() &&
                  q.is_contiguous() && k.is_contiguous() && k.device() == q.device(),
              "mamba3_cuda::phase_rotate: q, k must be contiguous CUDA (B, T, R, H, N) tensors of one dtype");
  const int64_t b = q.size(0), t = q.size(1), h = q.size(3);
  const auto ct = sc.scalar_type();
  TORCH_CHECK((ct == at::kFloat || ct == at::kDouble) && sc.is_contiguous() && sc.dim() == 3 && sc.size(0) == b &&
                  sc.size(1) == t && sc.size(2) == h && sc.device() == q.device(),
              "mamba3_cuda::phase_rotate: sc must be a contiguous float32/float64 (B, T, H) tensor on q's device");
  TORCH_CHECK(dt.dim() == 3 && dt.size(0) == b && dt.size(1) == t && dt.size(2) == h && theta.dim() == 4 &&
                  theta.size(0) == b && theta.size(1) == t && theta.size(2) == h && dt.device() == q.device() &&
                  theta.device() == q.device() && at::isFloatingType(dt.scalar_type()) &&
                  at::isFloatingType(theta.scalar_type()),
              "mamba3_cuda::phase_rotate: dt (B, T, H) and theta (B, T, H, S) must be float tensors on q's device");
  const int64_t s = theta.size(3), n = q.size(4);
  TORCH_CHECK(s <= pm::kMaxCudaS && 2 * s <= n,
              "mamba3_cuda::phase_rotate: S must be <= ", pm::kMaxCudaS, " and 2 S <= N; got S = ", s, ", N = ", n);
}

template <typename T>
bool aligned2(const void* ptr) {
  return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % (2 * sizeof(T)) == 0;
}

template <typename In, typename C, typename P>
pk::PhaseRotParams<In, C, P> phase_params(const Tensor& q, const Tensor& k, const Tensor& dt, const Tensor& theta,
                                          const Tensor& sc, bool halves) {
  pk::PhaseRotParams<In, C, P> p{};
  auto& g = p.g;
  g.b = q.size(0), g.t = q.size(1), g.r = q.size(2), g.h = q.size(3), g.n = q.size(4), g.s = theta.size(3);
  g.tc = pm::phase_chunk(g.s);
  g.nc = (g.t + g.tc - 1) / g.tc;
  g.halves = halves;
  p.src.dt = dt.const_data_ptr<P>();
  p.src.dt_b = dt.stride(0), p.src.dt_t = dt.stride(1), p.src.dt_h = dt.stride(2);
  p.src.th = theta.const_data_ptr<P>();
  p.src.th_b = theta.stride(0), p.src.th_t = theta.stride(1), p.src.th_h = theta.stride(2);
  p.src.th_s = theta.stride(3);
  p.q = q.const_data_ptr<In>();
  p.k = k.const_data_ptr<In>();
  p.sc = sc.const_data_ptr<C>();
  return p;
}

unsigned phase_grid(int64_t units, int64_t per_block) {
  const int64_t blocks = (units + per_block - 1) / per_block;
  TORCH_CHECK(blocks <= 0x7fffffff, "mamba3_cuda::phase_rotate: too many tiles or rows for one grid");
  return static_cast<unsigned>(blocks);
}

// Runs F::template run<In, C, P>(args...) for q's dtype In, the compute dtype C and the dt/theta type P.
template <typename F, typename... A>
void phase_dispatch(at::ScalarType qt, at::ScalarType ct, at::ScalarType pt, A&&... args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, qt, "mamba3_phase_rotate", [&] {
    using In = scalar_t;
    if (ct == at::kDouble)
      F::template run<In, double, double>(args...);
    else if (pt == at::kDouble)
      F::template run<In, float, double>(args...);
    else
      F::template run<In, float, float>(args...);
  });
}

struct PhaseForwardLaunch {
  template <typename In, typename C, typename P>
  static void run(const Tensor& q, const Tensor& k, const Tensor& dt, const Tensor& theta, const Tensor& sc,
                  const Tensor& phase0, bool halves, pm::PhaseRotateOut& out) {
    const auto stream = c10::cuda::getCurrentCUDAStream();
    auto p = phase_params<In, C, P>(q, k, dt, theta, sc, halves);
    p.off = out.offsets.mutable_data_ptr<double>();
    p.phase0 = phase0.defined() ? phase0.const_data_ptr<double>() : nullptr;
    p.phase_last = out.phase_last.mutable_data_ptr<double>();
    p.qr = out.qr.mutable_data_ptr<C>();
    p.kk = out.kk.mutable_data_ptr<C>();
    p.qk = out.qk.mutable_data_ptr<C>();
    p.g.vec2 = !halves && p.g.n % 2 == 0 && aligned2<In>(p.q) && aligned2<In>(p.k) && aligned2<C>(p.qr) &&
               aligned2<C>(p.kk);
    const int64_t b = p.g.b, h = p.g.h, s = p.g.s, nc = p.g.nc, tiles = b * nc * h;
    if (s > 0) {
      pk::phase_chunk_sum_kernel<P><<<phase_grid(tiles, pk::kPhWarps), pk::kPhThreads, 0, stream>>>(p.src, p.g,
                                                                                                    p.off);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      pk::phase_offsets_kernel<<<phase_grid(b * h * s, pk::kColThreads), pk::kColThreads, 0, stream>>>(
          p.off, p.phase0, p.phase_last, b * h * s, s, nc);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    pk::phase_rotate_forward_kernel<In, C, P><<<phase_grid(tiles, 1), pk::kPhThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

struct PhaseBackwardLaunch {
  template <typename In, typename C, typename P>
  static void run(const Tensor& q, const Tensor& k, const Tensor& dt, const Tensor& theta, const Tensor& sc,
                  const Tensor& offsets, const Tensor& dqr, const Tensor& dkk, const Tensor& dqk, const Tensor& dlast,
                  bool halves, const Tensor& gloc, const Tensor& dchunk, pm::PhaseRotateGrads& g) {
    const auto stream = c10::cuda::getCurrentCUDAStream();
    auto p = phase_params<In, C, P>(q, k, dt, theta, sc, halves);
    p.off = const_cast<double*>(offsets.const_data_ptr<double>());  // read only in backward
    p.dqr = dqr.defined() ? dqr.const_data_ptr<C>() : nullptr;
    p.dkk = dkk.defined() ? dkk.const_data_ptr<C>() : nullptr;
    p.dqk = dqk.defined() ? dqk.const_data_ptr<C>() : nullptr;
    p.dlast = dlast.defined() ? dlast.const_data_ptr<double>() : nullptr;
    p.dq = g.dq.mutable_data_ptr<C>();
    p.dk = g.dk.mutable_data_ptr<C>();
    p.dsc = g.dsc.mutable_data_ptr<C>();
    p.gloc = gloc.mutable_data_ptr<C>();
    p.dchunk = dchunk.mutable_data_ptr<double>();
    p.dphase0 = g.dphase0.mutable_data_ptr<double>();
    p.dtheta = g.dtheta.mutable_data_ptr<C>();
    p.ddt = g.ddt.mutable_data_ptr<C>();
    p.g.vec2 = !halves && p.g.n % 2 == 0 && aligned2<In>(p.q) && aligned2<In>(p.k) && aligned2<C>(p.dqr) &&
               aligned2<C>(p.dkk) && aligned2<C>(p.dq) && aligned2<C>(p.dk);
    const int64_t b = p.g.b, t = p.g.t, h = p.g.h, s = p.g.s, nc = p.g.nc;
    pk::phase_rotate_backward_kernel<In, C, P><<<phase_grid(b * nc * h, 1), pk::kPhThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (s > 0) {
      pk::phase_suffix_kernel<<<phase_grid(b * h * s, pk::kColThreads), pk::kColThreads, 0, stream>>>(
          p.dchunk, p.dlast, p.dphase0, b * h * s, s, nc);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      pk::phase_grad_finish_kernel<In, C, P><<<phase_grid(b * t * h, pk::kPhWarps), pk::kPhThreads, 0, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
};

}  // namespace

pm::PhaseRotateOut phase_rotate_forward(const Tensor& q, const Tensor& k, const Tensor& dt_in, const Tensor& theta_in,
                                        const Tensor& sc, const Tensor& phase0, bool halves) {
  check_phase_inputs(q, k, dt_in, theta_in, sc);
  const c10::cuda::CUDAGuard guard(q.device());
  const auto ct = sc.scalar_type();
  const auto [dt, theta] = phase_sources(dt_in, theta_in, ct);
  const int64_t b = q.size(0), t = q.size(1), r = q.size(2), h = q.size(3), s = theta.size(3);
  const int64_t tc = pm::phase_chunk(s), nc = (t + tc - 1) / tc;
  TORCH_CHECK(!phase0.defined() || (phase0.scalar_type() == at::kDouble && phase0.is_contiguous() &&
                                    phase0.sizes() == c10::IntArrayRef({b, h, s}) && phase0.device() == q.device()),
              "mamba3_cuda::phase_rotate_forward: phase0 must be a contiguous float64 (B, H, S) tensor");
  const auto o = q.options().dtype(ct);
  const auto o64 = q.options().dtype(at::kDouble);
  pm::PhaseRotateOut out;
  out.qr = at::empty(q.sizes(), o);
  out.kk = at::empty(q.sizes(), o);
  out.qk = at::empty({b, t, r, h}, o);
  out.phase_last = at::empty({b, h, s}, o64);
  out.offsets = at::empty({b, h, nc, s}, o64);
  if (q.numel() == 0) {
    if (phase0.defined()) out.phase_last.copy_(phase0); else out.phase_last.zero_();
    out.qk.zero_();
    return out;
  }
  phase_dispatch<PhaseForwardLaunch>(q.scalar_type(), ct, dt.scalar_type(), q, k, dt, theta, sc, phase0, halves, out);
  return out;
}

pm::PhaseRotateGrads phase_rotate_backward(const Tensor& q, const Tensor& k, const Tensor& dt_in,
                                           const Tensor& theta_in, const Tensor& sc, const Tensor& offsets,
                                           const Tensor& dqr, const Tensor& dkk, const Tensor& dqk,
                                           const Tensor& dlast, bool halves) {
  check_phase_inputs(q, k, dt_in, theta_in, sc);
  const c10::cuda::CUDAGuard guard(q.device());
  const auto ct = sc.scalar_type();
  const auto [dt, theta] = phase_sources(dt_in, theta_in, ct);
  const int64_t b = q.size(0), t = q.size(1), r = q.size(2), h = q.size(3), s = theta.size(3);
  const int64_t tc = pm::phase_chunk(s), nc = (t + tc - 1) / tc;
  TORCH_CHECK(offsets.scalar_type() == at::kDouble && offsets.is_contiguous() &&
                  offsets.sizes() == c10::IntArrayRef({b, h, nc, s}),
              "mamba3_cuda::phase_rotate_backward: offsets must be the forward's (B, H, nC, S) float64 tensor");
  for (const Tensor* g : {&dqr, &dkk})
    TORCH_CHECK(!g->defined() || (g->sizes() == q.sizes() && g->scalar_type() == ct && g->is_contiguous() &&
                                  g->device() == q.device()),
                "mamba3_cuda::phase_rotate_backward: dqr, dkk must be contiguous (B, T, R, H, N) in the compute dtype");
  TORCH_CHECK(!dqk.defined() || (dqk.sizes() == c10::IntArrayRef({b, t, r, h}) && dqk.scalar_type() == ct &&
                                 dqk.is_contiguous() && dqk.device() == q.device()),
              "mamba3_cuda::phase_rotate_backward: dqk must be contiguous (B, T, R, H) in the compute dtype");
  TORCH_CHECK(!dlast.defined() || (dlast.sizes() == c10::IntArrayRef({b, h, s}) && dlast.scalar_type() == at::kDouble &&
                                   dlast.is_contiguous() && dlast.device() == q.device()),
              "mamba3_cuda::phase_rotate_backward: dlast must be contiguous float64 (B, H, S)");
  const auto o = q.options().dtype(ct);
  const auto o64 = q.options().dtype(at::kDouble);
  pm::PhaseRotateGrads g;
  g.dq = at::empty(q.sizes(), o);
  g.dk = at::empty(q.sizes(), o);
  g.ddt = at::empty({b, t, h}, o);
  g.dtheta = at::empty({b, t, h, s}, o);
  g.dsc = at::empty({b, t, h}, o);
  g.dphase0 = at::empty({b, h, s}, o64);
  if (q.numel() == 0) {
    for (Tensor* z : {&g.ddt, &g.dtheta, &g.dsc}) z->zero_();
    if (dlast.defined()) g.dphase0.copy_(dlast); else g.dphase0.zero_();
    return g;
  }
  Tensor gloc = at::empty({b, t, h, s}, o);
  Tensor dchunk = at::empty({b, h, nc, s}, o64);
  phase_dispatch<PhaseBackwardLaunch>(q.scalar_type(), ct, dt.scalar_type(), q, k, dt, theta, sc, offsets, dqr, dkk,
                                      dqk, dlast, halves, gloc, dchunk, g);
  if (s == 0) g.ddt.zero_();
  return g;
}

}  // namespace ssmlab::ops::mamba3_cuda
