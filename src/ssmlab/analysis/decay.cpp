#include "ssmlab/analysis/decay.h"

#include <cstdio>

#include <ATen/ATen.h>

#include "ssmlab/analysis/figures.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/log.h"

namespace ssmlab::analysis {

bool decay_is_per_position(const at::Tensor& decay, int64_t batch, int64_t length) {
  return decay.dim() >= 3 && decay.size(0) == batch && decay.size(1) == length;
}

void DecayRange::update(const at::Tensor& decay, bool per_position) {
  const at::Tensor d = decay.detach().to(at::kCPU, at::kDouble);
  at::Tensor hi, lo;
  if (per_position) {
    const at::Tensor flat = d.flatten(0, 1);  // (B L, channels...)
    hi = std::get<0>(flat.max(0));
    lo = std::get<0>(flat.min(0));
  } else {
    time_invariant = true;
    hi = d;
    lo = d;
  }
  if (!max.defined()) {
    max = hi;
    min = lo;
    return;
  }
  SSMLAB_CHECK(max.sizes() == hi.sizes(), "decay_diversity: the decay's channel shape changed from ",
               shape_str(max.sizes()), " to ", shape_str(hi.sizes()));
  max = at::maximum(max, hi);
  min = at::minimum(min, lo);
}

at::Tensor DecayRange::spread() const {
  SSMLAB_CHECK(max.defined(), "decay_diversity: no decay recorded");
  return (max - min).flatten();
}

std::vector<at::Tensor> decay_spreads(models::ModelImpl& model, const at::Tensor& inputs, int64_t batch_size) {
  at::NoGradGuard no_grad;
  std::vector<DecayRange> ranges(static_cast<size_t>(model.num_layers()));
  for (int64_t b = 0; b < inputs.size(0); b += batch_size) {
    const int64_t m = std::min(batch_size, inputs.size(0) - b);
    const at::Tensor x = inputs.narrow(0, b, m);
    Trace trace({"decay"});
    const at::Tensor h0 = model.embed(x);  // (m, L', D)
    model.features(h0, &trace);
    for (int64_t l = 0; l < model.num_layers(); ++l)
      if (trace.has("decay", l)) {
        const at::Tensor& d = trace.get("decay", l);
        ranges[static_cast<size_t>(l)].update(d, decay_is_per_position(d, m, h0.size(1)));
      }
  }
  std::vector<at::Tensor> out;
  for (const auto& r : ranges) out.push_back(r.max.defined() ? r.spread() : at::Tensor());
  return out;
}

Result run_decay_diversity(const Context& ctx, const DecayOptions& opts) {
  const at::Tensor inputs = sample_inputs(ctx, opts.samples);
  const std::vector<at::Tensor> spreads = decay_spreads(ctx.model, inputs, opts.batch_size);
  std::vector<std::string> header;
  std::vector<at::Tensor> columns;
  nlohmann::json layers = nlohmann::json::array();
  int64_t below = 0, total = 0;
  for (size_t l = 0; l < spreads.size(); ++l) {
    if (!spreads[l].defined()) continue;
    const at::Tensor s = spreads[l];
    const int64_t n = s.numel(), nb = (s < opts.threshold).sum().item<int64_t>();
    below += nb;
    total += n;
    header.push_back("layer " + std::to_string(l));
    columns.push_back(s);
    layers.push_back({{"layer", l},
                      {"channels", n},
                      {"fraction_below_threshold", static_cast<double>(nb) / static_cast<double>(n)},
                      {"median", s.median().item<double>()},
                      {"mean", s.mean().item<double>()},
                      {"max", s.max().item<double>()}});
  }
  Result r;
  if (columns.empty()) {  // attention: nothing decays; a sweep over mixers runs the analysis on every model
    log::warn("decay_diversity: no layer of this model records a 'decay' (docs/GLOSSARY.md: attention has none); "
              "nothing to measure");
    r.summary = {{"samples", inputs.size(0)}, {"applicable", false},
                 {"reason", "no layer records a 'decay' (a mixer without a recurrence, e.g. attention)"}};
    return r;
  }
  // One CSV column per layer, padded with NaN (missing) to the longest.
  int64_t longest = 0;
  for (const auto& c : columns) longest = std::max(longest, c.numel());
  std::vector<std::vector<double>> rows(static_cast<size_t>(longest), std::vector<double>(columns.size(), NAN));
  for (size_t c = 0; c < columns.size(); ++c) {
    const auto acc = columns[c].accessor<double, 1>();
    for (int64_t i = 0; i < columns[c].numel(); ++i) rows[static_cast<size_t>(i)][c] = acc[i];
  }
  r.files.push_back(write_csv(ctx.run_dir, "decay_diversity", header, rows));
  r.files.push_back(write_spec(
      ctx.run_dir, "decay_diversity",
      {{"kind", "cdf"},
       {"title", "Decay diversity: CDF of A_max - A_min across channels"},
       {"xlabel", "A_max - A_min of a (channel, state) over the tokens"},
       {"ylabel", "fraction of channels"},
       {"xmin", 0.0},
       {"xmax", 1.0},
       {"caption", "For every (channel, state) of every layer, the spread of the per-token decay over the test "
                   "sequences (spec §2.7). The paper: in a trained Mamba more than 60% of channels spread less than "
                   "0.5; a time-invariant decay spreads 0."}}));
  const double fraction = static_cast<double>(below) / static_cast<double>(total);
  char cut[32];
  std::snprintf(cut, sizeof cut, "%g", opts.threshold);
  r.summary = {{"samples", inputs.size(0)},
               {"applicable", true},
               {"threshold", opts.threshold},
               {"channels", total},
               {"fraction_below_threshold", fraction},
               {"layers", layers},
               {"paper", nlohmann::json::array({paper_row(
                             std::string("fraction of (channel, state) with A_max - A_min < ") + cut,
                             "> 0.6 (trained Mamba)", fraction, "recency paper §2.7 (ICLR blog), CDF figure")})}};
  return r;
}

}  // namespace ssmlab::analysis
