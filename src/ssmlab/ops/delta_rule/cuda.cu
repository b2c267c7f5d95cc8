// Host launchers of the CUDA delta-rule pass over chunks (cuda.h; kernels in kernel_delta_pass.cuh): sizes,
// shared-memory opt-in, dtype dispatch, launches on the current stream.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

#include "ssmlab/ops/delta_rule/cuda.h"
#include "ssmlab/ops/delta_rule/kernel_delta_pass.cuh"
#include "ssmlab/ops/delta_rule/kernel_delta_state_pass.cuh"

namespace ssmlab::ops::delta_rule_cuda {
namespace {

namespace kd = ssmlab::ops::delta_pass_kernels;
namespace ks = ssmlab::ops::delta_state_kernels;
using at::Tensor;

static_assert(kMaxK == kd::kMaxK && kMaxQ == kd::kMaxQ, "cuda.h and kernel_delta_pass.cuh disagree on limits");
static_assert(kMaxK == ks::kMaxK && kMaxQ == ks::kMaxQ, "cuda.h and kernel_delta_state_pass.cuh disagree");

Tensor out_empty(at::IntArrayRef sizes, const at::TensorOptions& o) { return delta_rule_pass::poisoned_empty(sizes, o); }

template <typename T>
kd::Params<T> sizes_of(const delta_rule_pass::Inputs& in) {
  kd::Params<T> p{};
  p.bh = in.U.size(0) * in.U.size(1);
  p.nc = static_cast<int>(in.U.size(2));
  p.q = static_cast<int>(in.U.size(3));
  p.v = static_cast<int>(in.U.size(4));
  p.k = static_cast<int>(in.W.size(4));
  p.W = in.W.const_data_ptr<T>();
  p.Qi = in.Qi.const_data_ptr<T>();
  p.A = in.A.const_data_ptr<T>();
  p.Ko = in.Ko.const_data_ptr<T>();
  p.d = in.d.const_data_ptr<T>();
  return p;
}

// Allocates both backward passes' gradients (dVn, dSx per chunk, dS0; `o`: U's options) and fills them where no
// kernel has work: nothing to run at B HV = 0 or V = 0, and with no chunks dS0 = dS_final (or zero). Returns true
// when the caller is done.
bool backward_outputs(delta_rule_pass::Backward& g, const Tensor& U, int64_t k, const Tensor& dS_final) {
  const int64_t b = U.size(0), hv = U.size(1), nc = U.size(2), q = U.size(3), v = U.size(4);
  const auto o = U.options();
  g.dVn = out_empty({b, hv, nc, q, v}, o);
  g.dSx = out_empty({b, hv, nc, k, v}, o);
  g.dS0 = out_empty({b, hv, k, v}, o);
  if (b * hv == 0 || v == 0) return true;
  if (nc == 0) {
    if (dS_final.defined())
      g.dS0.copy_(dS_final);
    else
      g.dS0.zero_();
    return true;
  }
  return false;
}

dim3 grid_of(const delta_rule_pass::Inputs& in) {
  const int64_t bh = in.U.size(0) * in.U.size(1), v = in.U.size(4);
  return dim3(static_cast<unsigned>(bh), static_cast<unsigned>((v + kd::kCols - 1) / kd::kCols));
}

void check_inputs(const delta_rule_pass::Inputs& in, const char* who) {
  const int64_t k = in.W.size(4), q = in.U.size(3);
  TORCH_CHECK(in.U.is_cuda() && k <= kMaxK && q <= kMaxQ && in.U.size(2) <= std::numeric_limits<int>::max() &&
                  in.U.size(0) * in.U.size(1) <= std::numeric_limits<int>::max(),
              who, ": needs CUDA tensors with K <= ", kMaxK, " and a chunk of at most ", kMaxQ, " steps; got U ",
              in.U.sizes(), ", W ", in.W.sizes());
  for (const Tensor* t : {&in.U, &in.W, &in.Qi, &in.A, &in.Ko, &in.d, &in.S0})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == in.U.scalar_type() && t->device() == in.U.device(), who,
                ": the pass inputs must be contiguous, of one dtype, on one device");
}

// SSMLAB_DELTA_CUDA (read on every call), for tests and tables:
//   unset / anything else: float32 compute runs the state-only pass on tensor cores (kernel_delta_state_pass.cuh,
//            the output products batched outside it, chunk_pass.cpp); float64 runs the SIMT pass kernels;
//   simt:    the SIMT pass kernels of kernel_delta_pass.cuh (output inside the pass) for every dtype, 16-byte
//            broadcast loads of the row operands (fp32);
//   simple:  the same SIMT kernels with one scalar load per row operand (no 16-byte loads);
//   chunked: never reaches this file (delta_rule_cuda_supports is false: "auto" runs chunked.cpp).
std::string delta_cuda_env() {
  const char* v = std::getenv("SSMLAB_DELTA_CUDA");
  return v == nullptr ? std::string() : std::string(v);
}

// The SIMT kernels' 16-byte row-operand loads: off only for SSMLAB_DELTA_CUDA=simple.
bool vector_loads() { return delta_cuda_env() != "simple"; }

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

size_t state_smem_bytes(int64_t k, int64_t q) {
  return sizeof(float) * static_cast<size_t>(ks::StateLayout(static_cast<int>(k), static_cast<int>(q)).floats);
}

template <bool kReverse>
void launch_state(const ks::StateParams& p, int64_t k, int64_t q, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.bh), static_cast<unsigned>((p.v + ks::kVc - 1) / ks::kVc));
  const size_t bytes = state_smem_bytes(k, q);
  auto kernel = k <= ks::kSmallK ? ks::delta_state_pass_kernel<kReverse, false>
                                 : ks::delta_state_pass_kernel<kReverse, true>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  kernel<<<grid, ks::kThreads, bytes, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void check_state_inputs(const delta_rule_pass::StateInputs& in, const char* who) {
  const int64_t k = in.W.size(4), q = in.U.size(3);
  TORCH_CHECK(in.U.is_cuda() && in.U.scalar_type() == at::kFloat && k <= kMaxK && q <= kMaxQ &&
                  in.U.size(2) <= std::numeric_limits<int>::max() &&
                  in.U.size(0) * in.U.size(1) <= std::numeric_limits<int>::max(),
              who, ": needs float32 CUDA tensors with K <= ", kMaxK, " and a chunk of at most ", kMaxQ,
              " steps; got U ", in.U.sizes(), " ", in.U.scalar_type(), ", W ", in.W.sizes());
  for (const Tensor* t : {&in.U, &in.W, &in.Ko, &in.d, &in.S0})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == in.U.scalar_type() && t->device() == in.U.device(), who,
                ": the pass inputs must be contiguous, of one dtype, on one device");
}

