// Every ssmlab op schema, in one place (docs/ARCHITECTURE.md, "The op"). Built into the shared library
// libssmlab_ops.so so Python can torch.ops.load_library() it and call torch.ops.ssmlab.<op>.
// `<op>` picks the fastest kernel for the inputs' device; `<op>_ref` always runs the oracle.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"
#include "ssmlab/ops/selective_state_update/selective_state_update.h"
#include "ssmlab/ops/wkv/wkv.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"

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

// ssmlab::selective_scan_varlen (kRef false) and ssmlab::selective_scan_varlen_ref (kRef true).
template <bool kRef>
std::tuple<at::Tensor, at::Tensor> selective_scan_varlen_op(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const at::Tensor& cu_seqlens, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
    const std::optional<at::Tensor>& delta_bias, bool delta_softplus, const std::optional<at::Tensor>& initial_state) {
  auto r = selective_scan_varlen(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cu_seqlens, initial_state,
                                 kRef ? "reference" : "auto");
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

at::Tensor causal_conv1d_update_ref_op(const at::Tensor& x, at::Tensor& state, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias, bool silu) {
  return causal_conv1d_update(x, state, weight, bias, silu, "reference");
}

// ssmlab::selective_state_update (kRef false) and ssmlab::selective_state_update_ref (kRef true): y (B, E),
// state updated in place.
template <bool kRef>
at::Tensor selective_state_update_op(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                     const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                     const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& dt_bias,
                                     bool dt_softplus) {
  return selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, kRef ? "reference" : "auto");
}

constexpr const char* kStateUpdateArgs =
    "(Tensor(a!) state, Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? z=None, "
    "Tensor? dt_bias=None, bool dt_softplus=False) -> Tensor";

// ssd_scan returns (y, final_state, chunk_states); chunk_states is empty unless return_chunk_states.
std::tuple<at::Tensor, at::Tensor, at::Tensor> ssd_scan_common(
    const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& dt_bias, bool dt_softplus, double dt_min,
    std::optional<double> dt_max, const std::optional<at::Tensor>& initial_state, int64_t chunk_size,
    bool return_chunk_states, const std::optional<at::Tensor>& dt_mult, const std::optional<at::Tensor>& decay_mult,
    const std::optional<at::Tensor>& b_mult, const std::string& backend) {
  SsdScanOptions o;
  o.D = D;
  o.dt_bias = dt_bias;
  o.dt_softplus = dt_softplus;
  o.dt_min = dt_min;
  if (dt_max) o.dt_max = *dt_max;
  o.initial_state = initial_state;
  o.chunk_size = chunk_size;
  o.return_chunk_states = return_chunk_states;
  o.dt_mult = dt_mult;
  o.decay_mult = decay_mult;
  o.b_mult = b_mult;
  auto r = ssd_scan(x, dt, A, B, C, o, backend);
  return {r.y, r.final_state, r.chunk_states.defined() ? r.chunk_states : at::empty({0}, r.final_state.options())};
}

// ssmlab::ssd_scan (kRef false) and ssmlab::ssd_scan_ref (kRef true).
template <bool kRef>
std::tuple<at::Tensor, at::Tensor, at::Tensor> ssd_scan_op(
    const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& dt_bias, bool dt_softplus, double dt_min,
    std::optional<double> dt_max, const std::optional<at::Tensor>& initial_state, int64_t chunk_size,
    bool return_chunk_states, const std::optional<at::Tensor>& dt_mult, const std::optional<at::Tensor>& decay_mult,
    const std::optional<at::Tensor>& b_mult) {
  return ssd_scan_common(x, dt, A, B, C, D, dt_bias, dt_softplus, dt_min, dt_max, initial_state, chunk_size,
                         return_chunk_states, dt_mult, decay_mult, b_mult, kRef ? "reference" : "auto");
}

at::Tensor ssd_scan_update_op(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                              const at::Tensor& C, at::Tensor& state, const std::optional<at::Tensor>& D,
                              const std::optional<at::Tensor>& dt_bias, bool dt_softplus, double dt_min,
                              std::optional<double> dt_max, const std::optional<at::Tensor>& dt_mult,
                              const std::optional<at::Tensor>& decay_mult, const std::optional<at::Tensor>& b_mult) {
  SsdScanOptions o;
  o.D = D;
  o.dt_bias = dt_bias;
  o.dt_softplus = dt_softplus;
  o.dt_min = dt_min;
  if (dt_max) o.dt_max = *dt_max;
  o.dt_mult = dt_mult;
  o.decay_mult = decay_mult;
  o.b_mult = b_mult;
  return ssd_scan_update(x, dt, A, B, C, state, o);
}

