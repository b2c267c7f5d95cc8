// MQAR generator (src/ssmlab/tasks/mqar.h; spec §2.8.1, zoology/data/multiquery_ar.py).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <set>

#include "ssmlab/core/error.h"
#include "ssmlab/core/rng.h"
#include "ssmlab/tasks/mqar.h"

namespace tasks_test_mqar {

namespace {

using ssmlab::tasks::kIgnoreIndex;
using ssmlab::tasks::MqarConfig;
using ssmlab::tasks::MqarSegmentSpec;
using ssmlab::tasks::Segment;

MqarConfig small_config(int64_t vocab_size, double power_a = 0.01) {
  MqarConfig cfg;
  cfg.vocab_size = vocab_size;
  cfg.power_a = power_a;
  return cfg;
}

// One example read back from the tensors: the kv block and, per key, where it is queried.
struct Example {
  std::vector<int64_t> keys, values, query_pos;  // query_pos[i]: input position holding keys[i] after the kv block
};

Example decode(const int64_t* in, int64_t L, int64_t K) {
  Example ex;
  for (int64_t i = 0; i < K; ++i) {
    ex.keys.push_back(in[2 * i]);
    ex.values.push_back(in[2 * i + 1]);
    int64_t pos = -1;
    for (int64_t t = 2 * K; t < L; ++t)
      if (in[t] == in[2 * i]) pos = t;
    ex.query_pos.push_back(pos);
  }
  return ex;
}

TEST(Mqar, SegmentHasSpecShapesAndName) {
  const Segment seg = ssmlab::tasks::make_mqar_segment(small_config(128), {64, 4, 37}, /*seed=*/1);
  EXPECT_EQ(seg.name, "L64_K4");
  EXPECT_EQ(seg.seq_len, 64);
  EXPECT_EQ(seg.inputs.sizes(), at::IntArrayRef({37, 64}));
  EXPECT_EQ(seg.targets.sizes(), at::IntArrayRef({37, 64}));
  EXPECT_EQ(seg.inputs.scalar_type(), at::kLong);
  EXPECT_EQ(seg.targets.scalar_type(), at::kLong);
}

// Every structural rule of §2.8.1 on every example.
TEST(Mqar, LayoutKeysValuesQueriesAndFiller) {
  const int64_t V = 64, L = 48, K = 6, M = 400;
  const Segment seg = ssmlab::tasks::make_mqar_segment(small_config(V), {L, K, M}, /*seed=*/11);
  const int64_t* in = seg.inputs.data_ptr<int64_t>();
  const int64_t* tg = seg.targets.data_ptr<int64_t>();
  for (int64_t m = 0; m < M; ++m) {
    SCOPED_TRACE(m);
    const int64_t* row_in = in + m * L;
    const int64_t* row_tg = tg + m * L;
    const Example ex = decode(row_in, L, K);
    std::set<int64_t> keys(ex.keys.begin(), ex.keys.end()), values(ex.values.begin(), ex.values.end());
    ASSERT_EQ(static_cast<int64_t>(keys.size()), K) << "keys repeat within an example";
    ASSERT_EQ(static_cast<int64_t>(values.size()), K) << "values repeat within an example";
    for (int64_t i = 0; i < K; ++i) {  // kv block alternates key, value
      ASSERT_GE(ex.keys[i], 1);
      ASSERT_LE(ex.keys[i], V / 2 - 1);
      ASSERT_GE(ex.values[i], V / 2);
      ASSERT_LE(ex.values[i], V - 1);
      ASSERT_EQ(row_tg[2 * i], kIgnoreIndex);
      ASSERT_EQ(row_tg[2 * i + 1], kIgnoreIndex);
    }
    std::set<int64_t> query_positions;
    for (int64_t i = 0; i < K; ++i) {  // each key is queried once, at an even offset after the block
      const int64_t q = ex.query_pos[i];
      ASSERT_GE(q, 2 * K) << "key " << ex.keys[i] << " is never queried";
      ASSERT_EQ((q - 2 * K) % 2, 0);
      ASSERT_EQ(row_tg[q], ex.values[i]) << "the target at the query is the value paired with its key";
      query_positions.insert(q);
    }
    ASSERT_EQ(static_cast<int64_t>(query_positions.size()), K);
    int64_t counted = 0;
    for (int64_t t = 2 * K; t < L; ++t) {
      if (query_positions.count(t)) {
        ++counted;
        continue;
      }
      ASSERT_EQ(row_in[t], 0) << "filler at " << t;
      ASSERT_EQ(row_tg[t], kIgnoreIndex) << "target at non-query " << t;
    }
    ASSERT_EQ(counted, K);
  }
}

// zoology builds sequence (L + 1) and labels (L + 1) with v_i at 2K + 2 g_i + 1, then takes
// inputs = sequence[:L], targets = labels[1:]. Rebuild that from the gaps read off the inputs and
// compare: an unshifted target (v_i on the token after the query) fails here.
TEST(Mqar, TargetsAreZoologyLabelsShiftedByOne) {
  const int64_t V = 40, L = 32, K = 5, M = 200;
  const Segment seg = ssmlab::tasks::make_mqar_segment(small_config(V, /*power_a=*/1.0), {L, K, M}, 5);
  const int64_t* in = seg.inputs.data_ptr<int64_t>();
  const int64_t* tg = seg.targets.data_ptr<int64_t>();
  for (int64_t m = 0; m < M; ++m) {
    const Example ex = decode(in + m * L, L, K);
    std::vector<int64_t> labels(L + 1, kIgnoreIndex), sequence(L + 1, 0);
    for (int64_t i = 0; i < K; ++i) {
      const int64_t g = (ex.query_pos[i] - 2 * K) / 2;
      sequence[2 * i] = ex.keys[i];
      sequence[2 * i + 1] = ex.values[i];
      sequence[2 * K + 2 * g] = ex.keys[i];
      labels[2 * K + 2 * g + 1] = ex.values[i];
    }
    for (int64_t t = 0; t < L; ++t) {
      ASSERT_EQ(in[m * L + t], sequence[t]) << "row " << m << " position " << t;
      ASSERT_EQ(tg[m * L + t], labels[t + 1]) << "row " << m << " position " << t;
    }
  }
}

// Pearson chi-square of observed counts against expected probabilities.
double chi_square(const std::vector<int64_t>& observed, const std::vector<double>& p) {
  int64_t n = 0;
  for (int64_t c : observed) n += c;
  double x2 = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double e = p[i] * static_cast<double>(n);
    x2 += (observed[i] - e) * (observed[i] - e) / e;
  }
  return x2;
}

std::vector<double> power_law(int64_t space, double a) {
  std::vector<double> p(space);
  double s = 0.0;
  for (int64_t g = 0; g < space; ++g) s += p[g] = a * std::pow(g + 1.0, a - 1.0);
  for (double& x : p) x /= s;
  return p;
}

// The first key's gap is one draw from p(g) ∝ a (g+1)^(a-1). With space = 28 (27 degrees of
// freedom) the 0.1% critical value is 55.5; each histogram must pass its own law and fail the other.
TEST(Mqar, FirstGapFollowsPowerLaw) {
  const int64_t L = 64, K = 4, M = 20000, space = (L - 2 * K) / 2;
  std::vector<std::vector<int64_t>> hist;
  for (double a : {0.01, 1.0}) {
    const Segment seg = ssmlab::tasks::make_mqar_segment(small_config(128, a), {L, K, M}, /*seed=*/3);
    std::vector<int64_t> h(space, 0);
    const int64_t* in = seg.inputs.data_ptr<int64_t>();
    for (int64_t m = 0; m < M; ++m) ++h[(decode(in + m * L, L, K).query_pos[0] - 2 * K) / 2];
    hist.push_back(h);
  }
  const auto p_short = power_law(space, 0.01), p_uniform = power_law(space, 1.0);
  EXPECT_LT(chi_square(hist[0], p_short), 55.5);
  EXPECT_LT(chi_square(hist[1], p_uniform), 55.5);
  EXPECT_GT(chi_square(hist[0], p_uniform), 500.0);
  EXPECT_GT(chi_square(hist[1], p_short), 500.0);
  // a = 0.01: p(0) = 1 / H(28) ≈ 0.257 of first queries come right after the kv block.
  EXPECT_NEAR(static_cast<double>(hist[0][0]) / M, p_short[0], 0.015);
}

// Later gaps follow successive sampling without replacement (numpy choice(replace=False, p)):
// P(g_1 = a, g_2 = b) = p_a p_b / (1 - p_a). space = 3, K = 2 gives 6 ordered pairs (5 d.o.f.,
// 0.1% critical value 20.5). Independent draws or a uniform pick of the second gap fail here.
TEST(Mqar, GapPairsFollowSuccessiveSamplingWithoutReplacement) {
  const int64_t L = 10, K = 2, M = 30000, space = 3;
  const auto p = power_law(space, 0.2);
  const Segment seg = ssmlab::tasks::make_mqar_segment(small_config(16, 0.2), {L, K, M}, /*seed=*/9);
  std::vector<int64_t> counts(space * space, 0);
  const int64_t* in = seg.inputs.data_ptr<int64_t>();
  for (int64_t m = 0; m < M; ++m) {
    const Example ex = decode(in + m * L, L, K);
    const int64_t a = (ex.query_pos[0] - 2 * K) / 2, b = (ex.query_pos[1] - 2 * K) / 2;
    ASSERT_NE(a, b);
    ++counts[a * space + b];
  }
  std::vector<int64_t> observed;
  std::vector<double> expected;
  for (int64_t a = 0; a < space; ++a)
    for (int64_t b = 0; b < space; ++b)
      if (a != b) {
        observed.push_back(counts[a * space + b]);
        expected.push_back(p[a] * p[b] / (1.0 - p[a]));
      }
  EXPECT_LT(chi_square(observed, expected), 20.5);
}

TEST(Mqar, RandomNonQueriesFillsZerosFromTheSameRng) {
  const int64_t V = 128, L = 64, K = 4, M = 300;
  MqarConfig plain = small_config(V), noisy = small_config(V);
  noisy.random_non_queries = true;
  const Segment a = ssmlab::tasks::make_mqar_segment(plain, {L, K, M}, 21);
  const Segment b = ssmlab::tasks::make_mqar_segment(noisy, {L, K, M}, 21);
  // Row 0 draws keys, values and gaps before any filler token, so its structure is shared.
  EXPECT_TRUE(at::equal(a.targets[0], b.targets[0]));
  EXPECT_TRUE(at::equal(a.inputs[0].slice(0, 0, 2 * K), b.inputs[0].slice(0, 0, 2 * K)));
  const at::Tensor query = a.targets.ne(kIgnoreIndex);                  // (M, L) bool
  const at::Tensor filler = a.inputs.eq(0);                             // (M, L) bool, zeros in plain
  EXPECT_TRUE(at::equal(b.inputs[0].masked_select(query[0]), a.inputs[0].masked_select(query[0])));
  EXPECT_TRUE(b.inputs.ge(0).all().item<bool>() && b.inputs.lt(V).all().item<bool>());
  // Fillers become uniform tokens: about 1/V of them stay 0, and many distinct tokens appear.
  const double zero_frac = b.inputs.eq(0).sum().item<double>() / filler.sum().item<double>();
  EXPECT_LT(zero_frac, 5.0 / V);
  EXPECT_GT(std::get<0>(at::_unique(b.inputs.masked_select(filler))).numel(), 100);  // of 128 tokens
  // Every query still carries a key whose value (from the kv block) is its target.
  const int64_t* in = b.inputs.data_ptr<int64_t>();
  const int64_t* tg = b.targets.data_ptr<int64_t>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t t = 2 * K; t < L; ++t) {
      if (tg[m * L + t] == kIgnoreIndex) continue;
      int64_t paired = -1;
      for (int64_t i = 0; i < K; ++i)
        if (in[m * L + 2 * i] == in[m * L + t]) paired = in[m * L + 2 * i + 1];
      ASSERT_EQ(paired, tg[m * L + t]) << "row " << m << " position " << t;
    }
}

