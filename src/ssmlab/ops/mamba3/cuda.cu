// Host launchers of the Mamba-3 CUDA path's rotation-and-scale kernels (cuda.h, kernel_rotate.cuh): dtype dispatch
// (q, k of any float dtype; compute float32 or float64) and launches on the current stream, one warp per (b, t, h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ssmlab/ops/mamba3/cuda.h"
#include "ssmlab/ops/mamba3/kernel_rotate.cuh"

namespace ssmlab::ops::mamba3_cuda {
namespace {

namespace rk = ssmlab::ops::mamba3_cuda_kernels;
using at::Tensor;

template <typename In, typename C>
rk::RotateParams<In, C> rotate_params(const Tensor& q, const Tensor& k, const Tensor& cosv, const Tensor& sinv,
                                      const Tensor& sc, bool halves) {
  rk::RotateParams<In, C> p{};
  p.h = q.size(3);
  p.r = q.size(2);
  p.n = q.size(4);
  p.s = cosv.size(3);
  p.rows = q.size(0) * q.size(1) * p.h;
  p.halves = halves;
  p.q = q.const_data_ptr<In>();
  p.k = k.const_data_ptr<In>();
  p.cosv = cosv.const_data_ptr<C>();
  p.sinv = sinv.const_data_ptr<C>();
  p.scale = sc.const_data_ptr<C>();
  return p;
}

unsigned rotate_blocks(int64_t rows) {
  const int64_t blocks = (rows + rk::kWarpsPerBlock - 1) / rk::kWarpsPerBlock;
  TORCH_CHECK(blocks <= 0x7fffffff, "mamba3_cuda: too many rows (B T H = ", rows, ") for one grid");
  return static_cast<unsigned>(blocks);
}

void check_rotate_inputs(const Tensor& q, const Tensor& k, const Tensor& cosv, const Tensor& sinv, const Tensor& sc) {
  TORCH_CHECK(q.is_cuda() && q.dim() == 5 && k.sizes() == q.sizes() && k.scalar_type() == q.scalar_type() &&
                  q.is_contiguous() && k.is_contiguous(),
              "mamba3_cuda::rotate: q, k must be contiguous CUDA (B, T, R, H, N) tensors of one dtype");
  const auto ct = cosv.scalar_type();
  TORCH_CHECK((ct == at::kFloat || ct == at::kDouble) && sinv.scalar_type() == ct && sc.scalar_type() == ct &&
                  cosv.is_contiguous() && sinv.is_contiguous() && sc.is_contiguous() && cosv.dim() == 4 &&
                  sinv.sizes() == cosv.sizes() && cosv.size(0) == q.size(0) && cosv.size(1) == q.size(1) &&
                  cosv.size(2) == q.size(3) && sc.dim() == 3 && sc.size(0) == q.size(0) && sc.size(1) == q.size(1) &&
                  sc.size(2) == q.size(3),
              "mamba3_cuda::rotate: cos, sin (B, T, H, S) and sc (B, T, H) must be contiguous float32/float64");
}

}  // namespace

std::pair<Tensor, Tensor> rotate_forward(const Tensor& q, const Tensor& k, const Tensor& cos_phi,
                                         const Tensor& sin_phi, const Tensor& sc, bool halves) {
  check_rotate_inputs(q, k, cos_phi, sin_phi, sc);
  const c10::cuda::CUDAGuard guard(q.device());
  const auto o = q.options().dtype(cos_phi.scalar_type());
  Tensor qr = at::empty(q.sizes(), o), kk = at::empty(q.sizes(), o);
  if (q.numel() == 0) return {qr, kk};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "mamba3_rotate_forward", [&] {
    using In = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(cos_phi.scalar_type(), "mamba3_rotate_forward_c", [&] {
      auto p = rotate_params<In, scalar_t>(q, k, cos_phi, sin_phi, sc, halves);
      p.qr = qr.mutable_data_ptr<scalar_t>();
      p.kk = kk.mutable_data_ptr<scalar_t>();
      rk::rotate_forward_kernel<In, scalar_t><<<rotate_blocks(p.rows), rk::kThreads, 0, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {qr, kk};
}

RotateGrads rotate_backward(const Tensor& q, const Tensor& k, const Tensor& cos_phi, const Tensor& sin_phi,
                            const Tensor& sc, const Tensor& dqr, const Tensor& dkk, bool halves) {
  check_rotate_inputs(q, k, cos_phi, sin_phi, sc);
  const auto ct = cos_phi.scalar_type();
  for (const Tensor* g : {&dqr, &dkk})
    TORCH_CHECK(!g->defined() || (g->sizes() == q.sizes() && g->scalar_type() == ct && g->is_contiguous() &&
                                  g->device() == q.device()),
                "mamba3_cuda::rotate_backward: cotangents must be contiguous (B, T, R, H, N) in the compute dtype");
  const c10::cuda::CUDAGuard guard(q.device());
  const auto o = q.options().dtype(ct);
  RotateGrads g;
  g.dq = at::empty(q.sizes(), o);
  g.dk = at::empty(q.sizes(), o);
  g.dcos = at::empty(cos_phi.sizes(), o);
  g.dsin = at::empty(cos_phi.sizes(), o);
  g.dsc = at::empty(sc.sizes(), o);
  if (q.numel() == 0) {
    for (Tensor* t : {&g.dcos, &g.dsin, &g.dsc}) t->zero_();
    return g;
  }
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "mamba3_rotate_backward", [&] {
    using In = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(ct, "mamba3_rotate_backward_c", [&] {
      auto p = rotate_params<In, scalar_t>(q, k, cos_phi, sin_phi, sc, halves);
      p.dqr = dqr.defined() ? dqr.const_data_ptr<scalar_t>() : nullptr;
      p.dkk = dkk.defined() ? dkk.const_data_ptr<scalar_t>() : nullptr;
      p.dq = g.dq.mutable_data_ptr<scalar_t>();
      p.dk = g.dk.mutable_data_ptr<scalar_t>();
      p.dcos = g.dcos.mutable_data_ptr<scalar_t>();
      p.dsin = g.dsin.mutable_data_ptr<scalar_t>();
      p.dscale = g.dsc.mutable_data_ptr<scalar_t>();
      rk::rotate_backward_kernel<In, scalar_t><<<rotate_blocks(p.rows), rk::kThreads, 0, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return g;
}

}  // namespace ssmlab::ops::mamba3_cuda
