// Recency attacks on a trained sequence classifier (spec §2.4-2.5, the recency paper's attack table and
// Figure 3; SB attack/adv_attack.py, attack/tgt_attack.py). The model is not retrained: its test images are
// corrupted and it is evaluated again.
//
// Noise attack (§2.4): the leading pixels [0, k) or the trailing ones [L - k, L) of every test image (all
// channels) are replaced by i.i.d. N(0, 1) (randn), set to 0 (zeros) or get N(0, 1) added (addrandn); values
// outside [0, 1] are kept. The noise is drawn once per attacked test set (one draw per region, k and mode, from
// the analysis seed). Metric: accuracy per set, and the drop from the clean accuracy (in points).
//
// Target attack (§2.5): for a target label c and k rows of a region (leading rows [0, k), trailing rows
// [H - k, H), middle rows [H/2 - floor(k/2), H/2 - floor(k/2) + k)), every test image whose label is not c gets
// that region copied (all channels) from a donor image of class c drawn uniformly with replacement, and the label
// c; only those images are kept. Metric: the fraction classified as c (the attack's success rate; lower = more
// robust), per target label and its mean over labels.
//
// The image geometry: inputs (M, L, C) with L = H W pixels in raster order (tasks/seqimage.h); W is the
// `row_width` option, or sqrt(L) when L is a perfect square (square images).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/core/fields.h"

namespace ssmlab::analysis {

struct AttackOptions {
  std::string noise_pixels = "32,96";           // k values of the noise attack (pixels)
  std::string noise_regions = "leading,trailing";
  std::string noise_modes = "randn";            // randn, zeros, addrandn (comma-separated)
  std::string target_rows = "8,15";             // k values of the target attack (rows); "" = no target attack
  std::string target_regions = "leading,middle,trailing";
  std::string target_labels;                    // "" = every class; else comma-separated labels
  int64_t row_width = 0;                        // pixels per image row; 0 = sqrt(L) (square images)
  int64_t samples = 0;                          // test images used; 0 = the whole test split
  int64_t batch_size = 256;                     // evaluation batch

  template <class V>
  void visit(V& v) {
    v("noise_pixels", noise_pixels,
      "noise attack: corrupted pixels k, comma-separated (the paper: 32,96 = one and three rows of 32); "
      "\"\" = no noise attack");
    v("noise_regions", noise_regions, "noise attack regions, comma-separated: leading, trailing");
    v("noise_modes", noise_modes, "noise modes, comma-separated: randn (the paper's), zeros, addrandn");
    v("target_rows", target_rows,
      "target attack: replaced rows k, comma-separated (the paper: 8,15 of 32 rows); \"\" = no target attack");
    v("target_regions", target_regions, "target attack regions, comma-separated: leading, middle, trailing");
    v("target_labels", target_labels, "target labels, comma-separated; \"\" = every class");
    v("row_width", row_width, "pixels per image row; 0 = sqrt(sequence length) (square images)",
      Check::at_least(0));
    v("samples", samples, "test images used (the first of the test split); 0 = all", Check::at_least(0));
    v("batch_size", batch_size, "evaluation batch size", Check::at_least(1));
  }
};

enum class NoiseMode { randn, zeros, addrandn };
NoiseMode parse_noise_mode(const std::string& name);  // throws naming the modes
const char* noise_mode_name(NoiseMode m);

// A half-open range of pixel positions [begin, end).
struct PixelRange {
  int64_t begin = 0, end = 0;
};

// Noise attack pixels: leading [0, k), trailing [L - k, L). Throws unless 1 <= k <= L and region is one of them.
PixelRange noise_range(const std::string& region, int64_t k, int64_t L);

// Target attack rows of an H x W image as pixels: leading rows [0, k), trailing [H - k, H), middle
// [H/2 - floor(k/2), H/2 - floor(k/2) + k). Throws unless 1 <= k <= H.
PixelRange row_range(const std::string& region, int64_t rows, int64_t H, int64_t W);

// A copy of `inputs` (M, L, C) with pixels [r.begin, r.end) corrupted per `mode`; the noise (M, end - begin, C)
// comes from `gen` (CPU) in one draw.
at::Tensor noise_attack(const at::Tensor& inputs, PixelRange r, NoiseMode mode, at::Generator& gen);

struct TargetSet {
  at::Tensor inputs;  // (M', L, C): the images whose label is not `target`, the region taken from a donor
  at::Tensor labels;  // (M') all `target`
  at::Tensor source;  // (M') int64 index into the original set of each kept image
  at::Tensor donor;   // (M') int64 index into the original set of its donor (label `target`)
};

// The target-attack set for label `target` (spec §2.5). Throws when no image has label `target`.
TargetSet target_attack_set(const at::Tensor& inputs, const at::Tensor& labels, int64_t target, PixelRange r,
                            at::Generator& gen);

// Fraction of `inputs` (on any device) that `model` classifies as `labels`, in batches.
double classifier_accuracy(models::ModelImpl& model, const at::Tensor& inputs, const at::Tensor& labels,
                           int64_t batch_size, c10::Device device);

// The analysis: figures/attack_noise.*, attack_target.*, attack_target_labels.*, analysis/attack.json (with the
// paper's reference values beside ours under "paper"). Needs a per-sequence task with feature inputs.
Result run_attack(const Context& ctx, const AttackOptions& opts);

}  // namespace ssmlab::analysis
