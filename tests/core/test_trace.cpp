// Trace: keep-everything vs explicit names, detached copies vs keep_graph, and merging the records of
// consecutive segments (per-position names concatenated, `state` from the last segment, errors named).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"
#include "ssmlab/core/trace.h"

namespace core_test_trace {

namespace {

TEST(Trace, WantsAndWantsExplicitly) {
  ssmlab::Trace all, some({"dt", "decay"});
  EXPECT_TRUE(all.wants("dt"));
  EXPECT_FALSE(all.wants_explicitly("decay"));
  EXPECT_TRUE(some.wants("decay") && some.wants_explicitly("decay"));
  EXPECT_FALSE(some.wants("state") || some.wants_explicitly("state"));
}

TEST(Trace, RecordsDetachedCopiesUnlessKeepGraph) {
  const at::Tensor w = at::ones({3}).requires_grad_(true);
  const at::Tensor v = w * 2;  // (3)
  ssmlab::Trace copy, keep;
  keep.keep_graph = true;
  copy.record("x", 0, v);
  keep.record("x", 0, v);
  EXPECT_FALSE(copy.get("x", 0).requires_grad());
  EXPECT_NE(copy.get("x", 0).data_ptr(), v.data_ptr());
  EXPECT_TRUE(keep.get("x", 0).is_same(v));
  keep.get("x", 0).sum().backward();
  EXPECT_TRUE(at::equal(w.grad(), at::full({3}, 2.0)));
}

TEST(Trace, MergeSegmentsConcatenatesPositionsAndKeepsTheLastState) {
  ssmlab::Trace outer({"dt", "state"});
  outer.layer = 4;
  outer.keep_graph = true;
  std::vector<ssmlab::Trace> segs;
  for (int64_t i = 0; i < 2; ++i) {
    segs.push_back(outer.segment());
    EXPECT_EQ(segs.back().layer, 4);
    EXPECT_TRUE(segs.back().keep_graph);
    segs.back().record("dt", 4, at::full({2, i + 2, 3}, static_cast<double>(i)));  // (B, len, E)
    segs.back().record("state", 4, at::full({2, 3}, static_cast<double>(i)));       // (B, E)
  }
  outer.merge_segments(segs, {2, 3});
  EXPECT_EQ(outer.get("dt", 4).sizes(), (at::IntArrayRef{2, 5, 3}));
  EXPECT_EQ(outer.get("dt", 4)[0][4][0].item<double>(), 1.0);
  EXPECT_TRUE(at::equal(outer.get("state", 4), at::full({2, 3}, 1.0)));
  EXPECT_THROW(outer.merge_segments(segs, {2, 2}), ssmlab::Error);  // dt of segment 1 is not (B, 2, ...)
  EXPECT_TRUE(outer.segment({"B"}).wants("B"));
  EXPECT_FALSE(outer.segment().wants("B"));
}

}  // namespace

}  // namespace core_test_trace
