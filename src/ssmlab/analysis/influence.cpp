#include "ssmlab/analysis/influence.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include "ssmlab/analysis/figures.h"
#include "ssmlab/core/error.h"

namespace ssmlab::analysis {
namespace {

// Target positions: the readout position for a classifier; else `k` positions evenly spaced over the second
// half [Lp/2, Lp-1], the last one included.
std::vector<int64_t> target_positions(const models::ModelImpl& model, int64_t Lp, int64_t k) {
  if (const int64_t r = model.readout_position(Lp); r >= 0) return {r};
  const int64_t lo = Lp / 2, hi = Lp - 1;
  k = std::max<int64_t>(1, std::min(k, hi - lo + 1));
  std::vector<int64_t> t;
  for (int64_t i = 0; i < k; ++i)
    t.push_back(k == 1 ? hi : hi - static_cast<int64_t>(std::llround(static_cast<double>(i * (hi - lo)) / (k - 1))));
  return t;
}

void fit_line(InfluenceCurve& c, int64_t from) {
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < c.distance.size(); ++i) {
    const double x = static_cast<double>(c.distance[i]), y = c.mean_log[i];
    if (c.distance[i] < from || !std::isfinite(y) || c.count[i] == 0) continue;
    n += 1, sx += x, sy += y, sxx += x * x, sxy += x * y;
  }
  const double den = n * sxx - sx * sx;
  if (n < 2 || den == 0) {
    c.slope = c.intercept = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  c.slope = (n * sxy - sx * sy) / den;
  c.intercept = (sy - c.slope * sx) / n;
}

}  // namespace

InfluenceCurve influence_curve(models::ModelImpl& model, const at::Tensor& inputs, const InfluenceOptions& opts,
                               uint64_t seed) {
  at::AutoGradMode grad_on(true);
  const at::Tensor h0 = model.embed(inputs).detach().requires_grad_(true);  // (n, L', D): the x_s
  const at::Tensor y = model.features(h0);                                 // (n, L', D): the y_t
  const int64_t n = y.size(0), Lp = y.size(1), D = y.size(2);
  const int64_t max_d = opts.max_distance > 0 ? std::min(opts.max_distance, Lp - 1) : Lp - 1;
  InfluenceCurve c;
  std::vector<double> sums(max_d + 1, 0.0);
  c.count.assign(max_d + 1, 0);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto targets = target_positions(model, Lp, opts.targets);
  for (const int64_t t : targets) {
    for (int64_t p = 0; p < opts.probes; ++p) {
      at::Tensor g = at::randn({n, D}, gen, at::TensorOptions().dtype(at::kDouble));  // (n, D)
      g = (g / g.norm(2, /*dim=*/{-1}, /*keepdim=*/true)).to(y.options());        // unit probes, one per sample
      const at::Tensor scalar = (y.select(1, t) * g).sum();  // Σ_b g_b · y_{b,t}: samples stay independent
      const at::Tensor grad =
          torch::autograd::grad({scalar}, {h0}, /*grad_outputs=*/{}, /*retain_graph=*/true)[0];  // (n, L', D)
      const at::Tensor logs = grad.narrow(1, 0, t + 1).to(at::kDouble).norm(2, {-1}).log().cpu();  // (n, t+1)
      const auto a = logs.accessor<double, 2>();
      for (int64_t s = std::max<int64_t>(0, t - max_d); s <= t; ++s) {
        for (int64_t b = 0; b < n; ++b) sums[t - s] += a[b][s];
        c.count[t - s] += n;
      }
    }
  }
  for (int64_t d = 0; d <= max_d; ++d) {
    c.distance.push_back(d);
    c.mean_log.push_back(c.count[d] > 0 ? sums[d] / static_cast<double>(c.count[d])
                                        : std::numeric_limits<double>::quiet_NaN());
  }
  fit_line(c, opts.fit_from);
  return c;
}

Result run_influence(const Context& ctx, const InfluenceOptions& opts) {
  const at::Tensor inputs = sample_inputs(ctx, opts.samples);
  const InfluenceCurve c = influence_curve(ctx.model, inputs, opts, ctx.seed);
  std::vector<std::vector<double>> rows;
  for (size_t i = 0; i < c.distance.size(); ++i)
    if (c.count[i] > 0) rows.push_back({static_cast<double>(c.distance[i]), c.mean_log[i]});
  Result r;
  r.files.push_back(write_csv(ctx.run_dir, "influence", {"distance", ctx.label}, rows));
  char caption[256];
  std::snprintf(caption, sizeof caption,
                "Mean ln ||d(g.y_t)/dx_s|| over %lld sequences, %lld probes per target; %s: slope %.4g per token "
                "(decay %.4g per token).",
                static_cast<long long>(inputs.size(0)), static_cast<long long>(opts.probes), ctx.label.c_str(),
                c.slope, std::exp(c.slope));
  r.files.push_back(write_spec(ctx.run_dir, "influence",
                               {{"kind", "line"},
                                {"title", "Influence of a token vs distance"},
                                {"xlabel", "distance t - s (positions)"},
                                {"ylabel", "mean ln ||dy_t / dx_s||"},
                                {"caption", caption}}));
  nlohmann::json curve = nlohmann::json::array();
  for (const auto& row : rows) curve.push_back({{"distance", row[0]}, {"mean_log", row[1]}});
  r.summary = {{"slope", c.slope},
               {"intercept", c.intercept},
               {"decay_per_token", std::exp(c.slope)},
               {"fit_from", opts.fit_from},
               {"samples", inputs.size(0)},
               {"probes", opts.probes},
               {"targets", opts.targets},
               {"curve", curve}};
  return r;
}

}  // namespace ssmlab::analysis
