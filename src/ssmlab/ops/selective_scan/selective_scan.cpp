#include "ssmlab/ops/selective_scan/selective_scan.h"

#include <limits>
#include <vector>

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/backend.h"

namespace ssmlab::ops {

void check_selective_scan_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                                 const std::optional<at::Tensor>& initial_state) {
  auto all = [&] {
    std::string s = str("u ", tensor_str(u), ", delta ", tensor_str(delta), ", A ", tensor_str(A), ", B ", tensor_str(B),
                        ", C ", tensor_str(C));
    if (D) s += str(", D ", tensor_str(*D));
    if (z) s += str(", z ", tensor_str(*z));
    if (delta_bias) s += str(", delta_bias ", tensor_str(*delta_bias));
    if (initial_state) s += str(", initial_state ", tensor_str(*initial_state));
    return s;
  };
  SSMLAB_CHECK(u.defined() && delta.defined() && A.defined() && B.defined() && C.defined(),
               "selective_scan: u, delta, A, B and C are required; got ", all());
  SSMLAB_CHECK(u.dim() == 3, "selective_scan: u must be (B, L, E); got ", all());
  const int64_t b = u.size(0), l = u.size(1), e = u.size(2);
  SSMLAB_CHECK(delta.sizes() == u.sizes(), "selective_scan: delta must match u (B, L, E); got ", all());
  SSMLAB_CHECK(A.dim() == 2 && A.size(0) == e, "selective_scan: A must be (E, N) with E = ", e, "; got ", all());
  const int64_t n = A.size(1);
  auto check_bc = [&](const at::Tensor& t, const char* name) {
    const bool plain = t.dim() == 3 && t.size(0) == b && t.size(1) == l && t.size(2) == n;
    const bool grouped = t.dim() == 4 && t.size(0) == b && t.size(1) == l && t.size(3) == n && t.size(2) >= 1 &&
                         e % t.size(2) == 0;
    SSMLAB_CHECK(plain || grouped, "selective_scan: ", name, " must be (B, L, N) = ", shape_str({b, l, n}),
                 " or (B, L, G, N) with E % G == 0; got ", all());
  };
  check_bc(B, "B");
  check_bc(C, "C");
  SSMLAB_CHECK(B.dim() == C.dim() && (B.dim() == 3 || B.size(2) == C.size(2)),
               "selective_scan: B and C must have the same group layout; got ", all());
  if (D) SSMLAB_CHECK(D->dim() == 1 && D->size(0) == e, "selective_scan: D must be (E); got ", all());
  if (z) SSMLAB_CHECK(z->sizes() == u.sizes(), "selective_scan: z must match u (B, L, E); got ", all());
  if (delta_bias)
    SSMLAB_CHECK(delta_bias->dim() == 1 && delta_bias->size(0) == e,
                 "selective_scan: delta_bias must be (E); got ", all());
  if (initial_state)
    SSMLAB_CHECK(initial_state->dim() == 3 && initial_state->size(0) == b && initial_state->size(1) == e &&
                     initial_state->size(2) == n,
                 "selective_scan: initial_state must be (B, E, N) = ", shape_str({b, e, n}), "; got ", all());
  for (const at::Tensor* t : {&delta, &A, &B, &C})
    SSMLAB_CHECK(t->device() == u.device(), "selective_scan: all inputs must be on one device; got ", all());
  for (const auto* t : {&D, &z, &delta_bias, &initial_state})
    if (*t) SSMLAB_CHECK((*t)->device() == u.device(), "selective_scan: all inputs must be on one device; got ", all());
  for (const at::Tensor* t : {&u, &delta, &A, &B, &C})
    SSMLAB_CHECK(at::isFloatingType(t->scalar_type()), "selective_scan: inputs must be floating point; got ", all());
}

SelectiveScanOut selective_scan(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                                bool delta_softplus, const std::optional<at::Tensor>& initial_state,
                                const std::string& backend) {
  check_selective_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state);
  // Fast kernels plug in here per device (ops/backend.cpp lists them); where none supports the case,
  // resolve_backend picks the reference and the log says so once.
  const bool fused_ok =
      u.is_cpu() ? selective_scan_cpu_supports(u, delta, A, B, C, D, z, delta_bias, initial_state)
                 : u.is_cuda() && selective_scan_cuda_supports(u, delta, A, B, C, D, z, delta_bias, initial_state);
  switch (resolve_backend(backend, "selective_scan", u.device(), fused_ok)) {
    case Backend::fused: {
      const SelectiveScanFn scan = u.is_cuda() ? &selective_scan_cuda : &selective_scan_fused;
      // Long sequences with few (batch, channel) rows: time segments side by side (segmented.cpp).
      const int64_t segments = selective_scan_segments(u.size(0), u.size(1), u.size(2), u.device());
      if (segments > 1)
        return selective_scan_segmented(scan, segments, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                        initial_state);
      return scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state);
    }
    case Backend::reference:
      break;
  }
  return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state);
}