constexpr const char* kSsdArgs =
    "(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? dt_bias=None, "
    "bool dt_softplus=True, float dt_min=0.0, float? dt_max=None, Tensor? initial_state=None, int chunk_size=64, "
    "bool return_chunk_states=False, Tensor? dt_mult=None, Tensor? decay_mult=None, Tensor? b_mult=None) "
    "-> (Tensor, Tensor, Tensor)";

// ssmlab::wkv (kRef false) and ssmlab::wkv_ref (kRef true): (y, final_state).
template <bool kRef>
std::tuple<at::Tensor, at::Tensor> wkv_op(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k,
                                          const at::Tensor& v, const std::optional<at::Tensor>& initial_state) {
  auto r = wkv(w, u, k, v, initial_state, kRef ? "reference" : "auto");
  return {r.y, r.final_state};
}

constexpr const char* kWkvArgs =
    "(Tensor w, Tensor u, Tensor k, Tensor v, Tensor? initial_state=None) -> (Tensor, Tensor)";

constexpr const char* kScanArgs =
    "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? z=None, "
    "Tensor? delta_bias=None, bool delta_softplus=False, Tensor? initial_state=None) -> (Tensor, Tensor)";
constexpr const char* kScanVarlenArgs =
    "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor cu_seqlens, Tensor? D=None, Tensor? z=None, "
    "Tensor? delta_bias=None, bool delta_softplus=False, Tensor? initial_state=None) -> (Tensor, Tensor)";
constexpr const char* kConvArgs =
    "(Tensor x, Tensor weight, Tensor? bias=None, bool silu=False, Tensor? initial_state=None) -> (Tensor, Tensor)";

}  // namespace

// The kernels are composite for now: they run under autograd themselves (the reference is an
// autograd Function), so one CompositeImplicitAutograd registration serves every device.
TORCH_LIBRARY(ssmlab, m) {
  m.def((std::string("selective_scan") + kScanArgs).c_str(), &selective_scan_op);
  m.def((std::string("selective_scan_ref") + kScanArgs).c_str(), &selective_scan_ref_op);
  // Packed variable-length sequences: u (1, T, E), cu_seqlens (S + 1); final state (S, E, N).
  m.def((std::string("selective_scan_varlen") + kScanVarlenArgs).c_str(), &selective_scan_varlen_op<false>);
  m.def((std::string("selective_scan_varlen_ref") + kScanVarlenArgs).c_str(), &selective_scan_varlen_op<true>);
  m.def((std::string("causal_conv1d") + kConvArgs).c_str(), &causal_conv1d_op);
  m.def((std::string("causal_conv1d_ref") + kConvArgs).c_str(), &causal_conv1d_ref_op);
  // One decode step; state is shifted in place (a CUDA kernel on CUDA, plain ATen elsewhere and in _ref).
  m.def("causal_conv1d_update(Tensor x, Tensor(a!) state, Tensor weight, Tensor? bias=None, bool silu=False) -> Tensor",
        &causal_conv1d_update_op);
  m.def("causal_conv1d_update_ref(Tensor x, Tensor(a!) state, Tensor weight, Tensor? bias=None, bool silu=False) -> "
        "Tensor",
        &causal_conv1d_update_ref_op);
  // One decode step of the selective scan (ops/selective_state_update); state (B, E, N) updated in place.
  m.def((std::string("selective_state_update") + kStateUpdateArgs).c_str(), &selective_state_update_op<false>);
  m.def((std::string("selective_state_update_ref") + kStateUpdateArgs).c_str(), &selective_state_update_op<true>);
  // RWKV-4 WKV (ops/wkv): w = -exp(time_decay), u = time_first; state (B, 3, C) = (aa, bb, pp).
  m.def((std::string("wkv") + kWkvArgs).c_str(), &wkv_op<false>);
  m.def((std::string("wkv_ref") + kWkvArgs).c_str(), &wkv_op<true>);
  // Mamba-2 SSD scan (ops/ssd_scan): returns (y, final_state, chunk_states).
  m.def((std::string("ssd_scan") + kSsdArgs).c_str(), &ssd_scan_op<false>);
  m.def((std::string("ssd_scan_ref") + kSsdArgs).c_str(), &ssd_scan_op<true>);
  // One decode step of ssd_scan; state is updated in place. Plain ATen everywhere, so there is no _ref twin.
  m.def("ssd_scan_update(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor(a!) state, Tensor? D=None, "
        "Tensor? dt_bias=None, bool dt_softplus=True, float dt_min=0.0, float? dt_max=None, Tensor? dt_mult=None, "
        "Tensor? decay_mult=None, Tensor? b_mult=None) -> Tensor",
        &ssd_scan_update_op);
}

}  // namespace ssmlab::ops
