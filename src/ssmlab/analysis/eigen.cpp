#include "ssmlab/analysis/eigen.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>

#include "ssmlab/analysis/figures.h"
#include "ssmlab/core/error.h"

namespace ssmlab::analysis {

LayerSpectrum matrix_spectrum(const at::Tensor& M, double zero_tol) {
  SSMLAB_CHECK(M.defined() && M.dim() == 2 && M.size(0) == M.size(1), "eigen: the input-output matrix must be "
               "square (E, E); got ", M.defined() ? shape_str(M.sizes()) : "undefined");
  const at::Tensor m = M.detach().to(at::kCPU, at::kDouble);
  LayerSpectrum s;
  // Symmetric up to the rounding of M's own dtype (U^T diag(d) U formed in float32 is symmetric only to ~1e-7).
  const double eps = M.scalar_type() == at::kDouble ? std::numeric_limits<double>::epsilon()
                                                    : static_cast<double>(std::numeric_limits<float>::epsilon());
  const double scale = m.numel() ? m.abs().max().item<double>() : 0.0;
  s.symmetric = m.numel() == 0 || (m - m.t()).abs().max().item<double>() <= 64.0 * eps * scale * std::sqrt(
                                                                                static_cast<double>(m.size(0)));
  at::Tensor re, im;
  if (s.symmetric) {
    re = at::linalg_eigvalsh(0.5 * (m + m.t()));
    im = at::zeros_like(re);
  } else {
    const at::Tensor ev = at::linalg_eigvals(m);  // complex
    re = at::real(ev).contiguous();
    im = at::imag(ev).contiguous();
  }
  const at::Tensor mag = at::sqrt(re * re + im * im);
  const double biggest = mag.numel() ? mag.max().item<double>() : 0.0;
  // A matrix held in float32 resolves eigenvalues only to ~E·eps_32 of the largest: below that they are zeros.
  const double resolution = 16.0 * eps * static_cast<double>(m.size(0));
  const double cut = std::max(zero_tol, resolution) * biggest;
  const auto r = re.accessor<double, 1>(), i = im.accessor<double, 1>(), a = mag.accessor<double, 1>();
  for (int64_t k = 0; k < re.size(0); ++k) {
    if (biggest == 0.0 || a[k] <= cut) {
      ++s.zero;
      continue;
    }
    s.eigenvalues.push_back(r[k]);
    s.max_abs_imag = std::max(s.max_abs_imag, std::abs(i[k]));
    if (r[k] > 0) ++s.positive;
    else ++s.negative;  // a purely imaginary pair (re exactly 0) counts as not positive
  }
  std::sort(s.eigenvalues.begin(), s.eigenvalues.end());
  if (!s.eigenvalues.empty()) {
    s.min = s.eigenvalues.front();
    s.max = s.eigenvalues.back();
  }
  if (s.positive + s.negative > 0)
    s.fraction_positive = static_cast<double>(s.positive) / static_cast<double>(s.positive + s.negative);
  return s;
}

std::vector<LayerSpectrum> eigen_spectra(models::ModelImpl& model, double zero_tol) {
  at::NoGradGuard no_grad;
  std::vector<LayerSpectrum> out;
  std::string kinds;
  for (int64_t l = 0; l < model.num_layers(); ++l) {
    auto& mixer = model.blocks[static_cast<size_t>(l)]->mixer;
    const std::optional<at::Tensor> M = mixer->input_output_matrix();
    if (!M) {
      if (kinds.find(mixer->kind()) == std::string::npos) kinds += (kinds.empty() ? "" : ", ") + mixer->kind();
      continue;
    }
    LayerSpectrum s = matrix_spectrum(*M, zero_tol);
    s.layer = l;
    out.push_back(std::move(s));
  }
  SSMLAB_CHECK(!out.empty(), "eigen: no layer of this model has an input-output matrix S_C^T S_B (mixers: ",
               kinds.empty() ? "none" : kinds, "); it is defined for mamba1");
  return out;
}

Result run_eigen(const Context& ctx, const EigenOptions& opts) {
  const auto spectra = eigen_spectra(ctx.model, opts.zero_tol);
  Result r;
  std::vector<std::vector<double>> range_rows, fraction_rows;
  size_t longest = 0;
  for (const auto& s : spectra) {
    range_rows.push_back({static_cast<double>(s.layer), s.min, s.max});
    fraction_rows.push_back({static_cast<double>(s.layer), s.fraction_positive});
    longest = std::max(longest, s.eigenvalues.size());
  }
  const std::string layer_axis = "layer (block index)";
  r.files.push_back(write_csv(ctx.run_dir, "eigen", {"layer", "min eigenvalue", "max eigenvalue"}, range_rows));
  r.files.push_back(write_spec(ctx.run_dir, "eigen",
                               {{"kind", "layers"},
                                {"title", "Eigenvalues of S_C^T S_B per layer"},
                                {"xlabel", layer_axis},
                                {"ylabel", "eigenvalue (real part)"},
                                {"caption", "Smallest and largest nonzero eigenvalue of each layer's input-output "
                                            "matrix (spec §4.1: all negative -> tokens converge to 0; a positive "
                                            "one -> they diverge). " + ctx.label}}));
  r.files.push_back(write_csv(ctx.run_dir, "eigen_fraction", {"layer", "fraction positive"}, fraction_rows));
  r.files.push_back(write_spec(ctx.run_dir, "eigen_fraction",
                               {{"kind", "layers"},
                                {"title", "Fraction of positive eigenvalues of S_C^T S_B"},
                                {"xlabel", layer_axis},
                                {"ylabel", "positive / nonzero eigenvalues"},
                                {"ymin", 0.0},
                                {"ymax", 1.0},
                                {"caption", "Per layer, the share of its nonzero eigenvalues that are positive. " +
                                                ctx.label}}));
  std::vector<std::string> header = {"rank"};
  for (const auto& s : spectra) header.push_back("layer " + std::to_string(s.layer));
  std::vector<std::vector<double>> sorted_rows;
  for (size_t k = 0; k < longest; ++k) {
    std::vector<double> row = {static_cast<double>(k)};
    for (const auto& s : spectra)
      row.push_back(k < s.eigenvalues.size() ? s.eigenvalues[k] : std::numeric_limits<double>::quiet_NaN());
    sorted_rows.push_back(std::move(row));
  }
  if (longest > 0) {
    r.files.push_back(write_csv(ctx.run_dir, "eigen_spectrum", header, sorted_rows));
    r.files.push_back(write_spec(ctx.run_dir, "eigen_spectrum",
                                 {{"kind", "line"},
                                  {"title", "Nonzero eigenvalues of S_C^T S_B, ascending"},
                                  {"xlabel", "rank (ascending)"},
                                  {"ylabel", "eigenvalue (real part)"},
                                  {"caption", "Each layer's nonzero eigenvalues in ascending order. " + ctx.label}}));
  }
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& s : spectra)
    layers.push_back({{"layer", s.layer},
                      {"min", s.min},
                      {"max", s.max},
                      {"positive", s.positive},
                      {"negative", s.negative},
                      {"zero", s.zero},
                      {"fraction_positive", s.fraction_positive},
                      {"symmetric", s.symmetric},
                      {"max_abs_imag", s.max_abs_imag},
                      {"eigenvalues", s.eigenvalues}});
  r.summary = {{"zero_tol", opts.zero_tol}, {"layers", layers}};
  return r;
}

}  // namespace ssmlab::analysis