SelectiveScanOut selective_scan_varlen(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                       const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                       const std::optional<at::Tensor>& z,
                                       const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                       const at::Tensor& cu_seqlens, const std::optional<at::Tensor>& initial_state,
                                       const std::string& backend) {
  SSMLAB_CHECK(u.defined() && u.dim() == 3 && u.size(0) == 1,
               "selective_scan_varlen: u must be (1, T, E) with the sequences packed along T; got ", tensor_str(u));
  SSMLAB_CHECK(cu_seqlens.defined() && cu_seqlens.dim() == 1 && cu_seqlens.size(0) >= 2 &&
                   (cu_seqlens.scalar_type() == at::kLong || cu_seqlens.scalar_type() == at::kInt),
               "selective_scan_varlen: cu_seqlens must be a 1-D int64/int32 tensor of S + 1 >= 2 offsets; got ",
               tensor_str(cu_seqlens));
  const int64_t total = u.size(1), e = u.size(2), nseq = cu_seqlens.size(0) - 1;
  const at::Tensor cu = cu_seqlens.to(at::kCPU, at::kLong).contiguous();
  const int64_t* off = cu.const_data_ptr<int64_t>();
  SSMLAB_CHECK(off[0] == 0 && off[nseq] == total, "selective_scan_varlen: cu_seqlens must run from 0 to T = ", total,
               "; got ", off[0], " .. ", off[nseq]);
  int64_t max_len = 0;
  for (int64_t s = 0; s < nseq; ++s) {
    SSMLAB_CHECK(off[s + 1] >= off[s], "selective_scan_varlen: cu_seqlens must be non-decreasing; offset ", s + 1,
                 " = ", off[s + 1], " < offset ", s, " = ", off[s]);
    max_len = std::max(max_len, off[s + 1] - off[s]);
  }
  if (initial_state)
    SSMLAB_CHECK(initial_state->dim() == 3 && initial_state->size(0) == nseq,
                 "selective_scan_varlen: initial_state must be (S, E, N) with S = ", nseq, " sequences; got ",
                 tensor_str(*initial_state));
  // Shapes of the packed inputs are checked as one batch row (initial_state is per sequence: checked above).
  check_selective_scan_inputs(u, delta, A, B, C, D, z, delta_bias, std::nullopt);

  // gather[s * max_len + j] = packed position of step j of sequence s (0 for padding); back[t] = the padded
  // row of packed position t.
  std::vector<int64_t> gather(static_cast<size_t>(nseq * max_len), 0), back(static_cast<size_t>(total));
  std::vector<uint8_t> valid(static_cast<size_t>(nseq * max_len), 0);
  for (int64_t s = 0; s < nseq; ++s)
    for (int64_t t = off[s]; t < off[s + 1]; ++t) {
      const int64_t row = s * max_len + (t - off[s]);
      gather[static_cast<size_t>(row)] = t;
      valid[static_cast<size_t>(row)] = 1;
      back[static_cast<size_t>(t)] = row;
    }
  const auto dev = u.device();
  const at::Tensor gidx = at::tensor(gather, at::TensorOptions().dtype(at::kLong)).to(dev);
  const at::Tensor bidx = at::tensor(back, at::TensorOptions().dtype(at::kLong)).to(dev);
  const at::Tensor mask =
      at::tensor(std::vector<int64_t>(valid.begin(), valid.end()), at::TensorOptions().dtype(at::kLong))
          .to(dev)
          .to(at::kBool);
  // (1, T, ...) -> (S, max_len, ...), padding filled with `pad` (broadcast over the trailing dimensions).
  auto pack = [&](const at::Tensor& t, const at::Tensor& pad) {
    std::vector<int64_t> shape{nseq, max_len}, mshape{nseq, max_len};
    for (int64_t d = 2; d < t.dim(); ++d) {
      shape.push_back(t.size(d));
      mshape.push_back(1);
    }
    const at::Tensor rows = t.squeeze(0).index_select(0, gidx).view(shape);
    return at::where(mask.view(mshape), rows, pad.to(rows.scalar_type()));
  };
  const at::Tensor zero = at::zeros({}, u.options());
  // delta' = 0 on padding. With softplus: softplus(-1e30 + bias) underflows to exactly 0 (-inf in fp16, also
  // 0) and so does its derivative. Without: the bias is added before packing and the padding is 0 (so the
  // bias gets no gradient from padding steps).
  std::optional<at::Tensor> bias = delta_bias;
  at::Tensor dp;
  if (delta_softplus) {
    dp = pack(delta, at::full({}, -1e30, delta.options()));
  } else {
    dp = pack(delta_bias ? delta + delta_bias->to(delta.scalar_type()) : delta, zero);
    bias = std::nullopt;
  }
  const at::Tensor up = pack(u, zero), Bp = pack(B, zero), Cp = pack(C, zero);
  std::optional<at::Tensor> zp;
  if (z) zp = pack(*z, zero);
  SelectiveScanOut r = selective_scan(up, dp, A, Bp, Cp, D, zp, bias, delta_softplus, initial_state, backend);
  r.y = r.y.reshape({nseq * max_len, e}).index_select(0, bidx).unsqueeze(0);
  return r;
}

}  // namespace ssmlab::ops
