// Host launchers of the CUDA SSD scan (cuda.h): the Params structs, the choice
// between the chunked tensor-core kernels (kernel_ssd_chunked.cuh) and the
// time-stepped ones (kernel_ssd.cuh), dtype / N-bucket dispatch, launches on
// the current stream.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "ssmlab/core/device.h"
#include "ssmlab/ops/ssd_scan/cuda.h"
#include "ssmlab/ops/ssd_scan/kernel_ssd.cuh"
#include "ssmlab/ops/ssd_scan/kernel_ssd_chunked.cuh"

namespace ssmlab::ops::ssd_scan_cuda {
namespace {

namespace k = ssmlab::ops::ssd_scan_cuda_kernels;
namespace ck = ssmlab::ops::ssd_chunked_kernels;
using at::Tensor;

static_assert(kMaxP == k::kMaxP && kMaxN == k::kMaxN, "cuda.h and kernel_ssd.cuh disagree on the limits");
static_assert(ck::kQ == k::kChunk, "both kernel families save the state every 64 steps (shared layout)");

template <typename T>
const T* cptr(const Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}
template <typename T>
T* mptr(Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<T>() : nullptr;
}

// The sizes both kernel families' Params share.
template <typename Q>
void fill_sizes(Q& q, const ssd_scan_cpu::Inputs& in) {
  q.b = in.x.size(0);
  q.l = in.x.size(1);
  q.h = in.x.size(2);
  q.p = in.x.size(3);
  q.g = in.B.size(2);
  q.n = in.B.size(3);
  q.hg = q.h / q.g;
}

template <typename T>
k::Params<T> params_of(const ssd_scan_cpu::Inputs& in) {
  k::Params<T> q{};
  fill_sizes(q, in);
  q.k = (q.l + k::kChunk - 1) / k::kChunk;
  q.x = in.x.const_data_ptr<T>();
  q.a = in.a.const_data_ptr<T>();
  q.w = in.w.const_data_ptr<T>();
  q.B = in.B.const_data_ptr<T>();
  q.C = in.C.const_data_ptr<T>();
  q.D = cptr<T>(in.D);
  q.S0 = cptr<T>(in.S0);
  return q;
}

template <typename T, int NPL>
void launch(const k::Params<T>& q, bool backward, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>(q.b * q.h);
  if (backward)
    k::ssd_backward_kernel<T, NPL><<<blocks, k::kThreads, 0, stream>>>(q);
  else
    k::ssd_forward_kernel<T, NPL><<<blocks, k::kThreads, 0, stream>>>(q);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// NPL (state columns per lane) = ceil(N / 32) rounded up to 1, 2, 4 or 8.
template <typename T>
void launch_by_n(const k::Params<T>& q, bool backward, cudaStream_t stream) {
  if (q.n <= 32)
    launch<T, 1>(q, backward, stream);
  else if (q.n <= 64)
    launch<T, 2>(q, backward, stream);
  else if (q.n <= 128)
    launch<T, 4>(q, backward, stream);
  else
    launch<T, 8>(q, backward, stream);
}

// SSMLAB_SSD_CUDA=sequential forces the time-stepped kernels, =chunked the
// chunked ones where they apply (read on every call, so tests and benchmarks
// can switch).
std::string algorithm_requested() {
  const char* v = std::getenv("SSMLAB_SSD_CUDA");
  return v ? std::string(v) : std::string();
}

bool use_bf16(const ssd_scan_cpu::Inputs& in) { return in.source == at::kBFloat16; }

template <typename Op>
size_t grad_smem_bytes(int64_t p, int64_t n) {
  return ck::GradLayout<Op>(static_cast<int>((p + 15) / 16 * 16), static_cast<int>((n + 15) / 16 * 16)).bytes;
}

// The chunked kernels take fp32 compute with P <= 64, N <= 128, B·H within a
// grid's y extent, and shared memory for the backward's tiles; otherwise (fp64,
// larger heads) the time-stepped kernels run.
bool chunked_applies(const ssd_scan_cpu::Inputs& in) {
  if (algorithm_requested() == "sequential") return false;
  if (in.x.scalar_type() != at::kFloat) return false;
  const int64_t p = in.x.size(3), n = in.B.size(3);
  if (p > ck::kMaxP || n > ck::kMaxN || in.x.size(0) * in.x.size(2) > 65535) return false;
  return grad_smem_bytes<float>(p, n) <= at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin;
}

ck::Params chunked_params(const ssd_scan_cpu::Inputs& in) {
  ck::Params q{};
  fill_sizes(q, in);
  q.nk = (q.l + ck::kQ - 1) / ck::kQ;
  q.pp = static_cast<int>((q.p + 15) / 16 * 16);
  q.np = static_cast<int>((q.n + 15) / 16 * 16);
  q.x = in.x.const_data_ptr<float>();
  q.a = in.a.const_data_ptr<float>();
  q.w = in.w.const_data_ptr<float>();
  q.B = in.B.const_data_ptr<float>();
  q.C = in.C.const_data_ptr<float>();
  q.D = cptr<float>(in.D);
  q.S0 = cptr<float>(in.S0);
  // bf16 values are exact in tf32, so the split-tf32 products skip their low parts. The cotangent of y arrives
  // in y's dtype, x's.
  q.bc_exact = in.source_bc == at::kBFloat16;
  q.dy_exact = in.source == at::kBFloat16;
  // 16-bit inputs (tolerances of 1-5%): dB and dC may carry tf32's ~1e-3 relative error. The products feeding
  // y_ssm, dX̄ and G (hence the log-decay gradient, which cancels) stay split.
  q.tf32_dbc = in.source == at::kBFloat16 || in.source == at::kHalf;
  return q;
}

template <typename Kernel>
void launch_smem(Kernel kernel, dim3 grid, size_t bytes, const ck::Params& q, cudaStream_t stream) {
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  kernel<<<grid, ck::kThreads, bytes, stream>>>(q);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename Op>
void chunked_forward(const ck::Params& q, cudaStream_t stream) {
  const dim3 chunks(static_cast<unsigned>(q.nk), static_cast<unsigned>(q.b * q.h));
  const dim3 elems(static_cast<unsigned>((q.p * q.n + ck::kThreads - 1) / ck::kThreads),
                   static_cast<unsigned>(q.b * q.h));
  launch_smem(ck::chunk_outer_kernel<Op, false>, chunks, ck::OuterLayout<Op>(q.pp, q.np).bytes, q, stream);
  ck::state_pass_kernel<<<elems, ck::kThreads, 0, stream>>>(q);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  launch_smem(ck::chunk_scan_kernel<Op>, chunks, ck::ScanLayout<Op>(q.pp, q.np).bytes, q, stream);
}

// Always in split tf32: the log-decay gradient (da, hence dA, dt, dt_bias) sums large terms of opposite sign, and
// bf16 operands there leave errors of several percent after the sums over B·L.
void chunked_backward(const ck::Params& q, cudaStream_t stream) {
  const dim3 chunks(static_cast<unsigned>(q.nk), static_cast<unsigned>(q.b * q.h));
  const dim3 elems(static_cast<unsigned>((q.p * q.n + ck::kThreads - 1) / ck::kThreads),
                   static_cast<unsigned>(q.b * q.h));
  using Op = float;
  launch_smem(ck::chunk_outer_kernel<Op, true>, chunks, ck::OuterLayout<Op>(q.pp, q.np).bytes, q, stream);
  ck::state_pass_back_kernel<<<elems, ck::kThreads, 0, stream>>>(q);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  launch_smem(ck::chunk_grad_kernel<Op>, chunks, ck::GradLayout<Op>(q.pp, q.np).bytes, q, stream);
}

}  // namespace

ssd_scan_cpu::Forward forward(const ssd_scan_cpu::Inputs& in) {
  TORCH_CHECK(in.x.is_cuda() && in.x.size(3) <= kMaxP && in.B.size(3) <= kMaxN,
              "ssd_scan_cuda::forward: needs CUDA tensors with P <= 64 and N <= 256");
  const c10::cuda::CUDAGuard guard(in.x.device());
  const int64_t b = in.x.size(0), l = in.x.size(1), h = in.x.size(2), p = in.x.size(3), n = in.B.size(3);
  const int64_t nk = (l + k::kChunk - 1) / k::kChunk;
  const auto o = in.x.options();
  ssd_scan_cpu::Forward f;
  f.y = at::empty({b, l, h, p}, o);
  f.starts = at::empty({b, h, nk, p, n}, o);
  if (l == 0 || b * h == 0) {
    f.final_state = in.S0.defined() ? in.S0.clone() : at::zeros({b, h, p, n}, o);
    return f;
  }
  f.final_state = at::empty({b, h, p, n}, o);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (chunked_applies(in)) {
    Tensor cdecay = at::empty({b, h, nk}, o);
    auto q = chunked_params(in);
    q.y = f.y.mutable_data_ptr<float>();
    q.states = f.starts.mutable_data_ptr<float>();
    q.cdecay = cdecay.mutable_data_ptr<float>();
    q.fin = f.final_state.mutable_data_ptr<float>();
    if (use_bf16(in))
      chunked_forward<__nv_bfloat16>(q, stream);
    else
      chunked_forward<float>(q, stream);
    return f;
  }
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "ssd_scan_cuda_forward", [&] {
    auto q = params_of<scalar_t>(in);
    q.y = f.y.mutable_data_ptr<scalar_t>();
    q.fin = f.final_state.mutable_data_ptr<scalar_t>();
    q.starts = f.starts.mutable_data_ptr<scalar_t>();
    launch_by_n(q, /*backward=*/false, stream);
  });
  return f;
}

ssd_scan_cpu::Grads backward(const ssd_scan_cpu::Inputs& in, const Tensor& starts, const Tensor& dy,
                             const Tensor& dfinal) {
  const c10::cuda::CUDAGuard guard(in.x.device());
  const int64_t b = in.x.size(0), l = in.x.size(1), h = in.x.size(2), p = in.x.size(3), g = in.B.size(2),
                n = in.B.size(3);
  const auto o = in.x.options();
  ssd_scan_cpu::Grads gr;
  Tensor dBh, dCh, dDbh;
  if (l > 0 && b * h > 0 && chunked_applies(in)) {
    const int64_t nk = (l + ck::kQ - 1) / ck::kQ;
    const Tensor dyc = dy.defined() ? dy.contiguous() : dy, dfc = dfinal.defined() ? dfinal.contiguous() : dfinal;
    Tensor dstates = at::empty({b, h, nk, p, n}, o), cdecay = at::empty({b, h, nk}, o);
    Tensor dDp = in.D.defined() ? at::empty({b, h, nk}, o) : Tensor();
    gr.dx = at::empty({b, l, h, p}, o);
    gr.da = at::empty({b, l, h}, o);
    gr.dw = at::empty({b, l, h}, o);
    dBh = at::empty({b, l, h, n}, o);
    dCh = at::empty({b, l, h, n}, o);
    if (in.S0.defined()) gr.dS0 = at::empty({b, h, p, n}, o);
    auto q = chunked_params(in);
    q.states = const_cast<float*>(starts.const_data_ptr<float>());
    q.cdecay = cdecay.mutable_data_ptr<float>();
    q.dy = cptr<float>(dyc);
    q.dfin = cptr<float>(dfc);
    q.dstates = dstates.mutable_data_ptr<float>();
    q.dx = gr.dx.mutable_data_ptr<float>();
    q.da = gr.da.mutable_data_ptr<float>();
    q.dw = gr.dw.mutable_data_ptr<float>();
    q.dBh = dBh.mutable_data_ptr<float>();
    q.dCh = dCh.mutable_data_ptr<float>();
    q.dDp = mptr<float>(dDp);
    q.dS0 = mptr<float>(gr.dS0);
    const auto stream = c10::cuda::getCurrentCUDAStream();
    chunked_backward(q, stream);
    if (dDp.defined()) dDbh = dDp.sum(2);
  } else {
    gr.dx = at::zeros({b, l, h, p}, o);
    gr.da = at::zeros({b, l, h}, o);
    gr.dw = at::zeros({b, l, h}, o);
    dBh = at::zeros({b, l, h, n}, o);
    dCh = at::zeros({b, l, h, n}, o);
    dDbh = in.D.defined() ? at::zeros({b, h}, o) : Tensor();
    if (in.S0.defined()) gr.dS0 = dfinal.defined() ? dfinal.clone() : at::zeros({b, h, p, n}, o);
    if (l > 0 && b * h > 0) {
      const Tensor dyc = dy.defined() ? dy.contiguous() : dy, dfc = dfinal.defined() ? dfinal.contiguous() : dfinal;
      Tensor scratch = at::empty({b * h, k::kChunk, p, n},
                                 o);  // the kernel's per-block stride is kChunk·P·N
      const auto stream = c10::cuda::getCurrentCUDAStream();
      AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "ssd_scan_cuda_backward", [&] {
        auto q = params_of<scalar_t>(in);
        q.starts = const_cast<scalar_t*>(starts.const_data_ptr<scalar_t>());
        q.dy = cptr<scalar_t>(dyc);
        q.dfin = cptr<scalar_t>(dfc);
        q.dx = gr.dx.mutable_data_ptr<scalar_t>();
        q.da = gr.da.mutable_data_ptr<scalar_t>();
        q.dw = gr.dw.mutable_data_ptr<scalar_t>();
        q.dBh = dBh.mutable_data_ptr<scalar_t>();
        q.dCh = dCh.mutable_data_ptr<scalar_t>();
        q.dDbh = mptr<scalar_t>(dDbh);
        q.dS0 = mptr<scalar_t>(gr.dS0);
        q.scratch = scratch.mutable_data_ptr<scalar_t>();
        launch_by_n(q, /*backward=*/true, stream);
      });
    }
  }
  gr.dB = dBh.view({b, l, g, h / g, n}).sum(3);  // (B, L, G, N)
  gr.dC = dCh.view({b, l, g, h / g, n}).sum(3);
  if (dDbh.defined()) gr.dD = dDbh.sum(0);
  return gr;
}

at::Tensor update(const Tensor& x_t, const Tensor& dt_t, const Tensor& A, const Tensor& B_t, const Tensor& C_t,
                  Tensor& state, const SsdScanOptions& opts) {
  const c10::cuda::CUDAGuard guard(x_t.device());
  const auto ct = state_dtype(x_t.scalar_type());
  TORCH_CHECK(state.scalar_type() == ct && state.is_contiguous() && x_t.size(2) <= kMaxP && B_t.size(2) <= kMaxN,
              "ssd_scan_cuda::update: needs a contiguous state in the compute "
              "dtype, P <= 64, N <= 256");
  auto conv = [&](const Tensor& t) { return t.to(ct).contiguous(); };
  auto opt = [&](const std::optional<Tensor>& t) { return t ? conv(*t) : Tensor(); };
  // x, dt, B, C are read in their own dtype when they share one (a 16-bit model's step: no conversion kernels);
  // otherwise all four are converted to the compute dtype first.
  const auto xt = x_t.scalar_type();
  const bool same = dt_t.scalar_type() == xt && B_t.scalar_type() == xt && C_t.scalar_type() == xt &&
                    (xt == ct || xt == at::kBFloat16 || xt == at::kHalf);
  const auto it = same ? xt : ct;
  auto in = [&](const Tensor& t) { return t.to(it).contiguous(); };
  const Tensor x = in(x_t), dt = in(dt_t), Bc = in(B_t), Cc = in(C_t), Ac = conv(A);
  const Tensor D = opt(opts.D), bias = opt(opts.dt_bias), dtm = opt(opts.dt_mult), dm = opt(opts.decay_mult),
               bm = opt(opts.b_mult);
  const int64_t b = x.size(0), h = x.size(1), p = x.size(2), g = Bc.size(1), n = Bc.size(2);
  Tensor y = at::empty({b, h, p}, x.options());
  if (b * h == 0) return y.to(x_t.scalar_type());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  auto launch = [&](auto tag_t, auto tag_in) {
    using scalar_t = decltype(tag_t);
    using in_t = decltype(tag_in);
    k::UpdateParams<scalar_t, in_t> q{};
    q.b = b;
    q.h = h;
    q.p = p;
    q.n = n;
    q.g = g;
    q.hg = h / g;
    q.x = static_cast<const in_t*>(x.const_data_ptr());
    q.dt = static_cast<const in_t*>(dt.const_data_ptr());
    q.B = static_cast<const in_t*>(Bc.const_data_ptr());
    q.C = static_cast<const in_t*>(Cc.const_data_ptr());
    q.A = Ac.const_data_ptr<scalar_t>();
    q.D = cptr<scalar_t>(D);
    q.dt_bias = cptr<scalar_t>(bias);
    q.dt_mult = cptr<scalar_t>(dtm);
    q.decay_mult = cptr<scalar_t>(dm);
    q.b_mult = cptr<scalar_t>(bm);
    q.softplus = opts.dt_softplus;
    q.clamp = opts.dt_min > 0.0 || std::isfinite(opts.dt_max);
    q.dt_min = static_cast<scalar_t>(opts.dt_min);
    q.dt_max = static_cast<scalar_t>(std::isfinite(opts.dt_max) ? opts.dt_max : 1e300);
    q.state = state.mutable_data_ptr<scalar_t>();
    q.y = static_cast<in_t*>(y.mutable_data_ptr());
    const auto blocks = static_cast<unsigned>(b * h);
    if (n <= 32)
      k::ssd_update_kernel<scalar_t, in_t, 1><<<blocks, k::kThreads, 0, stream>>>(q);
    else if (n <= 64)
      k::ssd_update_kernel<scalar_t, in_t, 2><<<blocks, k::kThreads, 0, stream>>>(q);
    else if (n <= 128)
      k::ssd_update_kernel<scalar_t, in_t, 4><<<blocks, k::kThreads, 0, stream>>>(q);
    else
      k::ssd_update_kernel<scalar_t, in_t, 8><<<blocks, k::kThreads, 0, stream>>>(q);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (ct == at::kDouble)
    launch(double{}, double{});
  else if (it == at::kBFloat16)
    launch(float{}, __nv_bfloat16{});
  else if (it == at::kHalf)
    launch(float{}, __half{});
  else
    launch(float{}, float{});
  return y.to(x_t.scalar_type());
}

}  // namespace ssmlab::ops::ssd_scan_cuda
