// Checks, backend choice and the decode step of the delta rule (delta_rule.h).
#include "ssmlab/ops/delta_rule/delta_rule.h"

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/core/log.h"
#include "ssmlab/ops/backend.h"

namespace ssmlab::ops {

void check_delta_rule_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                             const DeltaRuleOptions& o) {
  auto all = [&] {
    std::string s = str("q ", tensor_str(q), ", k ", tensor_str(k), ", v ", tensor_str(v), ", beta ", tensor_str(beta));
    if (o.g) s += str(", g ", tensor_str(*o.g));
    if (o.initial_state) s += str(", initial_state ", tensor_str(*o.initial_state));
    return s;
  };
  SSMLAB_CHECK(q.defined() && k.defined() && v.defined() && beta.defined(),
               "delta_rule: q, k, v and beta are required; got ", all());
  SSMLAB_CHECK(q.dim() == 4, "delta_rule: q must be (B, L, H, K); got ", all());
  const int64_t b = q.size(0), l = q.size(1), h = q.size(2), kd = q.size(3);
  SSMLAB_CHECK(k.sizes() == q.sizes(), "delta_rule: k must match q (B, L, H, K); got ", all());
  SSMLAB_CHECK(v.dim() == 4 && v.size(0) == b && v.size(1) == l && v.size(2) >= 1 && v.size(2) % h == 0,
               "delta_rule: v must be (B, L, HV, V) with HV a multiple of H = ", h, "; got ", all());
  const int64_t hv = v.size(2), vd = v.size(3);
  SSMLAB_CHECK(h >= 1 && kd >= 1 && vd >= 1, "delta_rule: H, K and V must be >= 1; got ", all());
  SSMLAB_CHECK(beta.dim() == 3 && beta.size(0) == b && beta.size(1) == l && beta.size(2) == hv,
               "delta_rule: beta must be (B, L, HV) = ", shape_str({b, l, hv}), "; got ", all());
  if (o.g) {
    const at::Tensor& g = *o.g;
    const bool per_head = g.dim() == 3 && g.size(0) == b && g.size(1) == l && g.size(2) == hv;
    const bool per_key = g.dim() == 4 && g.size(0) == b && g.size(1) == l && g.size(2) == hv && g.size(3) == kd;
    SSMLAB_CHECK(per_head || per_key, "delta_rule: g must be (B, L, HV) = ", shape_str({b, l, hv}),
                 " (one gate per head) or (B, L, HV, K) = ", shape_str({b, l, hv, kd}), " (one per key channel); got ",
                 all());
  }
  if (o.initial_state)
    SSMLAB_CHECK(o.initial_state->dim() == 4 && o.initial_state->size(0) == b && o.initial_state->size(1) == hv &&
                     o.initial_state->size(2) == kd && o.initial_state->size(3) == vd,
                 "delta_rule: initial_state must be (B, HV, K, V) = ", shape_str({b, hv, kd, vd}), "; got ", all());
  std::vector<const at::Tensor*> ts = {&q, &k, &v, &beta};
  if (o.g) ts.push_back(&*o.g);
  if (o.initial_state) ts.push_back(&*o.initial_state);
  for (const at::Tensor* t : ts) {
    SSMLAB_CHECK(t->device() == q.device(), "delta_rule: all inputs must be on one device; got ", all());
    SSMLAB_CHECK(at::isFloatingType(t->scalar_type()), "delta_rule: inputs must be floating point; got ", all());
  }
  SSMLAB_CHECK(o.chunk_size >= 1, "delta_rule: chunk_size must be >= 1; got ", o.chunk_size);
}

const char* to_string(DeltaRulePath path) {
  switch (path) {
    case DeltaRulePath::reference: return "reference";
    case DeltaRulePath::chunked: return "chunked";
    case DeltaRulePath::fused: return "fused";
  }
  return "?";
}

DeltaRulePath delta_rule_path(const at::Tensor& q, const std::string& backend) {
  check_backend_name(backend);
  if (backend == "reference") return DeltaRulePath::reference;
  if (delta_rule_cpu_supports(q) || delta_rule_cuda_supports(q)) return DeltaRulePath::fused;
  return DeltaRulePath::chunked;
}

