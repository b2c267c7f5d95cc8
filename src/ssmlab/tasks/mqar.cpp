// MQAR generator (spec §2.8.1, zoology/data/multiquery_ar.py). Layout and worked example: mqar.h.
#include "ssmlab/tasks/mqar.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "ssmlab/core/error.h"
#include "ssmlab/core/rng.h"

namespace ssmlab::tasks {
namespace {

// k distinct integers from [lo, hi) in draw order, uniform over ordered k-subsets (numpy's
// choice(replace=False) without p). Rejection against a stamp table: O(k) per call, where
// rejection against the drawn list would be O(k^2) (K = 256 keys x 20,000 examples per segment).
// Validation gives K <= L/4 < V/4 against pools of about V/2 tokens, so at most about half a pool
// is taken and a draw needs fewer than two tries on average.
class DistinctSampler {
 public:
  DistinctSampler(int64_t lo, int64_t hi) : lo_(lo), stamp_(static_cast<size_t>(hi - lo), 0) {}

  void draw(Rng& rng, int64_t k, int64_t* out) {
    if (++epoch_ == 0) {  // wrapped: old stamps could alias the new epoch
      std::fill(stamp_.begin(), stamp_.end(), 0);
      epoch_ = 1;
    }
    const int64_t n = static_cast<int64_t>(stamp_.size());
    for (int64_t i = 0; i < k;) {
      const int64_t v = rng.randint(0, n);
      if (stamp_[v] == epoch_) continue;
      stamp_[v] = epoch_;
      out[i++] = lo_ + v;
    }
  }

 private:
  int64_t lo_;
  std::vector<uint32_t> stamp_;
  uint32_t epoch_ = 0;
};

// Successive weighted sampling without replacement over fixed weights (numpy's
// choice(replace=False, p): each draw picks among the remaining items in proportion to their
// weight). A Fenwick tree makes a draw O(log n) where a linear scan
// scans all n items: K = 256 draws over space = 256 gaps x 20,000 examples would cost ~1.3e9
// steps for one L = 1024 segment. The tree over the full weights is built once per segment and
// copied per example.
class GapSampler {
 public:
  explicit GapSampler(const std::vector<double>& weights)
      : n_(static_cast<int64_t>(weights.size())), weights_(weights) {
    while (top_ * 2 <= n_) top_ *= 2;
    // Slots past n_ hold +inf, so the descent never steps past the end and needs no bounds check.
    base_.assign(static_cast<size_t>(2 * top_), std::numeric_limits<double>::infinity());
    base_[0] = 0.0;
    for (int64_t i = 1; i <= n_; ++i) base_[i] = 0.0;
    for (int64_t i = 0; i < n_; ++i) {  // O(n) Fenwick build
      base_[i + 1] += weights_[i];
      const int64_t parent = (i + 1) + ((i + 1) & -(i + 1));
      if (parent <= n_) base_[parent] += base_[i + 1];
    }
  }

  void draw(Rng& rng, int64_t k, int64_t* out) {
    tree_ = base_;
    cur_ = weights_;
    for (int64_t d = 0; d < k; ++d) {
      const double r = rng.uniform() * prefix(n_);  // prefix(n_): the remaining mass, from the tree
      int64_t pos = 0;  // largest pos with prefix(pos) <= r, so item pos holds r
      double rem = r;
      for (int64_t step = top_; step > 0; step /= 2) {
        const double node = tree_[pos + step];
        const bool take = node <= rem;
        rem -= take ? node : 0.0;
        pos += take ? step : 0;
      }
      if (pos >= n_ || cur_[pos] <= 0.0) pos = scan(r);  // rounding put r on a taken item
      out[d] = pos;
      for (int64_t i = pos + 1; i <= n_; i += i & -i) tree_[i] -= cur_[pos];
      cur_[pos] = 0.0;
    }
  }

