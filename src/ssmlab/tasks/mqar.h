// MQAR: multi-query associative recall (Arora, Eyuboglu et al., "Zoology", 2023), generated as
// zoology/data/multiquery_ar.py does (spec §2.8.1), with ssmlab::Rng in place of numpy's global RNG.
//
// Each example shows K key-value pairs, then queries each key once at a power-law distributed
// distance; the model must emit the paired value at the query position.
//   keys    K distinct tokens from {1, ..., V/2 - 1}        (0 is the filler token)
//   values  K distinct tokens from {V/2, ..., V - 1}
//   kv block (2K tokens): [k_1 v_1 k_2 v_2 ... k_K v_K]
//   gaps    K distinct g_i from {0, ..., space - 1}, space = (L - 2K) / 2, drawn one after another
//           with p(g) ∝ power_a * (g + 1)^(power_a - 1) (numpy choice(replace=False, p)); power_a
//           = 0.01 puts queries right after the kv block, power_a = 1 is uniform.
//   inputs  [kv block, zeros] with inputs[2K + 2 g_i] = k_i                          (L tokens)
//   targets kIgnoreIndex everywhere except targets[2K + 2 g_i] = v_i                 (L tokens)
// zoology builds labels of length L + 1 with v_i at 2K + 2 g_i + 1 and shifts them by one
// (targets = labels[1:]); we write the shifted result directly: targets[t] is the label of
// position t + 1, so the target sits on the query token itself.
//
// Worked example: V = 16, L = 12, K = 2 (keys from 1..7, values from 8..15, space = 4).
//   keys = [3, 5], values = [12, 9], gaps = [2, 0]  ->  queries at 4 + 2*2 = 8 and 4 + 2*0 = 4
//   pos       0   1   2   3   4   5   6   7   8   9  10  11
//   inputs    3  12   5   9   5   0   0   0   3   0   0   0
//   targets   .   .   .   .   9   .   .   .  12   .   .   .      (. = kIgnoreIndex = -100)
// With random_non_queries every 0 input becomes a uniform token in [0, V) (zoology's
// RAND_PLACEHOLDER option; off in the seed experiment, spec §2.8.1).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ssmlab/core/fields.h"
#include "ssmlab/tasks/task.h"

namespace ssmlab::tasks {

struct MqarSegmentSpec {
  int64_t seq_len = 64;
  int64_t num_kv_pairs = 4;
  int64_t count = 1000;

  template <class V>
  void visit(V& v) {
    v("seq_len", seq_len, "tokens per example L (even, < vocab_size)", Check::at_least(2));
    v("num_kv_pairs", num_kv_pairs, "key-value pairs K per example (4K <= L)", Check::at_least(1));
    v("count", count, "examples in this segment", Check::at_least(1));
  }
};

struct MqarConfig {
  int64_t vocab_size = 8192;
  // The seed configs pass train_power_a/test_power_a, which zoology silently ignores, so the
  // default 0.01 is what every published run used (spec §2.8.1).
  double power_a = 0.01;
  bool random_non_queries = false;
  int64_t seed = 123;
  // Multi-depth MQAR train mixture, concatenated in this order (spec §2.8.2): 300,000 examples.
  std::vector<MqarSegmentSpec> train = {
      {64, 4, 100000},   {128, 8, 20000},   {256, 16, 20000},  {256, 32, 20000},
      {256, 64, 20000},  {512, 32, 20000},  {512, 64, 20000},  {512, 128, 20000},
      {1024, 64, 20000}, {1024, 128, 20000}, {1024, 256, 20000}};
  // Test: L = 1024 with K = L/16, L/8, L/4 (spec §2.8.2).
  std::vector<MqarSegmentSpec> test = {{1024, 64, 1000}, {1024, 128, 1000}, {1024, 256, 1000}};

  template <class V>
  void visit(V& v) {
    v("vocab_size", vocab_size, "vocabulary size V: keys 1..V/2-1, values V/2..V-1, filler 0",
      Check::at_least(3));
    v("power_a", power_a, "power-law exponent a of the query gap p(g) ~ a (g+1)^(a-1); 1 = uniform",
      Check::positive());
    v("random_non_queries", random_non_queries, "replace filler zeros by uniform random tokens");
    v("seed", seed, "seed of the split Rng that hands each segment its seed");
    v("train", train, "training segments, in order");
    v("test", test, "test segments");
  }
};

// Validates spec against cfg: L even, vocab_size > L, 4K <= L, K <= V/2 - 1 keys and K <= V - V/2
// values available, count >= 1, power_a > 0. Throws ssmlab::Error naming the segment and the rule.
void check_mqar_segment(const MqarConfig& cfg, const MqarSegmentSpec& spec);

// "L{seq_len}_K{num_kv_pairs}", e.g. "L1024_K64".
std::string mqar_segment_name(const MqarSegmentSpec& spec);

// One segment generated from `seed` (deterministic): inputs/targets (count, seq_len) int64 on CPU.
Segment make_mqar_segment(const MqarConfig& cfg, const MqarSegmentSpec& spec, uint64_t seed);

// Train and test segments: a split Rng seeded with cfg.seed hands each segment its own seed
// (train segments first, then test ones), like zoology's per-segment seeds (spec §2.4). Names
// repeated within a split get "_2", "_3", ... appended.
struct MqarSplits {
  std::vector<Segment> train, test;
};
MqarSplits make_mqar_splits(const MqarConfig& cfg);

// MQAR behind the Task interface: token inputs, per-position targets, the tied LM head over vocab_size.
class MqarTask : public Task {
 public:
  explicit MqarTask(MqarConfig cfg) : cfg_(std::move(cfg)) {}
  std::string name() const override;
  TaskShape shape() const override;
  Splits make_splits() const override;
  std::vector<Segment> make_test() const override;  // generates no training data
  const MqarConfig& config() const { return cfg_; }

 private:
  MqarConfig cfg_;
};

}  // namespace ssmlab::tasks
