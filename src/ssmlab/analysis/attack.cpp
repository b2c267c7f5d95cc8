#include "ssmlab/analysis/attack.h"

#include <cmath>
#include <map>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "ssmlab/analysis/figures.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/log.h"

namespace ssmlab::analysis {

NoiseMode parse_noise_mode(const std::string& name) {
  if (name == "randn") return NoiseMode::randn;
  if (name == "zeros") return NoiseMode::zeros;
  if (name == "addrandn") return NoiseMode::addrandn;
  fail_config("unknown noise mode '", name, "' (expected randn, zeros or addrandn)");
}

const char* noise_mode_name(NoiseMode m) {
  switch (m) {
    case NoiseMode::randn: return "randn";
    case NoiseMode::zeros: return "zeros";
    case NoiseMode::addrandn: return "addrandn";
  }
  return "?";
}

PixelRange noise_range(const std::string& region, int64_t k, int64_t L) {
  if (k < 1 || k > L) fail_config("noise attack: ", k, " pixels of a ", L, "-pixel image (expected 1..", L, ")");
  if (region == "leading") return {0, k};
  if (region == "trailing") return {L - k, L};
  fail_config("noise attack: unknown region '", region, "' (expected leading or trailing)");
}

PixelRange row_range(const std::string& region, int64_t rows, int64_t H, int64_t W) {
  if (rows < 1 || rows > H) fail_config("target attack: ", rows, " rows of a ", H, "-row image (expected 1..", H, ")");
  int64_t first = 0;
  if (region == "leading") first = 0;
  else if (region == "trailing") first = H - rows;
  else if (region == "middle") first = H / 2 - rows / 2;
  else fail_config("target attack: unknown region '", region, "' (expected leading, middle or trailing)");
  return {first * W, (first + rows) * W};
}

at::Tensor noise_attack(const at::Tensor& inputs, PixelRange r, NoiseMode mode, at::Generator& gen) {
  SSMLAB_CHECK(inputs.dim() == 3, "noise_attack: expected inputs (M, L, C); got ", shape_str(inputs.sizes()));
  SSMLAB_CHECK(0 <= r.begin && r.begin < r.end && r.end <= inputs.size(1), "noise_attack: pixels [", r.begin, ", ",
               r.end, ") outside a ", inputs.size(1), "-pixel image");
  at::Tensor out = inputs.clone();
  at::Tensor region = out.narrow(1, r.begin, r.end - r.begin);  // (M, k, C), a view into out
  if (mode == NoiseMode::zeros) {
    region.zero_();
    return out;
  }
  const at::Tensor noise =
      at::randn({inputs.size(0), r.end - r.begin, inputs.size(2)}, gen, at::TensorOptions().dtype(at::kFloat))
          .to(out.device(), out.scalar_type());
  if (mode == NoiseMode::randn) region.copy_(noise);
  else region.add_(noise);
  return out;
}

TargetSet target_attack_set(const at::Tensor& inputs, const at::Tensor& labels, int64_t target, PixelRange r,
                            at::Generator& gen) {
  SSMLAB_CHECK(inputs.dim() == 3 && labels.dim() == 1 && labels.size(0) == inputs.size(0),
               "target_attack_set: expected inputs (M, L, C) and labels (M); got ", shape_str(inputs.sizes()), " and ",
               shape_str(labels.sizes()));
  SSMLAB_CHECK(0 <= r.begin && r.begin < r.end && r.end <= inputs.size(1), "target_attack_set: pixels [", r.begin,
               ", ", r.end, ") outside a ", inputs.size(1), "-pixel image");
  const at::Tensor lab = labels.to(at::kCPU, at::kLong);
  const at::Tensor targets = at::nonzero(lab == target).flatten();  // T: donors
  const at::Tensor others = at::nonzero(lab != target).flatten();   // O: the attacked images
  SSMLAB_CHECK(targets.numel() > 0, "target attack: no test image has label ", target);
  TargetSet s;
  s.source = others;
  s.donor = targets.index_select(0, at::randint(targets.numel(), {others.numel()}, gen, at::kLong));
  const at::Tensor src = inputs.index_select(0, others.to(inputs.device()));  // (M', L, C), a copy
  const at::Tensor don = inputs.index_select(0, s.donor.to(inputs.device()));
  src.narrow(1, r.begin, r.end - r.begin).copy_(don.narrow(1, r.begin, r.end - r.begin));
  s.inputs = src;
  s.labels = at::full({others.numel()}, target, at::TensorOptions().dtype(at::kLong));
  return s;
}

double classifier_accuracy(models::ModelImpl& model, const at::Tensor& inputs, const at::Tensor& labels,
                           int64_t batch_size, c10::Device device) {
  at::NoGradGuard no_grad;
  const int64_t n = inputs.size(0);
  SSMLAB_CHECK(n > 0 && labels.size(0) == n, "classifier_accuracy: ", n, " inputs and ", labels.size(0), " labels");
  double correct = 0;
  for (int64_t b = 0; b < n; b += batch_size) {
    const int64_t m = std::min(batch_size, n - b);
    const at::Tensor logits = model.forward(inputs.narrow(0, b, m).to(device));
    SSMLAB_CHECK(logits.dim() == 2, "attack: the model emits ", shape_str(logits.sizes()),
                 "; a sequence classifier (one output per sequence) was expected");
    correct += (logits.argmax(-1).cpu() == labels.narrow(0, b, m).cpu()).sum().item<double>();
  }
  return correct / static_cast<double>(n);
}

namespace {

std::string fmt(double v, int digits = 2) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

Result run_attack(const Context& ctx, const AttackOptions& opts) {
  const tasks::TaskShape shape = ctx.task.shape();
  if (shape.input != tasks::InputKind::features || shape.target != tasks::TargetKind::per_sequence)
    fail_config("attack: task '", ctx.task.name(),
                "' is not a sequence classification of feature vectors (the attack corrupts image pixels; "
                "use task seqimage)");
  const auto pixels = parse_int_list(opts.noise_pixels, "analysis.attack.noise_pixels");
  const auto noise_regions = parse_name_list(opts.noise_regions, "analysis.attack.noise_regions", {"leading", "trailing"});
  const auto modes = parse_name_list(opts.noise_modes, "analysis.attack.noise_modes", {"randn", "zeros", "addrandn"});
  const auto rows = parse_int_list(opts.target_rows, "analysis.attack.target_rows");
  const auto target_regions =
      parse_name_list(opts.target_regions, "analysis.attack.target_regions", {"leading", "middle", "trailing"});
  std::vector<int64_t> labels_to_attack = parse_int_list(opts.target_labels, "analysis.attack.target_labels");
  if (labels_to_attack.empty())
    for (int64_t c = 0; c < shape.num_outputs; ++c) labels_to_attack.push_back(c);
  for (int64_t c : labels_to_attack)
    if (c < 0 || c >= shape.num_outputs)
      fail_config("analysis.attack.target_labels: ", c, " is not a class (0..", shape.num_outputs - 1, ")");

  // The test images and labels (every test segment of the first one's length), the first `samples` of them.
  int64_t total = 0;
  for (const auto& seg : ctx.data) total += seg.inputs.defined() ? seg.inputs.size(0) : 0;
  const Examples ex = sample_examples(ctx, opts.samples > 0 ? opts.samples : std::max<int64_t>(total, 1));
  const at::Tensor X = ex.inputs.to(at::kCPU, at::kFloat), Y = ex.targets.to(at::kCPU, at::kLong);
  const int64_t L = X.size(1);
  int64_t W = opts.row_width;
  if (W == 0) {
    W = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(L))));
    if (W * W != L)
      fail_config("attack: ", L, " pixels are not a square image; set analysis.attack.row_width to the row length");
  }
  if (L % W != 0) fail_config("analysis.attack.row_width = ", W, " does not divide the ", L, " pixels of an image");
  const int64_t H = L / W;

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(ctx.seed);
  auto acc_of = [&](const at::Tensor& x, const at::Tensor& y) {
    return classifier_accuracy(ctx.model, x, y, opts.batch_size, ctx.device);
  };
  const double clean = acc_of(X, Y);
  log::info(str("attack: clean accuracy ", fmt(100 * clean), "% on ", X.size(0), " test images (", H, " x ", W, ")"));

  Result r;
  nlohmann::json noise_json = nlohmann::json::array();
  std::map<std::tuple<int64_t, std::string, std::string>, double> noise_acc;  // (k, mode, region) -> acc
  for (int64_t k : pixels)
    for (const auto& mode : modes)
      for (const auto& region : noise_regions) {
        const at::Tensor x = noise_attack(X, noise_range(region, k, L), parse_noise_mode(mode), gen);
        const double acc = acc_of(x, Y);
        noise_acc[{k, mode, region}] = acc;
        noise_json.push_back({{"region", region},
                              {"pixels", k},
                              {"mode", mode},
                              {"accuracy", acc},
                              {"drop_points", 100 * (clean - acc)},
                              {"drop_relative", clean > 0 ? (clean - acc) / clean : NAN}});
        log::info(str("attack: ", region, " ", k, " px ", mode, ": accuracy ", fmt(100 * acc), "%"));
      }
  if (!pixels.empty()) {
    std::vector<std::string> header = {"set"}, labels = {"clean"};
    for (const auto& region : noise_regions) header.push_back(region);
    std::vector<std::vector<double>> table = {std::vector<double>(noise_regions.size(), clean)};
    for (int64_t k : pixels)
      for (const auto& mode : modes) {
        labels.push_back(std::to_string(k) + " px " + mode);
        std::vector<double> row;
        for (const auto& region : noise_regions) row.push_back(noise_acc[{k, mode, region}]);
        table.push_back(row);
      }
    r.files.push_back(write_labelled_csv(ctx.run_dir, "attack_noise", header, labels, table));
    r.files.push_back(write_spec(
        ctx.run_dir, "attack_noise",
        {{"kind", "bars"},
         {"title", "Recency attack: accuracy with the leading or trailing pixels corrupted"},
         {"xlabel", "corrupted test set"},
         {"ylabel", "test accuracy"},
         {"ymin", 0.0},
         {"ymax", 1.0},
         {"caption", "Accuracy on the clean test set and with the first / last k pixels replaced by noise (spec "
                     "§2.4). A model biased towards recent tokens loses far more when the trailing pixels are hit."}}));
  }

  nlohmann::json target_json = nlohmann::json::array(), target_mean = nlohmann::json::array();
  std::map<std::pair<int64_t, std::string>, double> mean_success;
  std::vector<std::string> heat_rows;
  std::vector<std::vector<double>> heat;
  for (int64_t k : rows)
    for (const auto& region : target_regions) {
      const PixelRange pr = row_range(region, k, H, W);
      std::vector<double> per_label;
      for (int64_t c : labels_to_attack) {
        const TargetSet s = target_attack_set(X, Y, c, pr, gen);
        const double success = acc_of(s.inputs, s.labels);
        per_label.push_back(success);
        target_json.push_back({{"region", region}, {"rows", k}, {"label", c}, {"success", success}, {"images", s.inputs.size(0)}});
      }
      double mean = 0;
      for (double v : per_label) mean += v;
      mean /= static_cast<double>(per_label.size());
      mean_success[{k, region}] = mean;
      target_mean.push_back({{"region", region}, {"rows", k}, {"success", mean}});
      heat_rows.push_back(region + " " + std::to_string(k) + " rows");
      heat.push_back(per_label);
      log::info(str("attack: target ", region, " ", k, " rows: mean success ", fmt(100 * mean), "%"));
    }
  if (!rows.empty()) {
    std::vector<std::string> header = {"rows replaced"}, labels;
    for (const auto& region : target_regions) header.push_back(region);
    std::vector<std::vector<double>> table;
    for (int64_t k : rows) {
      labels.push_back(std::to_string(k) + " of " + std::to_string(H) + " rows");
      std::vector<double> row;
      for (const auto& region : target_regions) row.push_back(mean_success[{k, region}]);
      table.push_back(row);
    }
    r.files.push_back(write_labelled_csv(ctx.run_dir, "attack_target", header, labels, table));
    r.files.push_back(write_spec(
        ctx.run_dir, "attack_target",
        {{"kind", "bars"},
         {"title", "Target attack: success rate by replaced region"},
         {"xlabel", "rows replaced by a target-class image's"},
         {"ylabel", "success rate (classified as the target)"},
         {"ymin", 0.0},
         {"ymax", 1.0},
         {"caption", "Every non-target test image gets k rows of a random target-class image and the target label "
                     "(spec §2.5); the fraction classified as the target, averaged over target labels. Lower = "
                     "more robust."}}));
    std::vector<std::string> hh = {"region"};
    for (int64_t c : labels_to_attack) hh.push_back(std::to_string(c));
    r.files.push_back(write_labelled_csv(ctx.run_dir, "attack_target_labels", hh, heat_rows, heat));
    r.files.push_back(write_spec(ctx.run_dir, "attack_target_labels",
                                 {{"kind", "heatmap"},
                                  {"title", "Target attack success per target label"},
                                  {"xlabel", "target label"},
                                  {"ylabel", "replaced rows"},
                                  {"zlabel", "success rate"},
                                  {"caption", "Success rate of the target attack for every target label and region."}}));
  }

  // The paper's values beside ours (spec §2.4-2.5; the blog's numbers are for Mamba, drop units not stated).
  nlohmann::json paper = nlohmann::json::array();
  const std::string src = "recency paper §2.4 (ICLR blog): Mamba on sequential CIFAR-10, 32 of 1024 pixels";
  const int64_t k_row = W;  // one image row: the paper's 32 pixels
  if (noise_acc.count({k_row, "randn", "trailing"}))
    paper.push_back(paper_row("accuracy drop, trailing " + std::to_string(k_row) + " px randn (points)", 81.24,
                              100 * (clean - noise_acc[{k_row, "randn", "trailing"}]), src));
  if (noise_acc.count({k_row, "randn", "leading"}))
    paper.push_back(paper_row("accuracy drop, leading " + std::to_string(k_row) + " px randn (points)", 2.30,
                              100 * (clean - noise_acc[{k_row, "randn", "leading"}]), src));
  if (noise_acc.count({k_row, "randn", "trailing"}) && noise_acc.count({k_row, "randn", "leading"}))
    paper.push_back(paper_row("trailing minus leading drop (points)",
                              "SSMs (Mamba, H3, RWKV): large and positive; attention: about 0 or negative",
                              100 * (noise_acc[{k_row, "randn", "leading"}] - noise_acc[{k_row, "randn", "trailing"}]),
                              "recency paper §2.4"));
  if (!rows.empty() && mean_success.count({rows.front(), "trailing"}) && mean_success.count({rows.front(), "leading"}))
    paper.push_back(paper_row("target attack success, trailing minus leading " + std::to_string(rows.front()) +
                                  " rows (points)",
                              "SSMs: much higher for trailing rows; attention: not disproportionately affected",
                              100 * (mean_success[{rows.front(), "trailing"}] - mean_success[{rows.front(), "leading"}]),
                              "recency paper §2.5, Figure 3"));

  r.summary = {{"clean_accuracy", clean},
               {"images", X.size(0)},
               {"image", {{"rows", H}, {"row_width", W}, {"channels", X.size(2)}}},
               {"noise", noise_json},
               {"target", target_json},
               {"target_mean", target_mean},
               {"paper", paper}};
  return r;
}

}  // namespace ssmlab::analysis