 private:
  double prefix(int64_t end) const {
    double s = 0.0;
    for (int64_t i = end; i > 0; i -= i & -i) s += tree_[i];
    return s;
  }
  // Linear fallback: the remaining item whose cumulative weight interval holds r (else the last).
  int64_t scan(double r) const {
    double acc = 0.0;
    int64_t pick = -1;
    for (int64_t i = 0; i < n_; ++i) {
      if (cur_[i] <= 0.0) continue;
      acc += cur_[i];
      pick = i;
      if (r < acc) break;
    }
    return pick;
  }

  int64_t n_, top_ = 1;
  std::vector<double> weights_, base_, tree_, cur_;
};

}  // namespace

std::string mqar_segment_name(const MqarSegmentSpec& spec) {
  return str("L", spec.seq_len, "_K", spec.num_kv_pairs);
}

void check_mqar_segment(const MqarConfig& cfg, const MqarSegmentSpec& spec) {
  const int64_t V = cfg.vocab_size, L = spec.seq_len, K = spec.num_kv_pairs;
  const std::string where = str("MQAR segment ", mqar_segment_name(spec), " (vocab_size ", V, "): ");
  SSMLAB_CHECK(L >= 2 && L % 2 == 0, where, "seq_len must be even and >= 2 (queries sit on even offsets "
               "after the kv block); got seq_len = ", L);
  SSMLAB_CHECK(V > L, where, "vocab_size must exceed seq_len (zoology asserts vocab_size > input_seq_len); got "
               "vocab_size = ", V, " <= seq_len = ", L);
  SSMLAB_CHECK(K >= 1, where, "num_kv_pairs must be >= 1; got ", K);
  // K <= L / 4 is 4K <= L without the product, which overflows for K near INT64_MAX.
  SSMLAB_CHECK(K <= L / 4, where, "needs 4 * num_kv_pairs <= seq_len (2K kv tokens plus K query gaps of 2 "
               "tokens); got 4 * ", K, " = ",
               K <= INT64_MAX / 4 ? std::to_string(4 * K) : std::string("more than 2^63"),
               " > seq_len = ", L);
  // Implied by V > L >= 4K; kept so the samplers' pool sizes are checked where they are defined.
  SSMLAB_CHECK(K <= V / 2 - 1, where, "num_kv_pairs must be <= the ", V / 2 - 1, " keys in 1..vocab_size/2-1; got ",
               K);
  SSMLAB_CHECK(K <= V - V / 2, where, "num_kv_pairs must be <= the ", V - V / 2,
               " values in vocab_size/2..vocab_size-1; got ", K);
  SSMLAB_CHECK(spec.count >= 1, where, "count must be >= 1 example; got ", spec.count);
  SSMLAB_CHECK(cfg.power_a > 0.0 && std::isfinite(cfg.power_a), where,
               "power_a must be positive and finite (gap weights a (g+1)^(a-1)); got ", cfg.power_a);
}

Segment make_mqar_segment(const MqarConfig& cfg, const MqarSegmentSpec& spec, uint64_t seed) {
  check_mqar_segment(cfg, spec);
  const int64_t V = cfg.vocab_size, L = spec.seq_len, K = spec.num_kv_pairs, M = spec.count;
  const int64_t ctx = 2 * K;            // kv block length
  const int64_t space = (L - ctx) / 2;  // number of possible query gaps (>= K by validation)

  // Power law over the gap index (zoology: p = a * arange(1, space+1) ** (a-1)); unnormalised,
  // the sampler divides by the remaining mass.
  std::vector<double> weights(static_cast<size_t>(space));
  for (int64_t g = 0; g < space; ++g) {
    weights[g] = cfg.power_a * std::pow(static_cast<double>(g + 1), cfg.power_a - 1.0);
  }

  Rng rng(seed);
  DistinctSampler key_sampler(/*lo=*/1, /*hi=*/V / 2);   // keys 1..V/2-1
  DistinctSampler value_sampler(/*lo=*/V / 2, /*hi=*/V);  // values V/2..V-1
  GapSampler gap_sampler(weights);

  at::Tensor inputs = at::zeros({M, L}, at::kLong);                // (M, L): filler 0
  at::Tensor targets = at::full({M, L}, kIgnoreIndex, at::kLong);  // (M, L)
  int64_t* in = inputs.data_ptr<int64_t>();
  int64_t* tg = targets.data_ptr<int64_t>();
  std::vector<int64_t> keys(K), values(K), gaps(K);

  for (int64_t m = 0; m < M; ++m) {
    int64_t* row_in = in + m * L;
    int64_t* row_tg = tg + m * L;
    key_sampler.draw(rng, K, keys.data());
    value_sampler.draw(rng, K, values.data());
    gap_sampler.draw(rng, K, gaps.data());  // one gap per key, in key order
    for (int64_t i = 0; i < K; ++i) {
      row_in[2 * i] = keys[i];  // kv block [k_1 v_1 k_2 v_2 ...]
      row_in[2 * i + 1] = values[i];
      const int64_t q = ctx + 2 * gaps[i];  // query position; q <= L - 2
      row_in[q] = keys[i];
      row_tg[q] = values[i];  // labels[q + 1] = v_i shifted by one (targets = labels[1:])
    }
    if (cfg.random_non_queries) {
      // Keys are >= 1 and values >= V/2, so the zeros are exactly the filler tokens.
      for (int64_t t = 0; t < L; ++t) {
        if (row_in[t] == 0) row_in[t] = rng.randint(0, V);
      }
    }
  }

  Segment seg;
  seg.name = mqar_segment_name(spec);
  seg.inputs = inputs;
  seg.targets = targets;
  seg.seq_len = L;
  return seg;
}

namespace {

// Draws one seed per segment from the split Rng (train segments first, then test ones) and generates the
// segments of `specs` whose `wanted` flag is set; names repeated within a split get "_2", "_3", ...
std::vector<Segment> build_split(const MqarConfig& cfg, const std::vector<MqarSegmentSpec>& specs, Rng& split_rng,
                                 bool wanted) {
  std::vector<Segment> out;
  std::map<std::string, int> seen;
  for (const auto& spec : specs) {
    const uint64_t seed = split_rng.fork_seed();
    if (!wanted) continue;
    Segment seg = make_mqar_segment(cfg, spec, seed);
    const int n = ++seen[seg.name];
    if (n > 1) seg.name += str("_", n);
    out.push_back(std::move(seg));
  }
  return out;
}

}  // namespace

MqarSplits make_mqar_splits(const MqarConfig& cfg) {
  for (const auto& s : cfg.train) check_mqar_segment(cfg, s);  // fail before generating anything
  for (const auto& s : cfg.test) check_mqar_segment(cfg, s);
  Rng split_rng(static_cast<uint64_t>(cfg.seed));
  MqarSplits splits;
  splits.train = build_split(cfg, cfg.train, split_rng, /*wanted=*/true);  // train seeds are drawn first
  splits.test = build_split(cfg, cfg.test, split_rng, /*wanted=*/true);
  return splits;
}

std::string MqarTask::name() const { return "mqar"; }

TaskShape MqarTask::shape() const {
  TaskShape s;
  s.input = InputKind::tokens;
  s.vocab_size = cfg_.vocab_size;
  s.target = TargetKind::per_position;
  s.num_outputs = cfg_.vocab_size;
  return s;
}

Splits MqarTask::make_splits() const {
  MqarSplits m = make_mqar_splits(cfg_);
  return Splits{std::move(m.train), std::move(m.test)};
}

std::vector<Segment> MqarTask::make_test() const {
  for (const auto& s : cfg_.test) check_mqar_segment(cfg_, s);
  Rng split_rng(static_cast<uint64_t>(cfg_.seed));
  build_split(cfg_, cfg_.train, split_rng, /*wanted=*/false);  // the train seeds come first
  return build_split(cfg_, cfg_.test, split_rng, /*wanted=*/true);
}

}  // namespace ssmlab::tasks