TEST(Mqar, SameSeedSameTensorsDifferentSeedDifferent) {
  const MqarConfig cfg = small_config(256);
  const MqarSegmentSpec spec{128, 8, 50};
  const Segment a = ssmlab::tasks::make_mqar_segment(cfg, spec, 42);
  const Segment b = ssmlab::tasks::make_mqar_segment(cfg, spec, 42);
  const Segment c = ssmlab::tasks::make_mqar_segment(cfg, spec, 43);
  EXPECT_TRUE(at::equal(a.inputs, b.inputs));
  EXPECT_TRUE(at::equal(a.targets, b.targets));
  EXPECT_FALSE(at::equal(a.inputs, c.inputs));
  EXPECT_FALSE(at::equal(a.targets, c.targets));
}

TEST(Mqar, SplitsSeedEachSegmentFromTheSplitRngTrainFirst) {
  MqarConfig cfg = small_config(64);
  cfg.seed = 7;
  cfg.train = {{16, 2, 10}, {16, 2, 10}, {32, 4, 5}};
  cfg.test = {{16, 2, 10}, {32, 8, 3}};
  const auto splits = ssmlab::tasks::make_mqar_splits(cfg);
  ASSERT_EQ(splits.train.size(), 3u);
  ASSERT_EQ(splits.test.size(), 2u);
  EXPECT_EQ(splits.train[0].name, "L16_K2");
  EXPECT_EQ(splits.train[1].name, "L16_K2_2");
  EXPECT_EQ(splits.train[2].name, "L32_K4");
  EXPECT_EQ(splits.test[0].name, "L16_K2");  // names are unique within a split
  EXPECT_EQ(splits.test[1].name, "L32_K8");

  ssmlab::Rng split_rng(7);
  std::vector<uint64_t> seeds;
  for (int i = 0; i < 5; ++i) seeds.push_back(split_rng.fork_seed());
  const std::vector<std::pair<const Segment*, MqarSegmentSpec>> all = {
      {&splits.train[0], cfg.train[0]}, {&splits.train[1], cfg.train[1]}, {&splits.train[2], cfg.train[2]},
      {&splits.test[0], cfg.test[0]},   {&splits.test[1], cfg.test[1]}};
  for (size_t i = 0; i < all.size(); ++i) {
    const Segment expect = ssmlab::tasks::make_mqar_segment(cfg, all[i].second, seeds[i]);
    EXPECT_TRUE(at::equal(all[i].first->inputs, expect.inputs)) << "segment " << i;
    EXPECT_TRUE(at::equal(all[i].first->targets, expect.targets)) << "segment " << i;
  }
  // Same spec, different seeds: the repeated train segment and the test twin are new data.
  EXPECT_FALSE(at::equal(splits.train[0].inputs, splits.train[1].inputs));
  EXPECT_FALSE(at::equal(splits.train[0].inputs, splits.test[0].inputs));

  cfg.seed = 8;
  EXPECT_FALSE(at::equal(ssmlab::tasks::make_mqar_splits(cfg).train[0].inputs, splits.train[0].inputs));
}

