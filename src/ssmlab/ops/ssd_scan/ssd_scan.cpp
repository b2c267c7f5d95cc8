#include "ssmlab/ops/ssd_scan/ssd_scan.h"

#include <cmath>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include "ssmlab/core/error.h"
#include "ssmlab/core/log.h"
#include "ssmlab/ops/backend.h"

namespace ssmlab::ops {

void check_ssd_scan_inputs(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                           const at::Tensor& C, const SsdScanOptions& o) {
  const std::pair<const char*, const std::optional<at::Tensor>*> optional[] = {
      {"D", &o.D},           {"dt_bias", &o.dt_bias}, {"initial_state", &o.initial_state},
      {"dt_mult", &o.dt_mult}, {"decay_mult", &o.decay_mult}, {"b_mult", &o.b_mult}};
  auto all = [&] {
    std::string s = str("x ", tensor_str(x), ", dt ", tensor_str(dt), ", A ", tensor_str(A), ", B ", tensor_str(B), ", C ",
                        tensor_str(C));
    for (const auto& [name, t] : optional)
      if (*t) s += str(", ", name, " ", tensor_str(**t));
    return s;
  };
  SSMLAB_CHECK(x.defined() && dt.defined() && A.defined() && B.defined() && C.defined(),
               "ssd_scan: x, dt, A, B and C are required; got ", all());
  SSMLAB_CHECK(x.dim() == 4, "ssd_scan: x must be (B, L, H, P); got ", all());
  const int64_t b = x.size(0), l = x.size(1), h = x.size(2), p = x.size(3);
  SSMLAB_CHECK(dt.dim() == 3 && dt.size(0) == b && dt.size(1) == l && dt.size(2) == h,
               "ssd_scan: dt must be (B, L, H) = ", shape_str({b, l, h}), "; got ", all());
  SSMLAB_CHECK(A.dim() == 1 && A.size(0) == h, "ssd_scan: A must be (H) with H = ", h, "; got ", all());
  SSMLAB_CHECK(B.dim() == 4 && B.size(0) == b && B.size(1) == l && B.size(2) >= 1 && h % B.size(2) == 0,
               "ssd_scan: B must be (B, L, G, N) with H % G == 0; got ", all());
  SSMLAB_CHECK(C.sizes() == B.sizes(), "ssd_scan: C must match B (B, L, G, N); got ", all());
  const int64_t n = B.size(3);
  for (const auto& [name, t] : optional) {
    if (!*t) continue;
    if (std::string(name) == "initial_state") {
      SSMLAB_CHECK((*t)->dim() == 4 && (*t)->size(0) == b && (*t)->size(1) == h && (*t)->size(2) == p &&
                       (*t)->size(3) == n,
                   "ssd_scan: initial_state must be (B, H, P, N) = ", shape_str({b, h, p, n}), "; got ", all());
    } else {
      SSMLAB_CHECK((*t)->dim() == 1 && (*t)->size(0) == h, "ssd_scan: ", name, " must be (H) with H = ", h,
                   "; got ", all());
    }
    SSMLAB_CHECK((*t)->device() == x.device(), "ssd_scan: all inputs must be on one device; got ", all());
    SSMLAB_CHECK(at::isFloatingType((*t)->scalar_type()), "ssd_scan: ", name, " must be floating point; got ",
                 all());
  }
  for (const at::Tensor* t : {&dt, &A, &B, &C})
    SSMLAB_CHECK(t->device() == x.device(), "ssd_scan: all inputs must be on one device; got ", all());
  for (const at::Tensor* t : {&x, &dt, &A, &B, &C})
    SSMLAB_CHECK(at::isFloatingType(t->scalar_type()), "ssd_scan: inputs must be floating point; got ", all());
  SSMLAB_CHECK(o.chunk_size >= 1, "ssd_scan: chunk_size must be >= 1; got ", o.chunk_size);
  SSMLAB_CHECK(o.dt_min >= 0.0 && !(o.dt_max < o.dt_min),
               "ssd_scan: dt limits must satisfy 0 <= dt_min <= dt_max; got dt_min ", o.dt_min, ", dt_max ",
               o.dt_max);
  if (o.decay_mult)
    SSMLAB_CHECK((*o.decay_mult > 0).all().item<bool>(), "ssd_scan: decay_mult must be > 0 (it scales exp(dt A)); got ",
                 tensor_str(*o.decay_mult), " with min ", o.decay_mult->min().item<double>());
}

namespace ssd_detail {

Coefficients coefficients(const at::Tensor& dt, const at::Tensor& A, const SsdScanOptions& o,
                          at::ScalarType ct) {
  at::Tensor d = dt.to(ct);                                              // (B, L, H)
  if (o.dt_bias) d = d + o.dt_bias->to(ct);
  if (o.dt_softplus) d = at::softplus(d);
  if (o.dt_min > 0.0 || std::isfinite(o.dt_max))
    d = at::clamp(d, o.dt_min, std::isfinite(o.dt_max) ? std::optional<at::Scalar>(o.dt_max) : std::nullopt);
  if (o.dt_mult) d = d * o.dt_mult->to(ct);
  at::Tensor a = d * A.to(ct);                                           // (B, L, H) log-decay
  if (o.decay_mult) a = a + at::log(o.decay_mult->to(ct));
  at::Tensor w = o.b_mult ? d * o.b_mult->to(ct) : d;                    // (B, L, H) input weight
  return {a, w};
}

}  // namespace ssd_detail

const char* to_string(SsdScanPath path) {
  switch (path) {
    case SsdScanPath::reference: return "reference";
    case SsdScanPath::chunked: return "chunked";
    case SsdScanPath::fused: return "fused";
  }
  return "?";
}

namespace {
// Gradients will flow through the scan: autograd is recording and some input requires grad.
bool needs_grad(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                const at::Tensor& C, const SsdScanOptions& o) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : {&x, &dt, &A, &B, &C})
    if (t->requires_grad()) return true;
  for (const auto* t : {&o.D, &o.dt_bias, &o.initial_state, &o.dt_mult, &o.decay_mult, &o.b_mult})
    if (*t && (*t)->requires_grad()) return true;
  return false;
}

