// Batching over segments and per_example_accuracy (src/ssmlab/tasks/task.h).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <array>
#include <cmath>

#include "ssmlab/core/error.h"
#include "ssmlab/tasks/task.h"

namespace tasks_test_task {

namespace {

using ssmlab::tasks::Batch;
using ssmlab::tasks::kIgnoreIndex;
using ssmlab::tasks::Segment;

// A segment whose token at (m, t) is base + m * L + t, so every row says where it came from;
// targets ignore odd positions.
Segment make_segment(const std::string& name, int64_t M, int64_t L, int64_t base) {
  Segment s;
  s.name = name;
  s.seq_len = L;
  s.inputs = at::arange(base, base + M * L, at::kLong).view({M, L});  // (M, L)
  s.targets = s.inputs.clone();                                       // (M, L)
  s.targets.slice(/*dim=*/1, /*start=*/1, /*end=*/L, /*step=*/2).fill_(kIgnoreIndex);
  return s;
}

TEST(TaskBatching, CountsBatchesWithPartialLastPerSegment) {
  const std::vector<Segment> segs = {make_segment("a", 5, 4, 0), make_segment("b", 3, 6, 1000),
                                     make_segment("c", 8, 2, 2000)};
  EXPECT_EQ(ssmlab::tasks::count_batches(segs, 4), 2 + 1 + 2);
  EXPECT_EQ(ssmlab::tasks::count_batches(segs, 1), 5 + 3 + 8);
  EXPECT_EQ(ssmlab::tasks::count_batches(segs, 100), 3);
  EXPECT_EQ(ssmlab::tasks::count_batches({}, 4), 0);
  EXPECT_THROW(ssmlab::tasks::count_batches(segs, 0), ssmlab::Error);
}

TEST(TaskBatching, BatchAtWalksSegmentsInOrderWithoutMixing) {
  const std::vector<Segment> segs = {make_segment("a", 5, 4, 0), make_segment("b", 3, 6, 1000),
                                     make_segment("c", 8, 2, 2000)};
  // (segment, first row, rows) of each batch of 4: a[0:4] a[4:5] b[0:3] c[0:4] c[4:8].
  const std::vector<std::array<int64_t, 3>> expect = {{0, 0, 4}, {0, 4, 1}, {1, 0, 3}, {2, 0, 4}, {2, 4, 4}};
  ASSERT_EQ(ssmlab::tasks::count_batches(segs, 4), static_cast<int64_t>(expect.size()));
  for (size_t i = 0; i < expect.size(); ++i) {
    SCOPED_TRACE(i);
    const auto [s, begin, rows] = expect[i];
    const Batch b = ssmlab::tasks::batch_at(segs, 4, static_cast<int64_t>(i));
    EXPECT_EQ(b.segment, s);
    ASSERT_EQ(b.inputs.size(0), rows);
    EXPECT_EQ(b.inputs.size(1), segs[s].seq_len);
    EXPECT_TRUE(at::equal(b.inputs, segs[s].inputs.slice(0, begin, begin + rows)));
    EXPECT_TRUE(at::equal(b.targets, segs[s].targets.slice(0, begin, begin + rows)));
    EXPECT_TRUE(at::equal(b.loss_mask, segs[s].targets.slice(0, begin, begin + rows).ne(kIgnoreIndex)));
    EXPECT_EQ(b.loss_mask.scalar_type(), at::kBool);
  }
  EXPECT_THROW(ssmlab::tasks::batch_at(segs, 4, 5), ssmlab::Error);
  EXPECT_THROW(ssmlab::tasks::batch_at(segs, 4, -1), ssmlab::Error);
}

TEST(TaskBatching, BatchAtPastTheEndNamesTheCount) {
  const std::vector<Segment> segs = {make_segment("a", 5, 4, 0)};
  try {
    ssmlab::tasks::batch_at(segs, 2, 3);
    FAIL() << "expected ssmlab::Error";
  } catch (const ssmlab::Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 batches"), std::string::npos) << e.what();
  }
}

TEST(TaskBatching, LossMaskMarksExactlyTheCountedTargets) {
  const Segment seg = make_segment("a", 3, 5, 0);
  const Batch b = ssmlab::tasks::slice_batch(seg, /*segment_index=*/7, /*begin=*/1, /*end=*/3);
  EXPECT_EQ(b.segment, 7);
  // Columns 0, 2, 4 count, 1 and 3 are ignored.
  const at::Tensor expect = at::tensor({1, 0, 1, 0, 1}, at::kLong).ne(0).view({1, 5}).expand({2, 5});
  EXPECT_TRUE(at::equal(b.loss_mask, expect));
  EXPECT_EQ(b.inputs.select(0, 0).select(0, 0).item<int64_t>(), 5);  // row 1 starts at token 1 * 5
}

TEST(TaskBatching, SliceBatchRejectsBadRanges) {
  const Segment seg = make_segment("a", 3, 5, 0);
  EXPECT_THROW(ssmlab::tasks::slice_batch(seg, 0, 0, 4), ssmlab::Error);
  EXPECT_THROW(ssmlab::tasks::slice_batch(seg, 0, 2, 2), ssmlab::Error);
  EXPECT_THROW(ssmlab::tasks::slice_batch(seg, 0, -1, 2), ssmlab::Error);
  Segment bad = seg;
  bad.targets = seg.targets.slice(1, 0, 4);
  EXPECT_THROW(ssmlab::tasks::slice_batch(bad, 0, 0, 1), ssmlab::Error);
}

// logits (M, L, V) whose argmax at (m, t) is pred[m][t].
at::Tensor logits_with_argmax(const std::vector<std::vector<int64_t>>& pred, int64_t V) {
  const int64_t M = static_cast<int64_t>(pred.size()), L = static_cast<int64_t>(pred[0].size());
  at::Tensor logits = at::linspace(-1.0, 0.0, V, at::kFloat).expand({M, L, V}).contiguous();  // (M, L, V)
  for (int64_t m = 0; m < M; ++m)
    for (int64_t t = 0; t < L; ++t) logits.index_put_({m, t, pred[m][t]}, 5.0);
  return logits;
}

TEST(TaskAccuracy, PerExampleAccuracyOnHandBuiltLogits) {
  const int64_t V = 6;
  const at::Tensor logits = logits_with_argmax({{1, 2, 3, 4},    // targets -, 2, 0, -: 1 of 2
                                                {0, 0, 0, 0},    // nothing counted: NaN
                                                {5, 1, 4, 4},    // all four right: 1
                                                {2, 2, 2, 2}},   // 0 of 3
                                               V);               // (4, 4, 6)
  const at::Tensor targets = at::tensor({-100, 2, 0, -100,           //
                                         -100, -100, -100, -100,     //
                                         5, 1, 4, 4,                 //
                                         0, 1, -100, 3},
                                        at::kLong)
                                 .view({4, 4});  // (4, 4)
  const at::Tensor acc = ssmlab::tasks::per_example_accuracy(logits, targets);  // (4)
  ASSERT_EQ(acc.scalar_type(), at::kDouble);
  ASSERT_EQ(acc.sizes(), at::IntArrayRef({4}));
  EXPECT_DOUBLE_EQ(acc[0].item<double>(), 0.5);
  EXPECT_TRUE(std::isnan(acc[1].item<double>()));
  EXPECT_DOUBLE_EQ(acc[2].item<double>(), 1.0);
  EXPECT_DOUBLE_EQ(acc[3].item<double>(), 0.0);

  // Same answer from half-precision logits.
  const at::Tensor acc16 = ssmlab::tasks::per_example_accuracy(logits.to(at::kBFloat16), targets);
  EXPECT_TRUE(at::allclose(acc16, acc, /*rtol=*/0, /*atol=*/0, /*equal_nan=*/true));
}

TEST(TaskAccuracy, MeanIsOverCountedPositionsOnly) {
  // One counted position, predicted right: 1, not 1/3 (a mean over all L positions) and not 0.
  const at::Tensor logits = logits_with_argmax({{3, 3, 2}}, 4);  // (1, 3, 4)
  const at::Tensor targets = at::tensor({-100, -100, 2}, at::kInt).view({1, 3});  // int32 ids work too
  EXPECT_DOUBLE_EQ(ssmlab::tasks::per_example_accuracy(logits, targets)[0].item<double>(), 1.0);
}

TEST(TaskAccuracy, RejectsMismatchedShapes) {
  const at::Tensor logits = at::zeros({2, 3, 4});
  EXPECT_THROW(ssmlab::tasks::per_example_accuracy(logits, at::zeros({2, 4}, at::kLong)), ssmlab::Error);
  EXPECT_THROW(ssmlab::tasks::per_example_accuracy(logits.select(2, 0), at::zeros({2, 3}, at::kLong)),
               ssmlab::Error);
  EXPECT_THROW(ssmlab::tasks::per_example_accuracy(logits, at::zeros({2, 3}, at::kFloat)), ssmlab::Error);
  try {
    ssmlab::tasks::per_example_accuracy(logits, at::zeros({3, 3}, at::kLong));
    FAIL() << "expected ssmlab::Error";
  } catch (const ssmlab::Error& e) {
    EXPECT_NE(std::string(e.what()).find("(2, 3, 4)"), std::string::npos) << e.what();
  }
}

}  // namespace

}  // namespace tasks_test_task
