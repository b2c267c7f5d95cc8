#include "ssmlab/analysis/smoothing.h"

#include <ATen/ATen.h>

#include "ssmlab/analysis/figures.h"
#include "ssmlab/core/error.h"

namespace ssmlab::analysis {

at::Tensor pairwise_sharpness(const at::Tensor& F, bool normalised) {
  SSMLAB_CHECK(F.defined() && F.dim() == 3, "pairwise_sharpness: expected F (n, T, D); got ",
               F.defined() ? shape_str(F.sizes()) : "undefined");
  const at::Tensor f = F.detach().to(at::kDouble);  // (n, T, D)
  // Direct differences (no |a|^2 + |b|^2 - 2ab expansion), so identical rows give exactly 0.
  const at::Tensor dist = at::cdist(f, f, /*p=*/2.0, /*compute_mode=*/2);  // (n, T, T)
  at::Tensor sharp = dist.mean({1, 2});                                     // (n)
  if (normalised) sharp = sharp / f.norm(2, {-1}).mean({-1});
  return sharp.cpu();
}

SmoothingLayers smoothing_layers(models::ModelImpl& model, const at::Tensor& inputs) {
  at::NoGradGuard no_grad;
  Trace trace({"mixer_out", "block_out"});
  const at::Tensor h0 = model.embed(inputs);  // (n, L', D)
  model.features(h0, &trace);
  SmoothingLayers s;
  auto push = [&](const at::Tensor& mixer_out, const at::Tensor& block_out) {
    s.mixer_out.push_back(pairwise_sharpness(mixer_out, false).mean().item<double>());
    s.block_out.push_back(pairwise_sharpness(block_out, false).mean().item<double>());
    s.mixer_out_normalised.push_back(pairwise_sharpness(mixer_out, true).mean().item<double>());
    s.block_out_normalised.push_back(pairwise_sharpness(block_out, true).mean().item<double>());
  };
  push(h0, h0);
  for (int64_t l = 0; l < model.num_layers(); ++l) {
    SSMLAB_CHECK(trace.has("mixer_out", l) && trace.has("block_out", l), "smoothing: layer ", l,
                 " recorded no 'mixer_out' / 'block_out' (docs/GLOSSARY.md: every block records both)");
    push(trace.get("mixer_out", l), trace.get("block_out", l));
  }
  return s;
}

Result run_smoothing(const Context& ctx, const SmoothingOptions& opts) {
  const at::Tensor inputs = sample_inputs(ctx, opts.samples);
  const SmoothingLayers s = smoothing_layers(ctx.model, inputs);
  std::vector<std::vector<double>> raw, norm;
  for (size_t i = 0; i < s.block_out.size(); ++i) {
    raw.push_back({static_cast<double>(i), s.mixer_out[i], s.block_out[i]});
    norm.push_back({static_cast<double>(i), s.mixer_out_normalised[i], s.block_out_normalised[i]});
  }
  Result r;
  const std::string by_layer = "layer (0 = input embeddings, l = after block l)";
  r.files.push_back(write_csv(ctx.run_dir, "smoothing", {"layer", "mixer_out", "block_out"}, raw));
  r.files.push_back(write_spec(ctx.run_dir, "smoothing",
                               {{"kind", "layers"},
                                {"title", "Over-smoothing: mean pairwise token distance"},
                                {"xlabel", by_layer},
                                {"ylabel", "(1/T^2) sum_{t,s} ||F_t - F_s||"},
                                {"caption", "Mixer outputs and block outputs (the residual stream) per layer, "
                                            "averaged over test sequences (spec §2.7)."}}));
  r.files.push_back(
      write_csv(ctx.run_dir, "smoothing_normalised", {"layer", "mixer_out", "block_out"}, norm));
  r.files.push_back(write_spec(ctx.run_dir, "smoothing_normalised",
                               {{"kind", "layers"},
                                {"title", "Over-smoothing, normalised by the mean token norm"},
                                {"xlabel", by_layer},
                                {"ylabel", "mean pairwise distance / mean ||F_t||"},
                                {"caption", "As above, divided by each sequence's mean token norm, which removes "
                                            "the growth of the residual stream's scale."}}));
  auto list = [](const std::vector<double>& v) { return nlohmann::json(v); };
  r.summary = {{"samples", inputs.size(0)},
               {"mixer_out", list(s.mixer_out)},
               {"block_out", list(s.block_out)},
               {"mixer_out_normalised", list(s.mixer_out_normalised)},
               {"block_out_normalised", list(s.block_out_normalised)}};
  return r;
}

}  // namespace ssmlab::analysis
