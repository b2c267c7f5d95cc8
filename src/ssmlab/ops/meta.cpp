// Meta (fake) kernels of every ssmlab::<op> schema: the outputs' shapes, dtypes and strides (all contiguous, as
// the CPU/CUDA kernels return them: registration.cpp makes every output contiguous) without computing anything.
// They serve meta tensors from C++ and FakeTensor / torch.compile / torch.library.opcheck from Python. Sizes are
// SymInts so that dynamic shapes trace. Where no size is symbolic the inputs are validated by the same checks as
// the real kernels (same error messages); with symbolic sizes only the ranks are checked.
// The X_backward ops' Meta kernel is generic (op_autograd.cpp).
#include "ssmlab/ops/meta.h"

#include <vector>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#include "ssmlab/ops/cross_entropy/cross_entropy.h"
#include "ssmlab/ops/delta_rule/delta_rule.h"
#include "ssmlab/ops/mamba3/mamba3.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"
#include "ssmlab/ops/selective_state_update/selective_state_update.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"
#include "ssmlab/ops/wkv/wkv.h"

namespace ssmlab::ops::meta {
namespace {

using at::Tensor;
using OptT = std::optional<Tensor>;
using Sym = std::vector<c10::SymInt>;

bool symbolic(std::initializer_list<const Tensor*> ts, std::initializer_list<const OptT*> opts = {}) {
  for (const Tensor* t : ts)
    if (t->defined() && t->unsafeGetTensorImpl()->has_symbolic_sizes_strides()) return true;
  for (const OptT* t : opts)
    if (*t && (*t)->defined() && (*t)->unsafeGetTensorImpl()->has_symbolic_sizes_strides()) return true;
  return false;
}

void check_rank(const Tensor& t, int64_t rank, const char* op, const char* name) {
  SSMLAB_CHECK(t.defined() && t.dim() == rank, op, ": ", name, " must have ", rank, " dimensions; got ",
               t.defined() ? t.dim() : -1);
}

Tensor empty(Sym sizes, const Tensor& like, at::ScalarType dtype) {
  return at::empty_symint(sizes, like.options().dtype(dtype));
}

at::ScalarType state_of(const Tensor& t) { return state_dtype(t.scalar_type()); }

}  // namespace

std::tuple<Tensor, Tensor> selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                          const Tensor& C, const OptT& D, const OptT& z, const OptT& delta_bias,
                                          bool, const OptT& initial_state) {
  if (symbolic({&u, &delta, &A, &B, &C}, {&D, &z, &delta_bias, &initial_state})) {
    check_rank(u, 3, "selective_scan", "u");
    check_rank(A, 2, "selective_scan", "A");
  } else {
    check_selective_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state);
  }
  return {empty({u.sym_size(0), u.sym_size(1), u.sym_size(2)}, u, u.scalar_type()),
          empty({u.sym_size(0), u.sym_size(2), A.sym_size(1)}, u, state_of(u))};
}

std::tuple<Tensor, Tensor> selective_scan_varlen(const Tensor& u, const Tensor& delta, const Tensor& A,
                                                 const Tensor& B, const Tensor& C, const Tensor& cu_seqlens,
                                                 const OptT& D, const OptT& z, const OptT& delta_bias, bool,
                                                 const OptT& initial_state) {
  check_rank(u, 3, "selective_scan_varlen", "u");
  check_rank(A, 2, "selective_scan_varlen", "A");
  check_rank(cu_seqlens, 1, "selective_scan_varlen", "cu_seqlens");
  SSMLAB_CHECK(cu_seqlens.scalar_type() == at::kLong || cu_seqlens.scalar_type() == at::kInt,
               "selective_scan_varlen: cu_seqlens must be int64 or int32; got ", c10::toString(cu_seqlens.scalar_type()));
  if (!symbolic({&u, &delta, &A, &B, &C, &cu_seqlens}, {&D, &z, &delta_bias, &initial_state})) {
    SSMLAB_CHECK(u.size(0) == 1 && cu_seqlens.size(0) >= 2,
                 "selective_scan_varlen: u must be (1, T, E) and cu_seqlens hold S + 1 >= 2 offsets; got u ",
                 shape_str(u.sizes()), ", cu_seqlens ", shape_str(cu_seqlens.sizes()));
    if (initial_state)
      SSMLAB_CHECK(initial_state->dim() == 3 && initial_state->size(0) == cu_seqlens.size(0) - 1,
                   "selective_scan_varlen: initial_state must be (S, E, N) with S = ", cu_seqlens.size(0) - 1,
                   " sequences; got ", shape_str(initial_state->sizes()));
    check_selective_scan_inputs(u, delta, A, B, C, D, z, delta_bias, std::nullopt);
  }
  return {empty({u.sym_size(0), u.sym_size(1), u.sym_size(2)}, u, u.scalar_type()),
          empty({cu_seqlens.sym_size(0) - 1, u.sym_size(2), A.sym_size(1)}, u, state_of(u))};
}

