// The diagonal (S4D) SSM shared by the S4D and H3 mixers (spec §1.4, §1.5): per channel h, N/2 complex modes
//   A_n = -exp(log_A_real) + i A_imag   (S4D-Lin init: -1/2 + i pi n),  B = 1,  C complex,  dt = exp(log_dt)
//   ZOH:      dA = exp(dt A),                 dB = (exp(dt A) - 1) / A
//   bilinear: dA = (1 + dt A / 2) / (1 - dt A / 2),  dB = dt / (1 - dt A / 2)
//   h_t = dA h_{t-1} + dB x_t,  y_t = 2 Re(C . h_t);  as a convolution K_l = 2 Re sum_n C_n dB_n dA_n^l.
// A kernel truncated to T taps (l_max, as H3's MQAR config) is reproduced exactly in the recurrent form by
// subtracting the input that leaves the window: h_t = dA h_{t-1} + dB x_t - dA^T dB x_{t-T}.
#pragma once
#include <string>

#include <torch/nn/module.h>

namespace ssmlab::mixers {

class DiagSsmImpl : public torch::nn::Module {
 public:
  // channels H, d_state N (even: N/2 complex modes). discretization: "zoh" | "bilinear".
  DiagSsmImpl(int64_t channels, int64_t d_state, std::string discretization, double dt_min, double dt_max,
              at::Generator& gen);

  // The convolution kernel (T, H) in `dtype` (float32 or float64).
  at::Tensor kernel(int64_t T, at::ScalarType dtype) const;
  // One recurrent step for x_t (B, H, ...) (trailing dims share their channel's SSM). h: (B, H, ..., N/2, 2)
  // (complex as real pairs), updated in place. window > 0: the kernel is truncated to `window` taps and
  // hist (B, window, H, ...) holds the last `window` inputs (oldest first), updated in place.
  at::Tensor step(const at::Tensor& x_t, at::Tensor& h, at::Tensor& hist, int64_t window) const;
  // The same recurrence over a whole segment u (B, L, H, ...) continuing from step()'s h (and hist), which are
  // updated as L step() calls would: returns 2 Re(C . h_t) per position, (B, L, H, ...) in u's dtype. Not a time
  // loop: an FFT convolution of the segment with the first L (or `window`) taps, plus, without a window, the
  // initial state's contribution 2 Re(C dA^(t+1) h_0), and the final state in closed form
  //   h_L = dA^L h_0 + sum_s dA^(L-1-s) dB u_s;
  // with a window the previous `window` inputs (hist) are prepended instead (they are all a truncated kernel
  // sees) and h is rebuilt from the last `window` inputs. Memory O(B L H ... + H N L); differentiable.
  at::Tensor scan_segment(const at::Tensor& u, at::Tensor& h, at::Tensor& hist, int64_t window) const;

  // The per-step multiplier of the state, dA (H, N/2, 2) (complex as real pairs, the layout of step()'s h),
  // in `dtype` (float32 or float64).
  at::Tensor decay(at::ScalarType dtype) const;

  int64_t modes() const { return modes_; }

  at::Tensor log_dt;      // (H)
  at::Tensor log_A_real;  // (H, N/2)
  at::Tensor A_imag;      // (H, N/2)
  at::Tensor C;           // (H, N/2, 2): complex as real pairs

 private:
  // dA, dB * C and dB, each (H, N/2) complex in the complex type of `dtype`.
  void discretize(at::ScalarType dtype, at::Tensor& dA, at::Tensor& dB) const;
  at::Tensor complex_C(at::ScalarType dtype) const;

  int64_t channels_, modes_;
  std::string discretization_;
};

// Causal convolution of u (B, L, C...) with a kernel k (T, C...) (trailing dims broadcast), by FFT of size
// L + T: y_t = sum_{l < min(T, t + 1)} k_l u_{t - l}.
at::Tensor fft_causal_conv(const at::Tensor& u, const at::Tensor& k);

}  // namespace ssmlab::mixers