DeltaRuleOut delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                        const DeltaRuleOptions& opts, const std::string& backend) {
  check_backend_name(backend);
  check_delta_rule_inputs(q, k, v, beta, opts);
  switch (delta_rule_path(q, backend)) {
    case DeltaRulePath::reference: return delta_rule_reference(q, k, v, beta, opts);
    case DeltaRulePath::fused: return delta_rule_fused(q, k, v, beta, opts);
    case DeltaRulePath::chunked: break;
  }
  const std::string dev = c10::DeviceTypeName(q.device().type(), /*lower_case=*/true);
  log::warn_once("delta_rule:chunked:" + dev, str("ops: no fused delta_rule kernel for ", dev, " takes this case (",
                                                 c10::toString(q.scalar_type()), ", K ", q.size(3),
                                                 ", SSMLAB_DELTA_CUDA, or a build without CUDA kernels); running "
                                                 "the chunked UT/WY algorithm in ATen"));
  return delta_rule_chunked(q, k, v, beta, opts);
}

at::Tensor delta_rule_update(const at::Tensor& q_t, const at::Tensor& k_t, const at::Tensor& v_t,
                             const at::Tensor& beta_t, at::Tensor& state, const std::optional<at::Tensor>& g_t) {
  auto got = [&] {
    std::string s = str("q_t ", tensor_str(q_t), ", k_t ", tensor_str(k_t), ", v_t ", tensor_str(v_t), ", beta_t ",
                        tensor_str(beta_t), ", state ", tensor_str(state));
    if (g_t) s += str(", g_t ", tensor_str(*g_t));
    return s;
  };
  SSMLAB_CHECK(q_t.defined() && q_t.dim() == 3 && k_t.defined() && k_t.dim() == 3 && v_t.defined() &&
                   v_t.dim() == 3 && beta_t.defined() && beta_t.dim() == 2 && state.defined(),
               "delta_rule_update: expected q_t, k_t (B, H, K), v_t (B, HV, V), beta_t (B, HV) and a state; got ",
               got());
  const int64_t b = q_t.size(0), kd = q_t.size(2), hv = v_t.size(1), vd = v_t.size(2);
  SSMLAB_CHECK(state.dim() == 4 && state.size(0) == b && state.size(1) == hv && state.size(2) == kd &&
                   state.size(3) == vd,
               "delta_rule_update: state must be (B, HV, K, V) = ", shape_str({b, hv, kd, vd}), "; got ", got());
  SSMLAB_CHECK(at::isFloatingType(state.scalar_type()) && state.device() == q_t.device(),
               "delta_rule_update: state must be floating point on q_t's device; got ", got());
  DeltaRuleOptions o;
  if (g_t) o.g = g_t->unsqueeze(1);
  check_delta_rule_inputs(q_t.unsqueeze(1), k_t.unsqueeze(1), v_t.unsqueeze(1), beta_t.unsqueeze(1), o);
  const auto ct = state_dtype(q_t.scalar_type());
  const int64_t h = q_t.size(1), rep = hv / h;
  at::NoGradGuard no_grad;
  auto expand = [&](const at::Tensor& t) { return rep == 1 ? t.to(ct) : t.to(ct).repeat_interleave(rep, 1); };
  const at::Tensor q = expand(q_t), k = expand(k_t);                                  // (B, HV, K)
  at::Tensor S = state.to(ct);
  if (g_t) {
    const at::Tensor a = at::exp(g_t->to(ct));
    S = S * (a.dim() == 2 ? a.view({b, hv, 1, 1}) : a.unsqueeze(-1));
  }
  const at::Tensor w = at::matmul(k.unsqueeze(-2), S).squeeze(-2);                   // (B, HV, V) S^T k
  const at::Tensor u = beta_t.to(ct).unsqueeze(-1) * (v_t.to(ct) - w);
  S = S + k.unsqueeze(-1) * u.unsqueeze(-2);
  const at::Tensor o_t = at::matmul(q.unsqueeze(-2), S).squeeze(-2);                 // (B, HV, V)
  state.copy_(S);
  return o_t.to(q_t.scalar_type());
}

}  // namespace ssmlab::ops