std::tuple<Tensor, Tensor> causal_conv1d(const Tensor& x, const Tensor& weight, const OptT& bias, bool,
                                         const OptT& initial_state) {
  if (symbolic({&x, &weight}, {&bias, &initial_state})) {
    check_rank(x, 3, "causal_conv1d", "x");
    check_rank(weight, 2, "causal_conv1d", "weight");
  } else {
    check_causal_conv1d_inputs(x, weight, bias, initial_state);
  }
  return {empty({x.sym_size(0), x.sym_size(1), x.sym_size(2)}, x, x.scalar_type()),
          empty({x.sym_size(0), weight.sym_size(1) - 1, x.sym_size(2)}, x, x.scalar_type())};
}

Tensor causal_conv1d_update(const Tensor& x, Tensor& state, const Tensor& weight, const OptT& bias, bool) {
  if (symbolic({&x, &state, &weight}, {&bias})) {
    check_rank(x, 2, "causal_conv1d_update", "x");
  } else {
    check_causal_conv1d_update_inputs(x, state, weight, bias);
  }
  return empty({x.sym_size(0), x.sym_size(1)}, x, x.scalar_type());
}

Tensor selective_state_update(Tensor& state, const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B,
                              const Tensor& C, const OptT& D, const OptT& z, const OptT& dt_bias, bool) {
  if (symbolic({&state, &x, &dt, &A, &B, &C}, {&D, &z, &dt_bias})) {
    check_rank(x, 2, "selective_state_update", "x");
  } else {
    check_selective_state_update_inputs(state, x, dt, A, B, C, D, z, dt_bias);
  }
  return empty({x.sym_size(0), x.sym_size(1)}, x, x.scalar_type());
}

std::tuple<Tensor, Tensor> wkv(const Tensor& w, const Tensor& u, const Tensor& k, const Tensor& v,
                               const OptT& initial_state) {
  if (symbolic({&w, &u, &k, &v}, {&initial_state})) {
    check_rank(k, 3, "wkv", "k");
  } else {
    check_wkv_inputs(w, u, k, v, initial_state);
  }
  return {empty({k.sym_size(0), k.sym_size(1), k.sym_size(2)}, k, k.scalar_type()),
          empty({k.sym_size(0), 3, k.sym_size(2)}, k, state_of(k))};
}

namespace {
SsdScanOptions ssd_options(const OptT& D, const OptT& dt_bias, bool dt_softplus, double dt_min,
                           std::optional<double> dt_max, const OptT& initial_state, int64_t chunk_size,
                           bool return_chunk_states, const OptT& dt_mult, const OptT& decay_mult, const OptT& b_mult) {
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
  return o;
}
}  // namespace

std::tuple<Tensor, Tensor, Tensor> ssd_scan(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B,
                                            const Tensor& C, const OptT& D, const OptT& dt_bias, bool dt_softplus,
                                            double dt_min, std::optional<double> dt_max, const OptT& initial_state,
                                            int64_t chunk_size, bool return_chunk_states, const OptT& dt_mult,
                                            const OptT& decay_mult, const OptT& b_mult) {
  SSMLAB_CHECK(chunk_size >= 1, "ssd_scan: chunk_size must be >= 1; got ", chunk_size);
  if (symbolic({&x, &dt, &A, &B, &C}, {&D, &dt_bias, &initial_state, &dt_mult, &decay_mult, &b_mult})) {
    check_rank(x, 4, "ssd_scan", "x");
    check_rank(B, 4, "ssd_scan", "B");
  } else {
    // decay_mult > 0 is a check of values, which a meta tensor has none of: only its shape is checked here.
    if (decay_mult)
      SSMLAB_CHECK(decay_mult->dim() == 1 && x.dim() == 4 && decay_mult->size(0) == x.size(2) &&
                       at::isFloatingType(decay_mult->scalar_type()),
                   "ssd_scan: decay_mult must be a floating-point (H) tensor; got ", shape_str(decay_mult->sizes()));
    check_ssd_scan_inputs(x, dt, A, B, C,
                          ssd_options(D, dt_bias, dt_softplus, dt_min, dt_max, initial_state, chunk_size,
                                      return_chunk_states, dt_mult, std::nullopt, b_mult));
  }
  const c10::SymInt b = x.sym_size(0), l = x.sym_size(1), h = x.sym_size(2), p = x.sym_size(3), n = B.sym_size(3);
  const auto st = state_of(x);
  Tensor chunks = return_chunk_states ? empty({b, (l + (chunk_size - 1)) / chunk_size, h, p, n}, x, st)
                                      : empty({0}, x, st);
  return {empty({b, l, h, p}, x, x.scalar_type()), empty({b, h, p, n}, x, st), chunks};
}

Tensor ssd_scan_update(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B, const Tensor& C,
                       Tensor& state, const OptT& D, const OptT& dt_bias, bool dt_softplus, double dt_min,
                       std::optional<double> dt_max, const OptT& dt_mult, const OptT& decay_mult,
                       const OptT& b_mult) {
  check_rank(x, 3, "ssd_scan_update", "x");
  check_rank(state, 4, "ssd_scan_update", "state");
  (void)dt, (void)A, (void)B, (void)C, (void)D, (void)dt_bias, (void)dt_softplus, (void)dt_min, (void)dt_max,
      (void)dt_mult, (void)decay_mult, (void)b_mult;
  return empty({x.sym_size(0), x.sym_size(1), x.sym_size(2)}, x, x.scalar_type());
}

