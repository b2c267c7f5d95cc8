#include "ssmlab/analysis/trajectories.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include <ATen/ATen.h>

#include "ssmlab/analysis/figures.h"
#include "ssmlab/analysis/smoothing.h"
#include "ssmlab/core/error.h"

namespace ssmlab::analysis {
namespace {

// Least-squares slope of ln(y) vs x = 0, 1, ...; zero norms are floored at the smallest positive double.
double log_slope(const std::vector<double>& y) {
  const double n = static_cast<double>(y.size());
  if (y.size() < 2) return 0.0;
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double x = static_cast<double>(i);
    const double ly = std::log(std::max(y[i], std::numeric_limits<double>::min()));
    sx += x, sy += ly, sxx += x * x, sxy += x * ly;
  }
  return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}

std::vector<double> to_vector(const at::Tensor& t) {  // (k) float64 CPU
  const at::Tensor c = t.contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// Mean over sequences of ||F_t|| per position: (n, L', D) -> L' values.
std::vector<double> position_norms(const at::Tensor& F) {
  return to_vector(F.detach().to(at::kCPU, at::kDouble).norm(2, {-1}).mean({0}));
}

}  // namespace

Trajectories token_trajectories(const std::vector<at::Tensor>& blocks, const std::vector<at::Tensor>& mixers,
                                const TrajectoryOptions& opts) {
  SSMLAB_CHECK(!blocks.empty(), "trajectories: no representations (the embeddings at least are needed)");
  SSMLAB_CHECK(opts.buckets >= 1, "trajectories: buckets must be >= 1; got ", opts.buckets);
  for (const auto* list : {&blocks, &mixers})
    for (const auto& F : *list)
      SSMLAB_CHECK(F.defined() && F.dim() == 3 && F.size(0) == blocks[0].size(0) && F.size(1) == blocks[0].size(1),
                   "trajectories: every representation must be (n, L', D) with the embeddings' n and L' ",
                   shape_str(blocks[0].sizes()), "; got ", F.defined() ? shape_str(F.sizes()) : "undefined");
  Trajectories t;
  t.positions = blocks[0].size(1);
  for (const auto& F : blocks) {
    t.norm.push_back(position_norms(F));
    t.distance.push_back(pairwise_sharpness(F, /*normalised=*/false).mean().item<double>());
    double m = 0;
    for (double v : t.norm.back()) m += v;
    t.mean_norm.push_back(m / static_cast<double>(t.positions));
  }
  for (const auto& F : mixers) {
    t.mixer_norm.push_back(position_norms(F));
    t.mixer_distance.push_back(pairwise_sharpness(F, false).mean().item<double>());
  }
  const int64_t nb = std::min<int64_t>(opts.buckets, t.positions);
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t lo = b * t.positions / nb, hi = (b + 1) * t.positions / nb;
    t.bucket_begin.push_back(lo);
    t.bucket_end.push_back(hi);
    std::vector<double> per_layer;
    for (const auto& row : t.norm) {
      double m = 0;
      for (int64_t p = lo; p < hi; ++p) m += row[static_cast<size_t>(p)];
      per_layer.push_back(m / static_cast<double>(hi - lo));
    }
    t.bucket_rate.push_back(log_slope(per_layer));
    t.bucket_norm.push_back(std::move(per_layer));
  }
  for (int64_t p = 0; p < t.positions; ++p) {
    std::vector<double> per_layer;
    for (const auto& row : t.norm) per_layer.push_back(row[static_cast<size_t>(p)]);
    t.position_rate.push_back(log_slope(per_layer));
  }
  t.rate = log_slope(t.mean_norm);
  t.verdict = t.rate > opts.neutral_rate ? "diverge" : t.rate < -opts.neutral_rate ? "converge" : "neutral";
  return t;
}

Trajectories trajectory_layers(models::ModelImpl& model, const at::Tensor& inputs, const TrajectoryOptions& opts) {
  at::NoGradGuard no_grad;
  Trace trace({"mixer_out", "block_out"});
  const at::Tensor h0 = model.embed(inputs);  // (n, L', D)
  model.features(h0, &trace);
  std::vector<at::Tensor> blocks = {h0}, mixers;
  for (int64_t l = 0; trace.has("block_out", l); ++l) {
    blocks.push_back(trace.get("block_out", l));
    if (trace.has("mixer_out", l)) mixers.push_back(trace.get("mixer_out", l));
  }
  SSMLAB_CHECK(static_cast<int64_t>(blocks.size()) - 1 >= model.num_layers(), "trajectories: the model has ",
               model.num_layers(), " blocks but recorded 'block_out' for ", blocks.size() - 1,
               " (docs/GLOSSARY.md: every block records it)");
  if (mixers.size() + 1 != blocks.size()) mixers.clear();  // a layer without mixer_out: leave the mixer figure out
  return token_trajectories(blocks, mixers, opts);
}

