// Needle in a haystack on a synthetic vocabulary (spec §2.3: the recency paper's Figure 2 at small scale, the
// passkey layout of spec §3.4 on fixed token ids instead of English text). One example of length L is
//   [PREFIX] [filler ...] [block] x n_blocks, block number floor(depth (n_blocks - 1)) replaced by the needle,
//   [QUERY] [k_1 ... k_d]
// where a block is a fixed run of `block_len` filler tokens (the "The grass is green ..." sentence: drawn once
// from the filler ids with the task seed), the needle is [NEEDLE k_1 ... k_d] followed by the block's tail, and
// k is a random `key_digits`-digit key. The model reads inputs = sequence[0 : L] and is scored on the key digits
// only: targets at the QUERY position and the d - 1 digits after it (all other targets kIgnoreIndex), so the
// teacher-forced argmax of every digit is right exactly when greedy decoding of d tokens would return the key.
// n_blocks = floor((L + 1 - 2 - d) / block_len); the remainder is filler right after PREFIX.
//
// Token ids: 0..9 the digits, 10 NEEDLE ("The passkey is"), 11 QUERY ("What is the pass key? The passkey is"),
// 12 PREFIX, 13..V-1 filler (V >= 16).
//
// Training segments draw depth uniformly in [0, 1); a test segment spec expands into `depth_bins` segments
// "L<len>_d<bin>", bin b holding `count` depths spread evenly inside [b / bins, (b + 1) / bins) (spec §3.4: depth
// of sample i = (i + 0.5) / n). The needle_grid analysis (analysis/needle.h) draws the same examples at any length.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ssmlab/core/fields.h"
#include "ssmlab/tasks/task.h"

namespace ssmlab::tasks {

inline constexpr int64_t kNeedleDigits = 10;  // ids 0..9
inline constexpr int64_t kNeedleMark = 10;
inline constexpr int64_t kNeedleQuery = 11;
inline constexpr int64_t kNeedlePrefix = 12;
inline constexpr int64_t kNeedleFirstFiller = 13;

struct NeedleSegmentSpec {
  int64_t seq_len = 256;
  int64_t count = 1000;  // train: examples; test: examples per depth bin

  template <class V>
  void visit(V& v) {
    v("seq_len", seq_len, "tokens per example L", Check::at_least(4));
    v("count", count, "examples (test: per depth bin)", Check::at_least(1));
  }
};

struct NeedleConfig {
  int64_t vocab_size = 64;
  int64_t key_digits = 5;
  int64_t block_len = 16;
  int64_t depth_bins = 10;
  int64_t seed = 123;
  std::vector<NeedleSegmentSpec> train = {{256, 20000}};
  std::vector<NeedleSegmentSpec> test = {{256, 50}};

  template <class V>
  void visit(V& v) {
    v("vocab_size", vocab_size, "token ids: 10 digits, 3 markers, the rest filler (>= 16)", Check::at_least(16));
    v("key_digits", key_digits, "digits of the key (the passkey's 5)", Check::at_least(1));
    v("block_len", block_len, "tokens per haystack block (>= key_digits + 1: the needle replaces one block)",
      Check::at_least(2));
    v("depth_bins", depth_bins, "test depth bins per length (spec §3.4: 10)", Check::at_least(1));
    v("seed", seed, "seed of the filler block, the keys and the depths", Check::at_least(0));
    v("train", train, "training segments (depths uniform in [0, 1))");
    v("test", test, "test lengths; each becomes depth_bins segments L<len>_d<bin> of `count` examples");
  }
};

// Throws naming the rule: block_len > key_digits, a length that holds at least one block.
void check_needle_config(const NeedleConfig& cfg);

// The fixed haystack block (block_len filler ids), drawn from the task seed.
std::vector<int64_t> needle_block(const NeedleConfig& cfg);

// One example per depth, keys drawn from `seed`: a Segment named `name` of inputs (M, L) and targets (M, L).
Segment make_needle_segment(const NeedleConfig& cfg, int64_t seq_len, const std::vector<double>& depths,
                            uint64_t seed, const std::string& name);

// The block index that holds the needle for `depth` in an example of length L (floor(depth (n_blocks - 1))),
// and the position of its NEEDLE token in the inputs.
int64_t needle_blocks(const NeedleConfig& cfg, int64_t seq_len);
int64_t needle_position(const NeedleConfig& cfg, int64_t seq_len, double depth);

// The evenly spread depths of test bin b of `bins`: (b + (i + 0.5) / count) / bins, i < count.
std::vector<double> needle_bin_depths(int64_t bin, int64_t bins, int64_t count);

class NeedleTask : public Task {
 public:
  explicit NeedleTask(NeedleConfig cfg);
  std::string name() const override { return "needle"; }
  TaskShape shape() const override;  // tokens, per position, vocab_size
  Splits make_splits() const override;
  std::vector<Segment> make_test() const override;
  const NeedleConfig& config() const { return cfg_; }

 private:
  NeedleConfig cfg_;
};

}  // namespace ssmlab::tasks
