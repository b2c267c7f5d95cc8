// Every ssmlab op schema, in one place (docs/ARCHITECTURE.md, "The op"). Built into the shared library
// libssmlab_ops.so so Python can torch.ops.load_library() it and call torch.ops.ssmlab.<op>.
// `<op>` picks the fastest kernel for the inputs' device; `<op>_ref` always runs the oracle.
// Per schema: a CPU and a CUDA kernel (the C++ entry, run without recording a graph, outputs made contiguous
// and never aliasing an input), a Meta kernel (ops/meta.cpp) and an Autograd kernel (ops/op_autograd.h); each
// differentiable op has a functional `<op>_backward` schema with CPU/CUDA/Meta kernels of its own.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#include "ssmlab/ops/cross_entropy/cross_entropy.h"
#include "ssmlab/ops/delta_rule/delta_rule.h"
#include "ssmlab/ops/mamba3/mamba3.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"
#include "ssmlab/ops/selective_state_update/selective_state_update.h"
#include "ssmlab/ops/wkv/wkv.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"
#include "ssmlab/ops/meta.h"
#include "ssmlab/ops/op_autograd.h"

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

// ssmlab::delta_rule (kRef false) and ssmlab::delta_rule_ref (kRef true): (o, final_state).
template <bool kRef>
std::tuple<at::Tensor, at::Tensor> delta_rule_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 const at::Tensor& beta, const std::optional<at::Tensor>& g,
                                                 const std::optional<at::Tensor>& initial_state, int64_t chunk_size) {
  DeltaRuleOptions o;
  o.g = g;
  o.initial_state = initial_state;
  o.chunk_size = chunk_size;
  auto r = delta_rule(q, k, v, beta, o, kRef ? "reference" : "auto");
  return {r.o, r.final_state};
}

at::Tensor delta_rule_update_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                                at::Tensor& state, const std::optional<at::Tensor>& g) {
  return delta_rule_update(q, k, v, beta, state, g);
}

constexpr const char* kDeltaArgs =
    "(Tensor q, Tensor k, Tensor v, Tensor beta, Tensor? g=None, Tensor? initial_state=None, int chunk_size=64) "
    "-> (Tensor, Tensor)";

// ssmlab::mamba3_scan (kRef false) and ssmlab::mamba3_scan_ref (kRef true): (y, phase, state, k_prev, x_prev);
// the initial state is the four optional tensors (all or none).
using Mamba3Tuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
template <bool kRef>
Mamba3Tuple mamba3_scan_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                           const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                           const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& phase,
                           const std::optional<at::Tensor>& state, const std::optional<at::Tensor>& k_prev,
                           const std::optional<at::Tensor>& x_prev, c10::string_view pairing, int64_t chunk_size) {
  Mamba3Options o;
  o.pairing = mamba3_pairing_from(std::string(pairing));
  o.D = D;
  if (phase || state || k_prev || x_prev)
    o.initial = Mamba3State{phase.value_or(at::Tensor()), state.value_or(at::Tensor()), k_prev.value_or(at::Tensor()),
                            x_prev.value_or(at::Tensor())};
  o.chunk_size = chunk_size;
  auto r = mamba3_scan(q, k, x, adt, dt, trap, theta, o, kRef ? "reference" : "auto");
  return {r.y, r.final.phase, r.final.state, r.final.k_prev, r.final.x_prev};
}

Mamba3Tuple mamba3_step_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                           const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                           const at::Tensor& phase, const at::Tensor& state, const at::Tensor& k_prev,
                           const at::Tensor& x_prev, const std::optional<at::Tensor>& D, c10::string_view pairing) {
  auto [y, next] = mamba3_step(q, k, x, adt, dt, trap, theta, Mamba3State{phase, state, k_prev, x_prev},
                               mamba3_pairing_from(std::string(pairing)), D);
  return {y, next.phase, next.state, next.k_prev, next.x_prev};
}

constexpr const char* kMamba3Args =
    "(Tensor q, Tensor k, Tensor x, Tensor adt, Tensor dt, Tensor trap, Tensor theta, Tensor? D=None, "
    "Tensor? phase=None, Tensor? state=None, Tensor? k_prev=None, Tensor? x_prev=None, str pairing=\"adjacent\", "
    "int chunk_size=64) -> (Tensor, Tensor, Tensor, Tensor, Tensor)";
constexpr const char* kMamba3StepArgs =
    "(Tensor q, Tensor k, Tensor x, Tensor adt, Tensor dt, Tensor trap, Tensor theta, Tensor phase, Tensor state, "
    "Tensor k_prev, Tensor x_prev, Tensor? D=None, str pairing=\"adjacent\") "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)";