Result run_trajectories(const Context& ctx, const TrajectoryOptions& opts) {
  const at::Tensor inputs = sample_inputs(ctx, opts.samples);
  const Trajectories t = trajectory_layers(ctx.model, inputs, opts);
  const size_t layers = t.norm.size();
  auto bucket_name = [&](size_t b) {
    return "positions " + std::to_string(t.bucket_begin[b]) + "-" + std::to_string(t.bucket_end[b] - 1);
  };
  Result r;
  const std::string by_layer = "layer (0 = input embeddings, l = after block l)";
  std::vector<std::string> header = {"layer"};
  for (size_t b = 0; b < t.bucket_norm.size(); ++b) header.push_back(bucket_name(b));
  std::vector<std::vector<double>> rows;
  for (size_t l = 0; l < layers; ++l) {
    std::vector<double> row = {static_cast<double>(l)};
    for (const auto& bn : t.bucket_norm) row.push_back(bn[l]);
    rows.push_back(std::move(row));
  }
  char caption[320];
  std::snprintf(caption, sizeof caption,
                "Mean token norm of the residual stream per layer over %lld sequences, by position bucket; %s: "
                "ln-norm slope %.4g per layer (%s).",
                static_cast<long long>(inputs.size(0)), ctx.label.c_str(), t.rate, t.verdict.c_str());
  r.files.push_back(write_csv(ctx.run_dir, "trajectories_norm", header, rows));
  r.files.push_back(write_spec(ctx.run_dir, "trajectories_norm",
                               {{"kind", "layers"},
                                {"title", "Token norms through depth"},
                                {"xlabel", by_layer},
                                {"ylabel", "mean ||x_t|| (block_out)"},
                                {"logy", true},
                                {"caption", caption}}));
  if (!t.mixer_norm.empty()) {
    std::vector<std::vector<double>> mrows;
    for (size_t l = 0; l < t.mixer_norm.size(); ++l) {
      std::vector<double> row = {static_cast<double>(l + 1)};
      for (size_t b = 0; b < t.bucket_begin.size(); ++b) {
        double m = 0;
        for (int64_t p = t.bucket_begin[b]; p < t.bucket_end[b]; ++p) m += t.mixer_norm[l][static_cast<size_t>(p)];
        row.push_back(m / static_cast<double>(t.bucket_end[b] - t.bucket_begin[b]));
      }
      mrows.push_back(std::move(row));
    }
    r.files.push_back(write_csv(ctx.run_dir, "trajectories_mixer_norm", header, mrows));
    r.files.push_back(write_spec(ctx.run_dir, "trajectories_mixer_norm",
                                 {{"kind", "layers"},
                                  {"title", "Mixer output norms through depth"},
                                  {"xlabel", "layer (l = block l's mixer)"},
                                  {"ylabel", "mean ||mixer_out_t||"},
                                  {"caption", "The mixer's output before the residual add, by position bucket. " +
                                                  ctx.label}}));
  }
  std::vector<std::vector<double>> drows;
  for (size_t l = 0; l < layers; ++l)
    drows.push_back({static_cast<double>(l), t.distance[l],
                     l >= 1 && l - 1 < t.mixer_distance.size() ? t.mixer_distance[l - 1]
                                                                : std::numeric_limits<double>::quiet_NaN()});
  r.files.push_back(write_csv(ctx.run_dir, "trajectories_distance", {"layer", "block_out", "mixer_out"}, drows));
  r.files.push_back(write_spec(ctx.run_dir, "trajectories_distance",
                               {{"kind", "layers"},
                                {"title", "Mean pairwise token distance through depth"},
                                {"xlabel", by_layer},
                                {"ylabel", "(1/T^2) sum_{t,s} ||x_t - x_s||"},
                                {"caption", "Tokens that converge to 0 also converge to each other; diverging "
                                            "tokens spread apart. " + ctx.label}}));
  std::vector<std::vector<double>> prows;
  for (int64_t p = 0; p < t.positions; ++p)
    prows.push_back({static_cast<double>(p), t.position_rate[static_cast<size_t>(p)]});
  r.files.push_back(write_csv(ctx.run_dir, "trajectories_rate", {"position", ctx.label}, prows));
  r.files.push_back(write_spec(ctx.run_dir, "trajectories_rate",
                               {{"kind", "line"},
                                {"title", "Convergence (< 0) or divergence (> 0) rate by position"},
                                {"xlabel", "position"},
                                {"ylabel", "slope of ln ||x_t|| per layer"},
                                {"caption", "Least-squares slope of each position's ln mean norm against the layer "
                                            "index (spec §4.1: divergent tokens diverge at different rates)."}}));
  nlohmann::json buckets = nlohmann::json::array();
  for (size_t b = 0; b < t.bucket_begin.size(); ++b)
    buckets.push_back({{"begin", t.bucket_begin[b]},
                       {"end", t.bucket_end[b]},
                       {"rate", t.bucket_rate[b]},
                       {"norm", t.bucket_norm[b]}});
  r.summary = {{"samples", inputs.size(0)},
               {"positions", t.positions},
               {"rate", t.rate},
               {"verdict", t.verdict},
               {"neutral_rate", opts.neutral_rate},
               {"mean_norm", t.mean_norm},
               {"distance", t.distance},
               {"mixer_distance", t.mixer_distance},
               {"buckets", buckets},
               {"position_rate", t.position_rate}};
  return r;
}

}  // namespace ssmlab::analysis
