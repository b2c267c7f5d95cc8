// Host launchers of the CUDA WKV (cuda.h): the Params struct, dtype dispatch, launches on the current stream.
#include "ssmlab/ops/wkv/cuda.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ssmlab/ops/wkv/kernel_wkv.cuh"
#include "ssmlab/ops/wkv/wkv.h"

namespace ssmlab::ops::wkv_cuda_host {
namespace {

namespace kw = ssmlab::ops::wkv_kernels;
constexpr int kThreads = 128;

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

template <typename T>
kw::Params<T> params_of(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& h0) {
  kw::Params<T> p{};
  p.batch = k.size(0);
  p.len = k.size(1);
  p.chans = k.size(2);
  p.w = w.const_data_ptr<T>();
  p.u = u.const_data_ptr<T>();
  p.k = k.const_data_ptr<T>();
  p.v = v.const_data_ptr<T>();
  p.h0 = ptr_or_null<T>(h0);
  return p;
}

unsigned blocks_of(const at::Tensor& k) {
  return static_cast<unsigned>((k.size(0) * k.size(2) + kThreads - 1) / kThreads);
}

}  // namespace

wkv_cpu::Forward forward(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& h0) {
  TORCH_CHECK(k.is_cuda() && k.is_contiguous(), "wkv_cuda: k must be a contiguous CUDA tensor");
  const c10::cuda::CUDAGuard guard(k.device());
  const int64_t B = k.size(0), L = k.size(1), C = k.size(2);
  wkv_cpu::Forward f;
  f.y = at::empty({B, L, C}, k.options());
  f.final_state = at::empty({B, 3, C}, k.options());
  f.states = at::empty({B, L, 3, C}, k.options());
  if (B * C == 0) return f;
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "wkv_cuda_forward", [&] {
    auto p = params_of<scalar_t>(w, u, k, v, h0);
    p.y = f.y.mutable_data_ptr<scalar_t>();
    p.fin = f.final_state.mutable_data_ptr<scalar_t>();
    p.states = f.states.mutable_data_ptr<scalar_t>();
    kw::forward_kernel<scalar_t><<<blocks_of(k), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        p, static_cast<scalar_t>(kWkvEmpty));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return f;
}

wkv_cpu::Grads backward(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& h0, const at::Tensor& y, const at::Tensor& states, const at::Tensor& dy,
                        const at::Tensor& dfinal) {
  const c10::cuda::CUDAGuard guard(k.device());
  const int64_t B = k.size(0), L = k.size(1), C = k.size(2);
  wkv_cpu::Grads g;
  g.dk = at::empty({B, L, C}, k.options());
  g.dv = at::empty({B, L, C}, k.options());
  at::Tensor dw_part = at::zeros({B, C}, k.options()), du_part = at::zeros({B, C}, k.options());
  if (h0.defined()) g.dh0 = at::empty({B, 3, C}, k.options());
  if (B * C > 0) {
    AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "wkv_cuda_backward", [&] {
      auto p = params_of<scalar_t>(w, u, k, v, h0);
      p.y = const_cast<scalar_t*>(y.const_data_ptr<scalar_t>());
      p.states = const_cast<scalar_t*>(states.const_data_ptr<scalar_t>());
      p.dy = ptr_or_null<scalar_t>(dy);
      p.dfin = ptr_or_null<scalar_t>(dfinal);
      p.dk = g.dk.mutable_data_ptr<scalar_t>();
      p.dv = g.dv.mutable_data_ptr<scalar_t>();
      p.dw_part = dw_part.mutable_data_ptr<scalar_t>();
      p.du_part = du_part.mutable_data_ptr<scalar_t>();
      p.dh0 = g.dh0.defined() ? g.dh0.mutable_data_ptr<scalar_t>() : nullptr;
      kw::backward_kernel<scalar_t><<<blocks_of(k), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  g.dw = dw_part.sum(0);
  g.du = du_part.sum(0);
  return g;
}

}  // namespace ssmlab::ops::wkv_cuda_host
