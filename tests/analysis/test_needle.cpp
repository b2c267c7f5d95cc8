// The needle task (spec §2.3 / §3.4 layout on a synthetic vocabulary) and the needle_grid analysis: the needle
// sits in the block its depth names and nowhere else, the key is the only target, test bins hold their depths;
// on an oracle that recalls a needle only within a window of the query, the grid is exactly the fraction of
// examples whose needle lies inside the window.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "ssmlab/analysis/needle.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/tasks/needle.h"
#include "ssmlab/tasks/registry.h"
#include "test_util.h"

namespace analysis_test_needle {

namespace {

using namespace ssmlab;
using namespace ssmlab::tasks;

NeedleConfig small_config() {
  NeedleConfig c;
  c.vocab_size = 32;
  c.key_digits = 3;
  c.block_len = 8;
  c.depth_bins = 4;
  c.train = {{64, 16}};
  c.test = {{64, 5}, {128, 5}};
  return c;
}

TEST(Needle, LayoutPutsTheNeedleAtItsDepthAndTargetsOnlyTheKey) {
  const NeedleConfig c = small_config();
  const int64_t L = 64, n = needle_blocks(c, L);
  EXPECT_EQ(n, (64 + 1 - 2 - 3) / 8);  // 7 blocks
  const std::vector<int64_t> block = needle_block(c);
  for (double depth : {0.0, 0.3, 0.5, 0.99, 1.0}) {
    const Segment s = make_needle_segment(c, L, {depth}, 7, "x");
    ASSERT_EQ(s.inputs.sizes(), (std::vector<int64_t>{1, L}));
    const auto in = s.inputs.accessor<int64_t, 2>();
    const auto tg = s.targets.accessor<int64_t, 2>();
    const int64_t filler = L + 1 - 2 - 3 - n * 8;
    const int64_t which = static_cast<int64_t>(depth * (n - 1));
    const int64_t pos = 1 + filler + which * 8;
    EXPECT_EQ(needle_position(c, L, depth), pos);
    EXPECT_EQ(in[0][0], kNeedlePrefix);
    int64_t marks = 0;
    for (int64_t t = 0; t < L; ++t) marks += in[0][t] == kNeedleMark;
    EXPECT_EQ(marks, 1);
    EXPECT_EQ(in[0][pos], kNeedleMark) << "depth " << depth;
    EXPECT_EQ(in[0][L - 3], kNeedleQuery);
    // The key: after NEEDLE and after QUERY; the targets are exactly the key digits at the query and after it.
    for (int64_t j = 0; j < 3; ++j) {
      EXPECT_LT(in[0][pos + 1 + j], 10);
      EXPECT_EQ(tg[0][L - 3 + j], in[0][pos + 1 + j]);
      if (j > 0) {
        EXPECT_EQ(in[0][L - 3 + j], in[0][pos + j]);
      }
    }
    EXPECT_EQ((s.targets != kIgnoreIndex).sum().item<int64_t>(), 3);
    // The rest of the needle's block and every other block is the fixed filler block.
    for (int64_t b = 0; b < n; ++b)
      for (int64_t j = (b == which ? 4 : 0); j < 8; ++j) EXPECT_EQ(in[0][1 + filler + b * 8 + j], block[j]);
  }
}

TEST(Needle, TestBinsHoldTheirDepthsAndSegmentsAreNamed) {
  const auto d = needle_bin_depths(2, 4, 5);
  ASSERT_EQ(d.size(), 5u);
  for (double x : d) {
    EXPECT_GE(x, 0.5);
    EXPECT_LT(x, 0.75);
  }
  EXPECT_DOUBLE_EQ(d[0], (2 + 0.1) / 4);
  NeedleTask task(small_config());
  const auto test = task.make_test();
  ASSERT_EQ(test.size(), 8u);  // 2 lengths x 4 bins
  EXPECT_EQ(test[0].name, "L64_d0");
  EXPECT_EQ(test[7].name, "L128_d3");
  EXPECT_EQ(test[7].inputs.size(1), 128);
  // Deterministic, and make_test equals the test half of make_splits.
  const auto splits = task.make_splits();
  EXPECT_TRUE(at::equal(splits.test[5].inputs, test[5].inputs));
  EXPECT_EQ(splits.train[0].inputs.size(0), 16);
  EXPECT_EQ(task.shape().vocab_size, 32);
  auto names = task_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "needle"), names.end());
}