template <typename T, bool kVec>
void launch_forward(const kd::Params<T>& p, dim3 grid, size_t bytes, cudaStream_t stream) {
  auto kernel = kd::delta_pass_forward_kernel<T, kVec>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  kernel<<<grid, kd::kThreads, bytes, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, bool kVec>
void launch_backward(const kd::Params<T>& p, dim3 grid, size_t bytes, cudaStream_t stream) {
  auto kernel = kd::delta_pass_backward_kernel<T, kVec>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  kernel<<<grid, kd::kThreads, bytes, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

size_t forward_smem_bytes(int64_t k, int64_t q, size_t elem) {
  return elem * static_cast<size_t>(kd::forward_smem_elems(static_cast<int>(k), static_cast<int>(q)));
}

size_t backward_smem_bytes(int64_t k, int64_t q, size_t elem) {
  return elem * static_cast<size_t>(kd::backward_smem_elems(static_cast<int>(k), static_cast<int>(q)));
}

bool shared_memory_fits(int64_t k, int64_t q, c10::ScalarType compute, c10::DeviceIndex device) {
  if (k < 1 || k > kMaxK || q < 1 || q > kMaxQ) return false;
  if (compute != at::kFloat && compute != at::kDouble) return false;
  const size_t elem = compute == at::kDouble ? 8 : 4;
  const size_t optin = at::cuda::getDeviceProperties(device)->sharedMemPerBlockOptin;
  if (compute == at::kFloat && state_smem_bytes(k, q) > optin) return false;
  return forward_smem_bytes(k, q, elem) <= optin && backward_smem_bytes(k, q, elem) <= optin;
}

bool state_pass_selected(c10::ScalarType compute) {
  if (compute != at::kFloat) return false;
  const std::string v = delta_cuda_env();
  return v != "simt" && v != "simple";
}

delta_rule_pass::StateForward state_forward(const delta_rule_pass::StateInputs& in) {
  check_state_inputs(in, "delta_rule_cuda::state_forward");
  const c10::cuda::CUDAGuard guard(in.U.device());
  const int64_t b = in.U.size(0), hv = in.U.size(1), nc = in.U.size(2), q = in.U.size(3), v = in.U.size(4),
                k = in.W.size(4);
  const auto o = in.U.options();
  delta_rule_pass::StateForward f;
  f.S_entry = out_empty({b, hv, nc, k, v}, o);
  f.Vn = out_empty({b, hv, nc, q, v}, o);
  f.final_state = out_empty({b, hv, k, v}, o);
  if (b * hv == 0 || v == 0) return f;
  if (nc == 0) {
    f.final_state.copy_(in.S0);
    return f;
  }
  ks::StateParams p{};
  p.bh = b * hv;
  p.nc = static_cast<int>(nc);
  p.q = static_cast<int>(q);
  p.k = static_cast<int>(k);
  p.v = static_cast<int>(v);
  p.M1 = in.W.const_data_ptr<float>();
  p.M2 = in.Ko.const_data_ptr<float>();
  p.d = in.d.const_data_ptr<float>();
  p.P = in.U.const_data_ptr<float>();
  p.R = nullptr;
  p.X0 = in.S0.const_data_ptr<float>();
  p.Xsave = f.S_entry.mutable_data_ptr<float>();
  p.Y = f.Vn.mutable_data_ptr<float>();
  p.Xfin = f.final_state.mutable_data_ptr<float>();
  p.s1 = -1.f;
  p.s2 = 1.f;
  p.vec = k % 4 == 0 && aligned16(p.M1) && aligned16(p.M2);
  launch_state<false>(p, k, q, c10::cuda::getCurrentCUDAStream());
  return f;
}

delta_rule_pass::StateBackward state_backward(const delta_rule_pass::StateInputs& in, const Tensor& gS_entry,
                                              const Tensor& gVn, const Tensor& dS_final) {
  check_state_inputs(in, "delta_rule_cuda::state_backward");
  const c10::cuda::CUDAGuard guard(in.U.device());
  const int64_t b = in.U.size(0), hv = in.U.size(1), nc = in.U.size(2), q = in.U.size(3), v = in.U.size(4),
                k = in.W.size(4);
  auto ok = [&](const Tensor& t, at::IntArrayRef sizes) {
    return !t.defined() || (t.sizes() == sizes && t.is_contiguous() && t.scalar_type() == at::kFloat &&
                            t.device() == in.U.device());
  };
  TORCH_CHECK(ok(gS_entry, {b, hv, nc, k, v}) && ok(gVn, in.U.sizes()) && ok(dS_final, in.S0.sizes()),
              "delta_rule_cuda::state_backward: the incoming gradients must be contiguous float32, shaped like "
              "S_entry, Vn and S0 (or undefined)");
  delta_rule_pass::StateBackward g;
  if (backward_outputs(g, in.U, k, dS_final)) return g;
  ks::StateParams p{};
  p.bh = b * hv;
  p.nc = static_cast<int>(nc);
  p.q = static_cast<int>(q);
  p.k = static_cast<int>(k);
  p.v = static_cast<int>(v);
  p.M1 = in.Ko.const_data_ptr<float>();
  p.M2 = in.W.const_data_ptr<float>();
  p.d = in.d.const_data_ptr<float>();
  p.P = gVn.defined() ? gVn.const_data_ptr<float>() : nullptr;
  p.R = gS_entry.defined() ? gS_entry.const_data_ptr<float>() : nullptr;
  p.X0 = dS_final.defined() ? dS_final.const_data_ptr<float>() : nullptr;
  p.Xsave = g.dSx.mutable_data_ptr<float>();
  p.Y = g.dVn.mutable_data_ptr<float>();
  p.Xfin = g.dS0.mutable_data_ptr<float>();
  p.s1 = 1.f;
  p.s2 = -1.f;
  p.vec = k % 4 == 0 && aligned16(p.M1) && aligned16(p.M2);
  launch_state<true>(p, k, q, c10::cuda::getCurrentCUDAStream());
  return g;
}

delta_rule_pass::Forward forward(const delta_rule_pass::Inputs& in, bool save) {
  check_inputs(in, "delta_rule_cuda::forward");
  const c10::cuda::CUDAGuard guard(in.U.device());
  const int64_t b = in.U.size(0), hv = in.U.size(1), nc = in.U.size(2), q = in.U.size(3), v = in.U.size(4),
                k = in.W.size(4);
  const auto o = in.U.options();
  delta_rule_pass::Forward f;
  f.O = out_empty({b, hv, nc, q, v}, o);
  f.final_state = out_empty({b, hv, k, v}, o);
  if (save) {
    f.S_entry = out_empty({b, hv, nc, k, v}, o);
    f.Vn = out_empty({b, hv, nc, q, v}, o);
  }
  if (b * hv == 0 || v == 0) return f;
  if (nc == 0) {
    f.final_state.copy_(in.S0);
    return f;
  }
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.U.scalar_type(), "delta_rule_cuda_forward", [&] {
    auto p = sizes_of<scalar_t>(in);
    p.U = in.U.const_data_ptr<scalar_t>();
    p.S0 = in.S0.const_data_ptr<scalar_t>();
    p.O = f.O.mutable_data_ptr<scalar_t>();
    p.Sfin = f.final_state.mutable_data_ptr<scalar_t>();
    p.Sentry = save ? f.S_entry.mutable_data_ptr<scalar_t>() : nullptr;
    p.Vn = save ? f.Vn.mutable_data_ptr<scalar_t>() : nullptr;
    const size_t bytes = forward_smem_bytes(k, q, sizeof(scalar_t));
    if (vector_loads())
      launch_forward<scalar_t, true>(p, grid_of(in), bytes, stream);
    else
      launch_forward<scalar_t, false>(p, grid_of(in), bytes, stream);
  });
  return f;
}

delta_rule_pass::Backward backward(const delta_rule_pass::Inputs& in, const Tensor& dO, const Tensor& dS_final) {
  check_inputs(in, "delta_rule_cuda::backward");
  const c10::cuda::CUDAGuard guard(in.U.device());
  const int64_t q = in.U.size(3), k = in.W.size(4);
  TORCH_CHECK(dO.sizes() == in.U.sizes() && dO.is_contiguous() && dO.scalar_type() == in.U.scalar_type(),
              "delta_rule_cuda::backward: dO must be contiguous, shaped and typed like U");
  TORCH_CHECK(!dS_final.defined() || (dS_final.sizes() == in.S0.sizes() && dS_final.is_contiguous() &&
                                      dS_final.scalar_type() == in.U.scalar_type()),
              "delta_rule_cuda::backward: dS_final must be contiguous, shaped and typed like S0");
  delta_rule_pass::Backward g;
  if (backward_outputs(g, in.U, k, dS_final)) return g;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.U.scalar_type(), "delta_rule_cuda_backward", [&] {
    auto p = sizes_of<scalar_t>(in);
    p.dO = dO.const_data_ptr<scalar_t>();
    p.dSfin = dS_final.defined() ? dS_final.const_data_ptr<scalar_t>() : nullptr;
    p.dVn = g.dVn.mutable_data_ptr<scalar_t>();
    p.dSx = g.dSx.mutable_data_ptr<scalar_t>();
    p.dS0 = g.dS0.mutable_data_ptr<scalar_t>();
    const size_t bytes = backward_smem_bytes(k, q, sizeof(scalar_t));
    if (vector_loads())
      launch_backward<scalar_t, true>(p, grid_of(in), bytes, stream);
    else
      launch_backward<scalar_t, false>(p, grid_of(in), bytes, stream);
  });
  return g;
}

}  // namespace ssmlab::ops::delta_rule_cuda