// ssmlab::cross_entropy (kRef false) and ssmlab::cross_entropy_ref (kRef true): (loss, lse), both (M).
template <bool kRef>
std::tuple<at::Tensor, at::Tensor> cross_entropy_op(const at::Tensor& logits, const at::Tensor& targets,
                                                    int64_t ignore_index) {
  auto r = cross_entropy(logits, targets, ignore_index, kRef ? "reference" : "auto");
  return {r.loss, r.lse};
}

constexpr const char* kCrossEntropyArgs = "(Tensor logits, Tensor targets, int ignore_index=-100) -> (Tensor, Tensor)";

constexpr const char* kScanArgs =
    "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? z=None, "
    "Tensor? delta_bias=None, bool delta_softplus=False, Tensor? initial_state=None) -> (Tensor, Tensor)";
constexpr const char* kScanVarlenArgs =
    "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor cu_seqlens, Tensor? D=None, Tensor? z=None, "
    "Tensor? delta_bias=None, bool delta_softplus=False, Tensor? initial_state=None) -> (Tensor, Tensor)";
constexpr const char* kConvArgs =
    "(Tensor x, Tensor weight, Tensor? bias=None, bool silu=False, Tensor? initial_state=None) -> (Tensor, Tensor)";


// The differentiable schemas with their argument lists (their `_backward` schemas are built from these).
const std::vector<std::pair<std::string, const char*>>& differentiable_ops() {
  static const std::vector<std::pair<std::string, const char*>> ops = {
      {"selective_scan", kScanArgs}, {"selective_scan_ref", kScanArgs},
      {"selective_scan_varlen", kScanVarlenArgs}, {"selective_scan_varlen_ref", kScanVarlenArgs},
      {"causal_conv1d", kConvArgs}, {"causal_conv1d_ref", kConvArgs},
      {"wkv", kWkvArgs}, {"wkv_ref", kWkvArgs},
      {"ssd_scan", kSsdArgs}, {"ssd_scan_ref", kSsdArgs},
      {"delta_rule", kDeltaArgs}, {"delta_rule_ref", kDeltaArgs},
      {"mamba3_scan", kMamba3Args}, {"mamba3_scan_ref", kMamba3Args}, {"mamba3_step", kMamba3StepArgs},
      {"cross_entropy", kCrossEntropyArgs}, {"cross_entropy_ref", kCrossEntropyArgs}};
  return ops;
}

// The CPU/CUDA kernel of a schema: the C++ entry F without a graph (ForwardGradScope), every output
// contiguous and in storage of its own.
template <auto F>
struct Kernel;

inline void collect(std::vector<at::Tensor>&) {}
template <class T, class... Rest>
void collect(std::vector<at::Tensor>& out, const T& first, const Rest&... rest) {
  if constexpr (std::is_same_v<std::decay_t<T>, at::Tensor>) {
    out.push_back(first);
  } else if constexpr (std::is_same_v<std::decay_t<T>, std::optional<at::Tensor>>) {
    if (first) out.push_back(*first);
  }
  collect(out, rest...);
}

// Contiguous at storage offset 0 (as the Meta kernels promise), and never a view of an input.
inline at::Tensor own(const at::Tensor& t, const std::vector<at::Tensor>& inputs) {
  if (!t.defined()) return t;
  for (const auto& in : inputs)
    if (in.defined() && t.is_alias_of(in)) return t.clone(at::MemoryFormat::Contiguous);
  return as_dense(t);
}

template <class R, class... Args, R (*F)(Args...)>
struct Kernel<F> {
  static R call(Args... args) {
    R r = [&] {
      ForwardGradScope scope;
      return F(args...);
    }();
    std::vector<at::Tensor> inputs;
    collect(inputs, args...);
    if constexpr (std::is_same_v<R, at::Tensor>) {
      return own(r, inputs);
    } else {
      return std::apply([&](auto&... t) { return R(own(t, inputs)...); }, r);
    }
  }
};

}  // namespace

