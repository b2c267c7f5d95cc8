#include "ssmlab/mixers/diag_ssm.h"

#include <cmath>
#include <numbers>

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"

namespace ssmlab::mixers {

DiagSsmImpl::DiagSsmImpl(int64_t channels, int64_t d_state, std::string discretization, double dt_min,
                         double dt_max, at::Generator& gen)
    : channels_(channels), modes_(d_state / 2), discretization_(std::move(discretization)) {
  SSMLAB_CHECK(d_state >= 2 && d_state % 2 == 0, "diagonal SSM: d_state must be even and >= 2 (N/2 complex modes); got ",
               d_state);
  SSMLAB_CHECK(discretization_ == "zoh" || discretization_ == "bilinear",
               "diagonal SSM: discretization must be zoh or bilinear; got '", discretization_, "'");
  SSMLAB_CHECK(0 < dt_min && dt_min <= dt_max, "diagonal SSM: need 0 < dt_min <= dt_max; got ", dt_min, ", ", dt_max);
  const int64_t H = channels, M = modes_;
  log_dt = register_parameter("log_dt", at::empty({H}));
  log_A_real = register_parameter("log_A_real", at::empty({H, M}));
  A_imag = register_parameter("A_imag", at::empty({H, M}));
  C = register_parameter("C", at::empty({H, M, 2}));
  // S4D-Lin (spec §1.4 "diag-lin"): A_n = -1/2 + i pi n; log_dt ~ U(log dt_min, log dt_max) per channel;
  // C complex standard normal (each part N(0, 1/2)).
  at::NoGradGuard no_grad;
  log_dt.uniform_(std::log(dt_min), std::log(dt_max), gen);
  log_A_real.fill_(std::log(0.5));
  A_imag.copy_(std::numbers::pi * at::arange(M, at::kFloat).expand({H, M}));
  C.normal_(0.0, std::sqrt(0.5), gen);
}

at::Tensor DiagSsmImpl::complex_C(at::ScalarType dtype) const { return at::view_as_complex(C.to(dtype)); }

void DiagSsmImpl::discretize(at::ScalarType dtype, at::Tensor& dA, at::Tensor& dB) const {
  const at::Tensor A = at::complex(-at::exp(log_A_real.to(dtype)), A_imag.to(dtype));  // (H, M)
  const at::Tensor dt = at::exp(log_dt.to(dtype)).unsqueeze(1);                        // (H, 1)
  const at::Tensor dtA = A * dt;                                                       // (H, M)
  if (discretization_ == "zoh") {
    dA = at::exp(dtA);
    dB = (dA - 1.0) / A;
  } else {
    const at::Tensor denom = 1.0 - dtA * 0.5;
    dA = (1.0 + dtA * 0.5) / denom;
    dB = dt / denom;
  }
}

at::Tensor DiagSsmImpl::kernel(int64_t T, at::ScalarType dtype) const {
  at::Tensor dA, dB;
  discretize(dtype, dA, dB);
  const at::Tensor CB = complex_C(dtype) * dB;                                  // (H, M)
  const at::Tensor l = at::arange(T, at::TensorOptions().dtype(dtype).device(C.device()));  // (T)
  // Vandermonde: dA^l = exp(l log dA), (H, M, T); for ZOH log dA = dt A exactly.
  const at::Tensor pow = at::exp(at::log(dA).unsqueeze(-1) * l);
  return 2.0 * at::real(at::einsum("hm,hmt->th", {CB, pow}));  // (T, H)
}

at::Tensor DiagSsmImpl::decay(at::ScalarType dtype) const {
  at::Tensor dA, dB;
  discretize(dtype, dA, dB);
  return at::view_as_real(dA);  // (H, N/2, 2)
}

at::Tensor DiagSsmImpl::step(const at::Tensor& x_t, at::Tensor& h, at::Tensor& hist, int64_t window) const {
  const auto dtype = x_t.scalar_type();
  at::Tensor dA, dB;
  discretize(dtype, dA, dB);
  const int64_t extra = x_t.dim() - 2;  // trailing dims sharing a channel's SSM
  std::vector<int64_t> shape{channels_};
  for (int64_t i = 0; i < extra; ++i) shape.push_back(1);
  shape.push_back(modes_);
  dA = dA.view(shape);  // (H, 1.., M)
  dB = dB.view(shape);
  const at::Tensor Cc = complex_C(dtype).view(shape);
  at::Tensor hc = at::view_as_complex(h.to(dtype).contiguous());  // (B, H, ..., M)
  hc = dA * hc + dB * x_t.unsqueeze(-1);
  if (window > 0) {
    const at::Tensor oldest = hist.select(1, 0).to(dtype);  // x_{t-T}
    hc = hc - at::pow(dA, static_cast<double>(window)) * dB * oldest.unsqueeze(-1);
    hist = at::cat({hist.narrow(1, 1, window - 1).to(dtype), x_t.unsqueeze(1)}, 1);
  }
  h = at::view_as_real(hc).contiguous();
  return 2.0 * at::real((Cc * hc).sum(-1));  // (B, H, ...)
}

at::Tensor DiagSsmImpl::scan_segment(const at::Tensor& u, at::Tensor& h, at::Tensor& hist, int64_t window) const {
  const auto dtype = u.scalar_type();
  const int64_t B = u.size(0), L = u.size(1), H = channels_, M = modes_;
  SSMLAB_CHECK(u.dim() >= 3 && u.size(2) == H, "diagonal SSM: segment input must be (B, L, ", H, ", ...); got ",
               shape_str(u.sizes()));
  int64_t E = 1;  // trailing dims sharing a channel's SSM, flattened
  for (int64_t i = 3; i < u.dim(); ++i) E *= u.size(i);
  SSMLAB_CHECK(h.defined() && h.numel() == B * H * E * M * 2, "diagonal SSM: state of ", h.defined() ? h.numel() : 0,
               " numbers for a batch of ", B, "; expected ", B * H * E * M * 2, " (make it with init_state)");
  if (window > 0)
    SSMLAB_CHECK(hist.defined() && hist.numel() == B * window * H * E,
                 "diagonal SSM: window state must hold the last ", window, " inputs of a batch of ", B);
  if (L == 0) return u.clone();
  at::Tensor dA, dB;
  discretize(dtype, dA, dB);                                     // (H, M) complex
  const auto ropts = at::TensorOptions().dtype(dtype).device(u.device());
  const auto ctype = dA.scalar_type();
  // One set of powers dA^0 .. dA^n (n = L, or the window) serves the taps, the initial state's decay and the
  // final state's weights: the complex exp is the costly part.
  const int64_t n = window > 0 ? window : L;
  const at::Tensor pw = at::exp(at::log(dA).unsqueeze(-1) * at::arange(n + 1, ropts));  // (H, M, n + 1)
  const at::Tensor taps = 2.0 * at::real(at::einsum("hm,hml->lh", {complex_C(dtype) * dB, pw.narrow(-1, 0, n)}));
  const at::Tensor back = pw.narrow(-1, 0, n).flip(-1) * dB.unsqueeze(-1);  // (H, M, n): dA^(n-1-s) dB
  const at::Tensor uf = u.reshape({B, L, H, E});
  at::Tensor y, h_new;
  if (window <= 0) {
    y = fft_causal_conv(uf, taps.view({L, H, 1}));                                        // (B, L, H, E)
    const at::Tensor h0 = at::view_as_complex(h.to(dtype).reshape({B, H, E, M, 2}).contiguous());  // (B, H, E, M)
    const at::Tensor ahead = complex_C(dtype).unsqueeze(-1) * pw.narrow(-1, 1, L);       // (H, M, L): C dA^(t+1)
    y = y + 2.0 * at::real(at::einsum("hml,bhem->blhe", {ahead, h0}));
    h_new = pw.select(-1, L).unsqueeze(1) * h0 + at::einsum("hms,bshe->bhem", {back, uf.to(ctype)});  // (B, H, E, M)
  } else {
    const int64_t T = window;
    const at::Tensor full = at::cat({hist.to(dtype).reshape({B, T, H, E}), uf}, 1);       // (B, T + L, H, E)
    y = fft_causal_conv(full, taps.view({T, H, 1})).narrow(1, T, L);                      // (B, L, H, E)
    const at::Tensor last = full.narrow(1, L, T);                                          // the new window
    h_new = at::einsum("hms,bshe->bhem", {back, last.to(ctype)});                          // (B, H, E, M)
    std::vector<int64_t> hist_shape = u.sizes().vec();
    hist_shape[1] = T;
    hist = last.reshape(hist_shape);
  }
  h = at::view_as_real(h_new).reshape(h.sizes()).contiguous();  // step()'s layout (B, H, ..., M, 2)
  return y.reshape(u.sizes());
}

at::Tensor fft_causal_conv(const at::Tensor& u, const at::Tensor& k) {
  const int64_t L = u.size(1), T = k.size(0), n = L + T;
  const at::Tensor uf = at::fft_rfft(u, n, /*dim=*/1);               // (B, n/2+1, C...)
  const at::Tensor kf = at::fft_rfft(k.to(u.scalar_type()), n, 0);   // (n/2+1, C...)
  return at::fft_irfft(uf * kf, n, /*dim=*/1).narrow(1, 0, L);        // (B, L, C...)
}

}  // namespace ssmlab::mixers
