// Every ssmlab op schema, in one place (docs/ARCHITECTURE.md, "The op"). Built into the shared library
// libssmlab_ops.so so Python can torch.ops.load_library() it and call torch.ops.ssmlab.<op>.
// `<op>` picks the fastest kernel for the inputs' device; `<op>_ref` always runs the oracle.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"

namespace ssmlab::ops {
namespace {

std::tuple<at::Tensor, at::Tensor> selective_scan_op(const at::Tensor& u, const at::Tensor& delta,
                                                     const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                                     const std::optional<at::Tensor>& D,
                                                     const std::optional<at::Tensor>& z,
                                                     const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                                     const std::optional<at::Tensor>& initial_state) {
  auto r = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, "auto");
  return {r.y, r.final_state};
}

std::tuple<at::Tensor, at::Tensor> selective_scan_ref_op(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
    const std::optional<at::Tensor>& delta_bias, bool delta_softplus, const std::optional<at::Tensor>& initial_state) {
  auto r = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, "reference");
  return {r.y, r.final_state};
}

std::tuple<at::Tensor, at::Tensor> causal_conv1d_op(const at::Tensor& x, const at::Tensor& weight,
                                                    const std::optional<at::Tensor>& bias, bool silu,
                                                    const std::optional<at::Tensor>& initial_state) {
  auto r = causal_conv1d(x, weight, bias, silu, initial_state, "auto");
  return {r.out, r.final_state};
}

std::tuple<at::Tensor, at::Tensor> causal_conv1d_ref_op(const at::Tensor& x, const at::Tensor& weight,
                                                        const std::optional<at::Tensor>& bias, bool silu,
                                                        const std::optional<at::Tensor>& initial_state) {
  auto r = causal_conv1d(x, weight, bias, silu, initial_state, "reference");
  return {r.out, r.final_state};
}

at::Tensor causal_conv1d_update_op(const at::Tensor& x, at::Tensor& state, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, bool silu) {
  return causal_conv1d_update(x, state, weight, bias, silu);
}

constexpr const char* kScanArgs =
    "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? z=None, "
    "Tensor? delta_bias=None, bool delta_softplus=False, Tensor? initial_state=None) -> (Tensor, Tensor)";
constexpr const char* kConvArgs =
    "(Tensor x, Tensor weight, Tensor? bias=None, bool silu=False, Tensor? initial_state=None) -> (Tensor, Tensor)";

}  // namespace

// The kernels are composite for now: they run under autograd themselves (the reference is an
// autograd Function), so one CompositeImplicitAutograd registration serves every device.
TORCH_LIBRARY(ssmlab, m) {
  m.def((std::string("selective_scan") + kScanArgs).c_str(), &selective_scan_op);
  m.def((std::string("selective_scan_ref") + kScanArgs).c_str(), &selective_scan_ref_op);
  m.def((std::string("causal_conv1d") + kConvArgs).c_str(), &causal_conv1d_op);
  m.def((std::string("causal_conv1d_ref") + kConvArgs).c_str(), &causal_conv1d_ref_op);
  // One decode step; state is shifted in place. Plain ATen everywhere, so there is no _ref twin.
  m.def("causal_conv1d_update(Tensor x, Tensor(a!) state, Tensor weight, Tensor? bias=None, bool silu=False) -> Tensor",
        &causal_conv1d_update_op);
}

}  // namespace ssmlab::ops