TORCH_LIBRARY(ssmlab, m) {
  m.def((std::string("selective_scan") + kScanArgs).c_str());
  m.def((std::string("selective_scan_ref") + kScanArgs).c_str());
  // Packed variable-length sequences: u (1, T, E), cu_seqlens (S + 1); final state (S, E, N).
  m.def((std::string("selective_scan_varlen") + kScanVarlenArgs).c_str());
  m.def((std::string("selective_scan_varlen_ref") + kScanVarlenArgs).c_str());
  m.def((std::string("causal_conv1d") + kConvArgs).c_str());
  m.def((std::string("causal_conv1d_ref") + kConvArgs).c_str());
  // One decode step; state is shifted in place (a CUDA kernel on CUDA, plain ATen elsewhere and in _ref).
  m.def("causal_conv1d_update(Tensor x, Tensor(a!) state, Tensor weight, Tensor? bias=None, bool silu=False) -> Tensor");
  m.def("causal_conv1d_update_ref(Tensor x, Tensor(a!) state, Tensor weight, Tensor? bias=None, bool silu=False) -> "
        "Tensor");
  // One decode step of the selective scan (ops/selective_state_update); state (B, E, N) updated in place.
  m.def((std::string("selective_state_update") + kStateUpdateArgs).c_str());
  m.def((std::string("selective_state_update_ref") + kStateUpdateArgs).c_str());
  // RWKV-4 WKV (ops/wkv): w = -exp(time_decay), u = time_first; state (B, 3, C) = (aa, bb, pp).
  m.def((std::string("wkv") + kWkvArgs).c_str());
  m.def((std::string("wkv_ref") + kWkvArgs).c_str());
  // Mamba-2 SSD scan (ops/ssd_scan): returns (y, final_state, chunk_states).
  m.def((std::string("ssd_scan") + kSsdArgs).c_str());
  m.def((std::string("ssd_scan_ref") + kSsdArgs).c_str());
  // One decode step of ssd_scan; state is updated in place. Plain ATen everywhere, so there is no _ref twin.
  m.def("ssd_scan_update(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor(a!) state, Tensor? D=None, "
        "Tensor? dt_bias=None, bool dt_softplus=True, float dt_min=0.0, float? dt_max=None, Tensor? dt_mult=None, "
        "Tensor? decay_mult=None, Tensor? b_mult=None) -> Tensor");
  // The (gated) delta rule (ops/delta_rule): DeltaNet, Gated DeltaNet (g (B, L, HV)), KDA (g (B, L, HV, K)).
  m.def((std::string("delta_rule") + kDeltaArgs).c_str());
  m.def((std::string("delta_rule_ref") + kDeltaArgs).c_str());
  // One decode step of delta_rule; state (B, HV, K, V) updated in place. Plain ATen everywhere (no _ref twin).
  m.def("delta_rule_update(Tensor q, Tensor k, Tensor v, Tensor beta, Tensor(a!) state, Tensor? g=None) -> Tensor");
  // The Mamba-3 scan (ops/mamba3), SISO and MIMO: returns (y, phase, state, k_prev, x_prev), the carried state.
  m.def((std::string("mamba3_scan") + kMamba3Args).c_str());
  m.def((std::string("mamba3_scan_ref") + kMamba3Args).c_str());
  // One decode step of mamba3_scan, functional (returns the next state); plain ATen everywhere (no _ref twin).
  m.def((std::string("mamba3_step") + kMamba3StepArgs).c_str());
  // Token cross-entropy (ops/cross_entropy): logits (M, V), targets (M) int64 -> (loss, lse), (M) each.
  m.def((std::string("cross_entropy") + kCrossEntropyArgs).c_str());
  m.def((std::string("cross_entropy_ref") + kCrossEntropyArgs).c_str());
  // The backward of each differentiable op: gradients of its floating-point tensor inputs that are present, in
  // argument order (op_autograd.h).
  for (const auto& [name, args] : differentiable_ops()) {
    std::string a = args;
    a = a.substr(1, a.find(") ->") - 1);
    m.def((name + "_backward(Tensor[] grads, " + a + ") -> Tensor[]").c_str());
  }
}