void expect_error(const MqarConfig& cfg, const MqarSegmentSpec& spec, const std::vector<std::string>& parts) {
  try {
    ssmlab::tasks::check_mqar_segment(cfg, spec);
    FAIL() << "expected ssmlab::Error for " << ssmlab::tasks::mqar_segment_name(spec);
  } catch (const ssmlab::Error& e) {
    const std::string what = e.what();
    for (const auto& part : parts) EXPECT_NE(what.find(part), std::string::npos) << "'" << part << "' in: " << what;
  }
  EXPECT_THROW(ssmlab::tasks::make_mqar_segment(cfg, spec, 0), ssmlab::Error);
}

TEST(Mqar, ValidationNamesSegmentAndBrokenRule) {
  const MqarConfig cfg = small_config(128);
  EXPECT_NO_THROW(ssmlab::tasks::check_mqar_segment(cfg, {64, 16, 1}));  // 4K == L is allowed
  expect_error(cfg, {63, 4, 10}, {"L63_K4", "even", "63"});
  expect_error(small_config(64), {64, 4, 10}, {"L64_K4", "vocab_size must exceed seq_len", "64"});
  expect_error(small_config(60), {64, 4, 10}, {"vocab_size must exceed seq_len", "60"});
  expect_error(cfg, {64, 17, 10}, {"L64_K17", "4 * num_kv_pairs <= seq_len", "68"});
  expect_error(cfg, {64, 0, 10}, {"num_kv_pairs must be >= 1"});
  expect_error(cfg, {64, 4, 0}, {"count"});
  expect_error(small_config(128, /*power_a=*/0.0), {64, 4, 10}, {"power_a"});
}