// The CPU training policy (ssd_scan.h, kSsdCpuTrainChunkedMinPN): on one thread the chunked algorithm beats
// the fused kernel's forward+backward at large heads.
bool cpu_prefers_chunked(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                         const at::Tensor& C, const SsdScanOptions& o) {
  return x.size(3) * B.size(3) >= kSsdCpuTrainChunkedMinPN && at::get_num_threads() == 1 &&
         needs_grad(x, dt, A, B, C, o);
}
}  // namespace

SsdScanPath ssd_scan_path(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                          const at::Tensor& C, const SsdScanOptions& opts, const std::string& backend) {
  check_backend_name(backend);
  if (backend == "reference") return SsdScanPath::reference;
  if (ssd_scan_cpu_supports(x, dt, A, B, C, opts))
    return cpu_prefers_chunked(x, dt, A, B, C, opts) ? SsdScanPath::chunked : SsdScanPath::fused;
  if (ssd_scan_cuda_supports(x, dt, A, B, C, opts)) return SsdScanPath::fused;
  return SsdScanPath::chunked;
}

SsdScanOut ssd_scan(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                    const at::Tensor& C, const SsdScanOptions& opts, const std::string& backend) {
  check_backend_name(backend);
  check_ssd_scan_inputs(x, dt, A, B, C, opts);
  const SsdScanPath path = ssd_scan_path(x, dt, A, B, C, opts, backend);
  if (path == SsdScanPath::reference) return ssd_scan_reference(x, dt, A, B, C, opts);
  if (path == SsdScanPath::fused) return ssd_scan_fused(x, dt, A, B, C, opts);
  if (ssd_scan_cpu_supports(x, dt, A, B, C, opts)) {
    // The CPU training policy, at its measured chunk (no chunk-state export here: that is not cpu_supports).
    SsdScanOptions o = opts;
    o.chunk_size = kSsdCpuTrainChunk;
    return ssd_scan_chunked(x, dt, A, B, C, o);
  }
  const std::string dev = c10::DeviceTypeName(x.device().type(), /*lower_case=*/true);
  log::warn_once("ssd_scan:chunked:" + dev, str("ops: no fused ssd_scan kernel for ", dev, " takes this case "
                                                "(chunk-state export, dtype, P > 64 or N > 256 on CUDA, or a build "
                                                "without CUDA kernels); running the chunked ATen algorithm"));
  return ssd_scan_chunked(x, dt, A, B, C, opts);
}

}  // namespace ssmlab::ops
