// Recency attacks (spec §2.4-2.5) on cases with a known answer: the corrupted pixels and rows are exactly the
// requested ones, with the documented noise; the target-attack sets hold only non-target images relabelled to the
// target, the region taken from a target-class donor; a classifier that reads only the last pixel loses nothing
// when the leading pixels are noised and everything it knew when the trailing ones are.
#include <filesystem>

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "analysis/analysis_test_models.h"
#include "ssmlab/analysis/attack.h"
#include "ssmlab/analysis/registry.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/runfolder/layout.h"
#include "test_util.h"

namespace analysis_test_attack {

namespace {

namespace fs = std::filesystem;
using namespace ssmlab::analysis;

at::Generator gen_of(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

TEST(Attack, RangesAreThePapers) {
  EXPECT_EQ(noise_range("leading", 32, 1024).begin, 0);
  EXPECT_EQ(noise_range("leading", 32, 1024).end, 32);
  EXPECT_EQ(noise_range("trailing", 96, 1024).begin, 928);
  EXPECT_EQ(noise_range("trailing", 96, 1024).end, 1024);
  // spec §2.5: k = 8 -> rows 12..19, k = 15 -> rows 9..23 of 32.
  EXPECT_EQ(row_range("middle", 8, 32, 32).begin, 12 * 32);
  EXPECT_EQ(row_range("middle", 8, 32, 32).end, 20 * 32);
  EXPECT_EQ(row_range("middle", 15, 32, 32).begin, 9 * 32);
  EXPECT_EQ(row_range("middle", 15, 32, 32).end, 24 * 32);
  EXPECT_EQ(row_range("leading", 8, 32, 32).end, 8 * 32);
  EXPECT_EQ(row_range("trailing", 15, 32, 32).begin, 17 * 32);
  EXPECT_THROW(noise_range("middle", 32, 1024), ssmlab::ConfigError);
  EXPECT_THROW(noise_range("leading", 0, 1024), ssmlab::ConfigError);
  EXPECT_THROW(row_range("leading", 33, 32, 32), ssmlab::ConfigError);
}

TEST(Attack, NoiseChangesExactlyTheRegionWithTheDocumentedNoise) {
  const at::Tensor x = at::rand({5, 49, 3});  // 7 x 7 images, 3 channels
  const PixelRange r{11, 20};
  for (NoiseMode mode : {NoiseMode::randn, NoiseMode::zeros, NoiseMode::addrandn}) {
    at::Generator g = gen_of(7), g2 = gen_of(7);
    const at::Tensor y = noise_attack(x, r, mode, g);
    ASSERT_EQ(y.sizes(), x.sizes());
    EXPECT_TRUE(at::equal(y.narrow(1, 0, 11), x.narrow(1, 0, 11))) << noise_mode_name(mode);
    EXPECT_TRUE(at::equal(y.narrow(1, 20, 29), x.narrow(1, 20, 29))) << noise_mode_name(mode);
    const at::Tensor noise = at::randn({5, 9, 3}, g2, at::TensorOptions().dtype(at::kFloat));
    const at::Tensor region = y.narrow(1, 11, 9);
    if (mode == NoiseMode::randn) {
      EXPECT_TRUE(at::equal(region, noise));
    }
    if (mode == NoiseMode::zeros) {
      EXPECT_EQ(region.abs().sum().item<double>(), 0.0);
    }
    if (mode == NoiseMode::addrandn) {
      EXPECT_TRUE(at::allclose(region, x.narrow(1, 11, 9) + noise, 0, 0));
    }
    if (mode != NoiseMode::zeros) {
      EXPECT_GT((region - x.narrow(1, 11, 9)).abs().min().item<double>(), 0.0);
    }
  }
  EXPECT_EQ(parse_noise_mode("addrandn"), NoiseMode::addrandn);
  EXPECT_THROW(parse_noise_mode("gauss"), ssmlab::ConfigError);
}

TEST(Attack, TargetSetHoldsOnlyNonTargetImagesWithADonorsRegion) {
  const int64_t M = 40, L = 16, C = 2, target = 3;
  const at::Tensor x = at::rand({M, L, C});
  at::Tensor labels = at::arange(M, at::kLong).remainder(5);  // 8 images of each of 5 classes
  at::Generator g = gen_of(1);
  const PixelRange r = row_range("trailing", 1, 4, 4);  // the last row: pixels 12..15
  const TargetSet s = target_attack_set(x, labels, target, r, g);
  ASSERT_EQ(s.inputs.size(0), 32);
  EXPECT_TRUE((s.labels == target).all().item<bool>());
  for (int64_t i = 0; i < s.inputs.size(0); ++i) {
    const int64_t src = s.source[i].item<int64_t>(), don = s.donor[i].item<int64_t>();
    EXPECT_NE(labels[src].item<int64_t>(), target);
    EXPECT_EQ(labels[don].item<int64_t>(), target);
    EXPECT_TRUE(at::equal(s.inputs[i].narrow(0, 0, 12), x[src].narrow(0, 0, 12)));
    EXPECT_TRUE(at::equal(s.inputs[i].narrow(0, 12, 4), x[don].narrow(0, 12, 4)));
  }
  // Donors drawn with replacement: 32 draws from 8 donors repeat some.
  EXPECT_LT(std::get<0>(at::_unique(s.donor)).numel(), 32);
  EXPECT_THROW(target_attack_set(x, labels, 9, r, g), ssmlab::Error);  // no image of class 9
}

// Classifies by one pixel's first channel: class 1 if above 0.5, else 0 (two classes).
class OnePixelClassifier : public ssmlab::models::ModelImpl {
 public:
  explicit OnePixelClassifier(bool last) : last_(last) {}
  at::Tensor embed(const at::Tensor& x) override { return x.to(at::kFloat); }
  at::Tensor features(const at::Tensor& h, ssmlab::Trace*) override { return h; }
  at::Tensor head(const at::Tensor& f) override {
    const at::Tensor v = f.select(1, last_ ? f.size(1) - 1 : 0).select(-1, 0);  // (B)
    return at::stack({0.5 - v, v - 0.5}, -1);                                  // (B, 2)
  }
  std::string kind() const override { return "one_pixel"; }

 private:
  bool last_;
};

// Two-class images of 4 x 4 pixels whose every pixel tells the class (0.2 or 0.8).
class TwoClassImages : public ssmlab::tasks::Task {
 public:
  std::string name() const override { return "two_class_images"; }
  ssmlab::tasks::TaskShape shape() const override {
    return {ssmlab::tasks::InputKind::features, 0, 1, ssmlab::tasks::TargetKind::per_sequence, 2};
  }
  ssmlab::tasks::Splits make_splits() const override {
    const at::Tensor y = at::arange(64, at::kLong).remainder(2);
    const at::Tensor x = (0.2 + 0.6 * y.to(at::kFloat)).view({64, 1, 1}).expand({64, 16, 1}).contiguous();
    ssmlab::tasks::Segment seg{"test", x, y, 16};
    return {{seg}, {seg}};
  }
};

TEST(Attack, LastPixelClassifierIsBlindToLeadingNoise) {
  ssmlab::test::TempDir tmp;
  const fs::path dir = tmp.path;
  TwoClassImages task;
  const auto data = task.make_test();
  for (bool last : {true, false}) {
    OnePixelClassifier model(last);
    model.eval();
    Context ctx{model, task, data, c10::Device(c10::kCPU), dir / (last ? "last" : "first"), "m", 5};
    AttackOptions o;
    o.noise_pixels = "4,8";    // one and two rows of 4
    o.noise_modes = "zeros";  // every corrupted pixel reads 0 -> class 0: half the images misclassified
    o.target_rows = "1";
    const Result r = run_attack(ctx, o);
    EXPECT_DOUBLE_EQ(r.summary["clean_accuracy"].get<double>(), 1.0);
    for (const auto& n : r.summary["noise"]) {
      const bool hits = (n["region"] == "trailing") == last;
      EXPECT_DOUBLE_EQ(n["accuracy"].get<double>(), hits ? 0.5 : 1.0) << n.dump();
    }
    // A target-class donor's last row carries the target's value: the last-pixel model always follows it.
    for (const auto& t : r.summary["target_mean"]) {
      const bool hits = t["region"] == (last ? "trailing" : "leading");
      EXPECT_DOUBLE_EQ(t["success"].get<double>(), hits ? 1.0 : 0.0) << t.dump();
    }
    EXPECT_EQ(r.summary["image"]["row_width"], 4);
    EXPECT_TRUE(fs::exists(ssmlab::runfolder::figure_spec_file(ctx.run_dir, "attack_noise")));
    EXPECT_TRUE(fs::exists(ssmlab::runfolder::figure_table_file(ctx.run_dir, "attack_target_labels")));
    ASSERT_TRUE(r.summary["paper"].is_array());
    EXPECT_EQ(r.summary["paper"].size(), 1u);  // noise rows need randn at k = one row: the target row only
  }
}

TEST(Attack, BadOptionsNameTheKey) {
  ssmlab::test::TempDir tmp;
  const fs::path dir = tmp.path;
  TwoClassImages task;
  const auto data = task.make_test();
  OnePixelClassifier model(true);
  Context ctx{model, task, data, c10::Device(c10::kCPU), dir, "m", 5};
  AttackOptions o;
  o.noise_modes = "randn,blur";
  ssmlab::test::expect_error([&] { run_attack(ctx, o); }, {"analysis.attack.noise_modes", "blur"});
  o = AttackOptions{};
  o.row_width = 3;  // does not divide 16
  EXPECT_THROW(run_attack(ctx, o), ssmlab::ConfigError);
  o = AttackOptions{};
  o.noise_pixels = "32";  // more than the 16 pixels
  EXPECT_THROW(run_attack(ctx, o), ssmlab::ConfigError);
  o = AttackOptions{};
  o.target_labels = "2";  // two classes only
  EXPECT_THROW(run_attack(ctx, o), ssmlab::ConfigError);
  EXPECT_THROW(parse_int_list("8,x", "k"), ssmlab::ConfigError);
  EXPECT_THROW(parse_int_list("8,8", "k"), ssmlab::ConfigError);
  EXPECT_EQ(parse_int_list(" 32, 96 ,", "k"), (std::vector<int64_t>{32, 96}));
}

}  // namespace

}  // namespace analysis_test_attack
