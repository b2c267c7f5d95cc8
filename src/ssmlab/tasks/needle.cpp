#include "ssmlab/tasks/needle.h"

#include <cmath>

#include <ATen/ATen.h>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/rng.h"

namespace ssmlab::tasks {

int64_t needle_blocks(const NeedleConfig& cfg, int64_t seq_len) {
  return (seq_len + 1 - 2 - cfg.key_digits) / cfg.block_len;
}

void check_needle_config(const NeedleConfig& cfg) {
  if (cfg.block_len <= cfg.key_digits)
    fail_config("block_len (", cfg.block_len, ") must exceed key_digits (", cfg.key_digits,
                "): the needle [NEEDLE k_1 .. k_d] replaces one block");
  if (cfg.vocab_size < kNeedleFirstFiller + 3)
    fail_config("vocab_size (", cfg.vocab_size, ") must be at least ", kNeedleFirstFiller + 3,
                " (10 digits, 3 markers, 3 filler ids)");
  if (cfg.train.empty() || cfg.test.empty()) fail_config("needs at least one train and one test segment");
  for (const auto* list : {&cfg.train, &cfg.test})
    for (const auto& s : *list)
      if (needle_blocks(cfg, s.seq_len) < 1)
        fail_config("seq_len ", s.seq_len, " holds no block of ", cfg.block_len, " tokens after PREFIX, QUERY and ",
                    cfg.key_digits, " key digits");
}

std::vector<int64_t> needle_block(const NeedleConfig& cfg) {
  Rng rng(static_cast<uint64_t>(cfg.seed) ^ 0x6e6565646c65ull);  // "needle": the block is not a segment stream
  std::vector<int64_t> block;
  for (int64_t i = 0; i < cfg.block_len; ++i) block.push_back(rng.randint(kNeedleFirstFiller, cfg.vocab_size));
  return block;
}

int64_t needle_position(const NeedleConfig& cfg, int64_t seq_len, double depth) {
  const int64_t n = needle_blocks(cfg, seq_len);
  const int64_t filler = seq_len + 1 - 2 - cfg.key_digits - n * cfg.block_len;
  const int64_t which = static_cast<int64_t>(std::floor(depth * static_cast<double>(n - 1)));
  return 1 + filler + std::clamp<int64_t>(which, 0, n - 1) * cfg.block_len;
}

Segment make_needle_segment(const NeedleConfig& cfg, int64_t seq_len, const std::vector<double>& depths,
                            uint64_t seed, const std::string& name) {
  check_needle_config(cfg);
  const int64_t M = static_cast<int64_t>(depths.size()), L = seq_len, d = cfg.key_digits;
  const int64_t n = needle_blocks(cfg, L);
  SSMLAB_CHECK(n >= 1, "needle: seq_len ", L, " holds no block");
  const std::vector<int64_t> block = needle_block(cfg);
  const int64_t filler = L + 1 - 2 - d - n * cfg.block_len;
  at::Tensor inputs = at::empty({M, L}, at::kLong), targets = at::full({M, L}, kIgnoreIndex, at::kLong);
  auto in = inputs.accessor<int64_t, 2>();
  auto tg = targets.accessor<int64_t, 2>();
  Rng rng(seed);
  std::vector<int64_t> seq(static_cast<size_t>(L + 1));
  for (int64_t m = 0; m < M; ++m) {
    std::vector<int64_t> key;
    for (int64_t j = 0; j < d; ++j) key.push_back(rng.randint(0, kNeedleDigits));
    size_t p = 0;
    seq[p++] = kNeedlePrefix;
    for (int64_t f = 0; f < filler; ++f) seq[p++] = block[static_cast<size_t>(f % cfg.block_len)];
    const int64_t at_pos = needle_position(cfg, L, depths[static_cast<size_t>(m)]);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t j = 0; j < cfg.block_len; ++j) seq[p++] = block[static_cast<size_t>(j)];
    seq[static_cast<size_t>(at_pos)] = kNeedleMark;
    for (int64_t j = 0; j < d; ++j) seq[static_cast<size_t>(at_pos + 1 + j)] = key[static_cast<size_t>(j)];
    seq[p++] = kNeedleQuery;
    for (int64_t j = 0; j < d; ++j) seq[p++] = key[static_cast<size_t>(j)];
    SSMLAB_CHECK(static_cast<int64_t>(p) == L + 1, "needle: layout of ", p, " tokens for L + 1 = ", L + 1);
    for (int64_t t = 0; t < L; ++t) in[m][t] = seq[static_cast<size_t>(t)];
    for (int64_t t = L - d; t < L; ++t) tg[m][t] = seq[static_cast<size_t>(t + 1)];
  }
  return Segment{name, inputs, targets, L};
}

std::vector<double> needle_bin_depths(int64_t bin, int64_t bins, int64_t count) {
  std::vector<double> depths;
  for (int64_t i = 0; i < count; ++i)
    depths.push_back((static_cast<double>(bin) + (static_cast<double>(i) + 0.5) / static_cast<double>(count)) /
                     static_cast<double>(bins));
  return depths;
}

NeedleTask::NeedleTask(NeedleConfig cfg) : cfg_(std::move(cfg)) { check_needle_config(cfg_); }

TaskShape NeedleTask::shape() const {
  return {InputKind::tokens, cfg_.vocab_size, 0, TargetKind::per_position, cfg_.vocab_size};
}

namespace {

// Per-segment seeds: train segments first, then one per test length (like seqimage's split Rng).
std::vector<uint64_t> segment_seeds(const NeedleConfig& cfg) {
  Rng rng(static_cast<uint64_t>(cfg.seed));
  std::vector<uint64_t> seeds;
  for (size_t i = 0; i < cfg.train.size() + cfg.test.size(); ++i) seeds.push_back(rng.fork_seed());
  return seeds;
}

std::vector<Segment> test_segments(const NeedleConfig& cfg, const std::vector<uint64_t>& seeds) {
  std::vector<Segment> out;
  for (size_t i = 0; i < cfg.test.size(); ++i) {
    const auto& s = cfg.test[i];
    Rng rng(seeds[cfg.train.size() + i]);
    for (int64_t b = 0; b < cfg.depth_bins; ++b)
      out.push_back(make_needle_segment(cfg, s.seq_len, needle_bin_depths(b, cfg.depth_bins, s.count),
                                        rng.fork_seed(),
                                        "L" + std::to_string(s.seq_len) + "_d" + std::to_string(b)));
  }
  return out;
}

}  // namespace

Splits NeedleTask::make_splits() const {
  const auto seeds = segment_seeds(cfg_);
  Splits s;
  for (size_t i = 0; i < cfg_.train.size(); ++i) {
    Rng rng(seeds[i]);
    std::vector<double> depths;
    for (int64_t m = 0; m < cfg_.train[i].count; ++m) depths.push_back(rng.uniform());
    s.train.push_back(make_needle_segment(cfg_, cfg_.train[i].seq_len, depths, rng.fork_seed(),
                                          i == 0 ? "train" : "train_" + std::to_string(i + 1)));
  }
  s.test = test_segments(cfg_, seeds);
  return s;
}

std::vector<Segment> NeedleTask::make_test() const { return test_segments(cfg_, segment_seeds(cfg_)); }

}  // namespace ssmlab::tasks