TEST(Needle, BadConfigsNameTheRule) {
  NeedleConfig c = small_config();
  c.block_len = 3;  // not more than key_digits
  test::expect_error([&] { check_needle_config(c); }, {"block_len", "key_digits"});
  c = small_config();
  c.test = {{8, 5}};
  test::expect_error([&] { check_needle_config(c); }, {"seq_len 8"});
}

// Recalls the key only when the needle is at most `window` tokens before the query. embed: the token ids as
// float64 (B, L, 1); head: logits (B, L, 10 + ...) from the ids.
class WindowOracle : public models::ModelImpl {
 public:
  WindowOracle(int64_t window, int64_t vocab, int64_t digits) : window_(window), vocab_(vocab), digits_(digits) {}
  at::Tensor embed(const at::Tensor& x) override { return x.to(at::kDouble).unsqueeze(-1); }
  at::Tensor features(const at::Tensor& h, Trace*) override { return h; }
  at::Tensor head(const at::Tensor& f) override {
    const at::Tensor ids = f.squeeze(-1).to(at::kLong);  // (B, L)
    const int64_t B = ids.size(0), L = ids.size(1);
    at::Tensor logits = at::zeros({B, L, vocab_}, at::kFloat);
    for (int64_t b = 0; b < B; ++b) {
      int64_t needle = -1;
      for (int64_t t = 0; t < L; ++t)
        if (ids[b][t].item<int64_t>() == kNeedleMark) needle = t;
      const int64_t query = L - digits_;
      for (int64_t j = 0; j < digits_; ++j) {
        const int64_t digit = ids[b][needle + 1 + j].item<int64_t>();
        const int64_t answer = query - needle <= window_ ? digit : (digit + 1) % 10;
        logits[b][query + j][answer] = 1.0;
      }
    }
    return logits;
  }
  std::string kind() const override { return "window_oracle"; }

 private:
  int64_t window_, vocab_, digits_;
};

TEST(NeedleGrid, OracleGridIsTheFractionInsideItsWindow) {
  test::TempDir tmp;
  const NeedleConfig c = small_config();
  NeedleTask task(c);
  const auto data = task.make_test();
  WindowOracle model(60, c.vocab_size, c.key_digits);
  analysis::Context ctx{model, task, data, c10::Device(c10::kCPU), tmp.path, "oracle", 3};
  analysis::NeedleGridOptions o;
  o.lengths = "64,128";
  o.bins = 4;
  o.count = 6;
  o.batch_size = 4;  // count is not a multiple: the last batch is partial
  const auto r = analysis::run_needle_grid(ctx, o);
  const auto& acc = r.summary["accuracy"];
  for (int64_t b = 0; b < 4; ++b)
    for (int64_t li = 0; li < 2; ++li) {
      const int64_t L = li == 0 ? 64 : 128;
      double want = 0;
      for (double depth : needle_bin_depths(b, 4, 6))
        want += (L - c.key_digits) - needle_position(c, L, depth) <= 60 ? 1.0 / 6 : 0.0;
      EXPECT_NEAR(acc[b][li].get<double>(), want, 1e-12) << "bin " << b << " length " << L;
    }
  // At 64 tokens every needle is within 60 of the query; at 128 the first bin is not.
  EXPECT_DOUBLE_EQ(acc[0][0].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(acc[0][1].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(acc[3][1].get<double>(), 1.0);
  EXPECT_GT(r.summary["paper"][0]["ours"].get<double>(), 0.99);  // last bin minus first at 128

  // exact_match: one wrong digit fails the example; rows without targets are NaN.
  at::Tensor logits = at::zeros({2, 3, 10});
  at::Tensor targets = at::full({2, 3}, kIgnoreIndex, at::kLong);
  logits[0][1][4] = 1;
  logits[0][2][5] = 1;
  targets[0][1] = 4;
  targets[0][2] = 6;
  const at::Tensor em = analysis::exact_match(logits, targets);
  EXPECT_EQ(em[0].item<double>(), 0.0);
  EXPECT_TRUE(std::isnan(em[1].item<double>()));
  targets[0][2] = 5;
  EXPECT_EQ(analysis::exact_match(logits, targets)[0].item<double>(), 1.0);

  // Another task: a clear error.
  analysis::NeedleGridOptions bad;
  bad.lengths = "4";
  test::expect_error([&] { analysis::run_needle_grid(ctx, bad); }, {"needle_grid.lengths", "4"});
}

}  // namespace

}  // namespace analysis_test_needle