TEST(Mqar, SplitsValidateEverySegmentFirst) {
  MqarConfig cfg = small_config(128);
  cfg.train = {{64, 4, 10}};
  cfg.test = {{64, 4, 10}, {62, 16, 10}};
  EXPECT_THROW(ssmlab::tasks::make_mqar_splits(cfg), ssmlab::Error);
}

TEST(Mqar, DefaultConfigIsTheMultiDepthMixture) {
  const MqarConfig cfg;
  int64_t examples = 0;
  std::set<std::pair<int64_t, int64_t>> lk;
  for (const auto& s : cfg.train) {
    examples += s.count;
    lk.insert({s.seq_len, s.num_kv_pairs});
    EXPECT_NO_THROW(ssmlab::tasks::check_mqar_segment(cfg, s));
  }
  EXPECT_EQ(cfg.train.size(), 11u);
  EXPECT_EQ(examples, 300000);
  EXPECT_EQ(cfg.train.front().count, 100000);
  EXPECT_TRUE(lk.count({1024, 256}) && lk.count({512, 32}) && lk.count({128, 8}));
  ASSERT_EQ(cfg.test.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(cfg.test[i].seq_len, 1024);
    EXPECT_EQ(cfg.test[i].num_kv_pairs, 64 << i);
    EXPECT_EQ(cfg.test[i].count, 1000);
  }
  EXPECT_EQ(cfg.vocab_size, 8192);
  EXPECT_DOUBLE_EQ(cfg.power_a, 0.01);
  EXPECT_FALSE(cfg.random_non_queries);
  EXPECT_EQ(cfg.seed, 123);
}