std::tuple<Tensor, Tensor> delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta,
                                      const OptT& g, const OptT& initial_state, int64_t chunk_size) {
  check_rank(q, 4, "delta_rule", "q");
  check_rank(v, 4, "delta_rule", "v");
  if (!symbolic({&q, &k, &v, &beta}, {&g, &initial_state})) {
    DeltaRuleOptions o;
    o.g = g;
    o.initial_state = initial_state;
    o.chunk_size = chunk_size;
    check_delta_rule_inputs(q, k, v, beta, o);
  }
  return {empty({q.sym_size(0), q.sym_size(1), v.sym_size(2), v.sym_size(3)}, q, q.scalar_type()),
          empty({q.sym_size(0), v.sym_size(2), q.sym_size(3), v.sym_size(3)}, q, state_of(q))};
}

Tensor delta_rule_update(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, Tensor& state,
                         const OptT& g) {
  check_rank(q, 3, "delta_rule_update", "q");
  check_rank(v, 3, "delta_rule_update", "v");
  check_rank(state, 4, "delta_rule_update", "state");
  (void)k, (void)beta, (void)g;
  return empty({v.sym_size(0), v.sym_size(1), v.sym_size(2)}, q, q.scalar_type());
}

Mamba3Tuple mamba3_scan(const Tensor& q, const Tensor& k, const Tensor& x, const Tensor& adt, const Tensor& dt,
                        const Tensor& trap, const Tensor& theta, const OptT& D, const OptT& phase, const OptT& state,
                        const OptT& k_prev, const OptT& x_prev, c10::string_view pairing, int64_t chunk_size) {
  check_rank(q, 5, "mamba3_scan", "q");
  check_rank(x, 5, "mamba3_scan", "x");
  check_rank(theta, 4, "mamba3_scan", "theta");
  const Mamba3Pairing pr = mamba3_pairing_from(std::string(pairing));
  if (!symbolic({&q, &k, &x, &adt, &dt, &trap, &theta}, {&D, &phase, &state, &k_prev, &x_prev})) {
    Mamba3Options o;
    o.pairing = pr;
    o.D = D;
    if (phase || state || k_prev || x_prev)
      o.initial = Mamba3State{phase.value_or(Tensor()), state.value_or(Tensor()), k_prev.value_or(Tensor()),
                              x_prev.value_or(Tensor())};
    o.chunk_size = chunk_size;
    check_mamba3_inputs(q, k, x, adt, dt, trap, theta, o);
  }
  const auto b = q.sym_size(0), t = q.sym_size(1), r = q.sym_size(2), h = q.sym_size(3), n = q.sym_size(4);
  const auto p = x.sym_size(4), s = theta.sym_size(3);
  return {empty({b, t, r, h, p}, x, x.scalar_type()), empty({b, h, s}, x, state_of(x)), empty({b, h, p, n}, x, state_of(x)),
          empty({b, r, h, n}, x, k.scalar_type()), empty({b, r, h, p}, x, x.scalar_type())};
}

Mamba3Tuple mamba3_step(const Tensor& q, const Tensor& k, const Tensor& x, const Tensor& adt, const Tensor& dt,
                        const Tensor& trap, const Tensor& theta, const Tensor& phase, const Tensor& state,
                        const Tensor& k_prev, const Tensor& x_prev, const OptT& D, c10::string_view pairing) {
  check_rank(q, 4, "mamba3_step", "q");
  check_rank(x, 4, "mamba3_step", "x");
  check_rank(theta, 3, "mamba3_step", "theta");
  (void)mamba3_pairing_from(std::string(pairing));
  (void)adt, (void)dt, (void)trap, (void)phase, (void)state, (void)k_prev, (void)x_prev, (void)D;
  const auto b = q.sym_size(0), r = q.sym_size(1), h = q.sym_size(2), n = q.sym_size(3);
  const auto p = x.sym_size(3), s = theta.sym_size(2);
  return {empty({b, r, h, p}, x, x.scalar_type()), empty({b, h, s}, x, state_of(x)), empty({b, h, p, n}, x, state_of(x)),
          empty({b, r, h, n}, x, k.scalar_type()), empty({b, r, h, p}, x, x.scalar_type())};
}

std::tuple<Tensor, Tensor> cross_entropy(const Tensor& logits, const Tensor& targets, int64_t) {
  if (symbolic({&logits, &targets})) {
    check_rank(logits, 2, "cross_entropy", "logits");
    check_rank(targets, 1, "cross_entropy", "targets");
  } else {
    check_cross_entropy_inputs(logits, targets);
  }
  return {empty({logits.sym_size(0)}, logits, state_of(logits)), empty({logits.sym_size(0)}, logits, state_of(logits))};
}

}  // namespace ssmlab::ops::meta