#define SSMLAB_IMPL_BACKEND(KEY)                                                                                 \
  TORCH_LIBRARY_IMPL(ssmlab, KEY, m) {                                                                           \
    m.impl("selective_scan", &Kernel<&selective_scan_op>::call);                                                 \
    m.impl("selective_scan_ref", &Kernel<&selective_scan_ref_op>::call);                                         \
    m.impl("selective_scan_varlen", &Kernel<&selective_scan_varlen_op<false>>::call);                            \
    m.impl("selective_scan_varlen_ref", &Kernel<&selective_scan_varlen_op<true>>::call);                         \
    m.impl("causal_conv1d", &Kernel<&causal_conv1d_op>::call);                                                   \
    m.impl("causal_conv1d_ref", &Kernel<&causal_conv1d_ref_op>::call);                                           \
    m.impl("causal_conv1d_update", &Kernel<&causal_conv1d_update_op>::call);                                     \
    m.impl("causal_conv1d_update_ref", &Kernel<&causal_conv1d_update_ref_op>::call);                             \
    m.impl("selective_state_update", &Kernel<&selective_state_update_op<false>>::call);                          \
    m.impl("selective_state_update_ref", &Kernel<&selective_state_update_op<true>>::call);                       \
    m.impl("wkv", &Kernel<&wkv_op<false>>::call);                                                                \
    m.impl("wkv_ref", &Kernel<&wkv_op<true>>::call);                                                             \
    m.impl("ssd_scan", &Kernel<&ssd_scan_op<false>>::call);                                                      \
    m.impl("ssd_scan_ref", &Kernel<&ssd_scan_op<true>>::call);                                                   \
    m.impl("ssd_scan_update", &Kernel<&ssd_scan_update_op>::call);                                               \
    m.impl("delta_rule", &Kernel<&delta_rule_op<false>>::call);                                                  \
    m.impl("delta_rule_ref", &Kernel<&delta_rule_op<true>>::call);                                               \
    m.impl("delta_rule_update", &Kernel<&delta_rule_update_op>::call);                                           \
    m.impl("mamba3_scan", &Kernel<&mamba3_scan_op<false>>::call);                                                \
    m.impl("mamba3_scan_ref", &Kernel<&mamba3_scan_op<true>>::call);                                             \
    m.impl("mamba3_step", &Kernel<&mamba3_step_op>::call);                                                       \
    m.impl("cross_entropy", &Kernel<&cross_entropy_op<false>>::call);                                            \
    m.impl("cross_entropy_ref", &Kernel<&cross_entropy_op<true>>::call);                                         \
    for (const auto& op : differentiable_ops())                                                                  \
      m.impl((op.first + "_backward").c_str(), torch::CppFunction::makeFromBoxedFunction<&backward_recompute_kernel>()); \
  }
SSMLAB_IMPL_BACKEND(CPU)
SSMLAB_IMPL_BACKEND(CUDA)
#undef SSMLAB_IMPL_BACKEND

TORCH_LIBRARY_IMPL(ssmlab, Meta, m) {
  m.impl("selective_scan", &meta::selective_scan);
  m.impl("selective_scan_ref", &meta::selective_scan);
  m.impl("selective_scan_varlen", &meta::selective_scan_varlen);
  m.impl("selective_scan_varlen_ref", &meta::selective_scan_varlen);
  m.impl("causal_conv1d", &meta::causal_conv1d);
  m.impl("causal_conv1d_ref", &meta::causal_conv1d);
  m.impl("causal_conv1d_update", &meta::causal_conv1d_update);
  m.impl("causal_conv1d_update_ref", &meta::causal_conv1d_update);
  m.impl("selective_state_update", &meta::selective_state_update);
  m.impl("selective_state_update_ref", &meta::selective_state_update);
  m.impl("wkv", &meta::wkv);
  m.impl("wkv_ref", &meta::wkv);
  m.impl("ssd_scan", &meta::ssd_scan);
  m.impl("ssd_scan_ref", &meta::ssd_scan);
  m.impl("ssd_scan_update", &meta::ssd_scan_update);
  m.impl("delta_rule", &meta::delta_rule);
  m.impl("delta_rule_ref", &meta::delta_rule);
  m.impl("delta_rule_update", &meta::delta_rule_update);
  m.impl("mamba3_scan", &meta::mamba3_scan);
  m.impl("mamba3_scan_ref", &meta::mamba3_scan);
  m.impl("mamba3_step", &meta::mamba3_step);
  m.impl("cross_entropy", &meta::cross_entropy);
  m.impl("cross_entropy_ref", &meta::cross_entropy);
  for (const auto& op : differentiable_ops())
    m.impl((op.first + "_backward").c_str(), torch::CppFunction::makeFromBoxedFunction<&backward_meta_kernel>());
}

TORCH_LIBRARY_IMPL(ssmlab, Autograd, m) {
  for (const auto& op : differentiable_ops())
    m.impl(op.first.c_str(), torch::CppFunction::makeFromBoxedFunction<&autograd_recompute_kernel>());
  for (const auto& op : differentiable_ops())
    m.impl((op.first + "_backward").c_str(), torch::CppFunction::makeFromBoxedFunction<&autograd_backward_kernel>());
  for (const char* name : {"causal_conv1d_update", "causal_conv1d_update_ref", "selective_state_update",
                           "selective_state_update_ref", "ssd_scan_update", "delta_rule_update"})
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&autograd_decode_kernel>());
}

}  // namespace ssmlab::ops