struct NameCollector {
  std::vector<std::string> names;
  template <class T>
  void operator()(const char* name, T&, const char*, const ssmlab::Check& = {}) {
    names.push_back(name);
  }
};

TEST(Mqar, ConfigVisitListsEveryFieldOnce) {
  static_assert(ssmlab::Visitable<MqarConfig> && ssmlab::Visitable<MqarSegmentSpec>);
  MqarConfig cfg;
  NameCollector v;
  cfg.visit(v);
  EXPECT_EQ(v.names, (std::vector<std::string>{"vocab_size", "power_a", "random_non_queries", "seed", "train", "test"}));
  MqarSegmentSpec spec;
  NameCollector w;
  spec.visit(w);
  EXPECT_EQ(w.names, (std::vector<std::string>{"seq_len", "num_kv_pairs", "count"}));
}

// 50,000 examples of L = 64 should take well under a second (measured ~0.02 s); the bound is
// loose for busy machines but still catches a per-element-indexing or O(n k) regression.
TEST(Mqar, GeneratesFiftyThousandShortExamplesQuickly) {
  const auto t0 = std::chrono::steady_clock::now();
  const Segment seg = ssmlab::tasks::make_mqar_segment(MqarConfig{}, {64, 4, 50000}, 1);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(seg.inputs.size(0), 50000);
  EXPECT_LT(s, 1.0);
  RecordProperty("seconds", std::to_string(s));
}

}  // namespace

}  // namespace tasks_test_mqar
