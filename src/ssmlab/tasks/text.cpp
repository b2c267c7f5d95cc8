// Language modelling on a tokenised corpus (windows and splits: text.h).
#include "ssmlab/tasks/text.h"

#include <ATen/ATen.h>

#include <utility>

#include "ssmlab/core/error.h"
#include "ssmlab/core/rng.h"

namespace ssmlab::tasks {

text::TokenFileOptions TextConfig::token_file_options() const {
  text::TokenFileOptions o;
  o.corpus = corpus;
  o.cache_dir = cache_dir;
  o.validation_fraction = validation_fraction;
  o.split_seed = seed;
  return o;
}

void check_text_config(const TextConfig& cfg) {
  SSMLAB_CHECK(cfg.corpus.kind != "files" || !cfg.corpus.path.empty(),
               "corpus files needs a path: a text file or a folder of them");
  SSMLAB_CHECK(cfg.validation_fraction > 0.0 && cfg.validation_fraction < 1.0,
               "validation_fraction must be in (0, 1); got ", cfg.validation_fraction);
  SSMLAB_CHECK(cfg.seq_len >= 1, "seq_len must be >= 1; got ", cfg.seq_len);
  SSMLAB_CHECK(cfg.segments >= 1, "segments must be >= 1 (consecutive segments per example); got ", cfg.segments);
  SSMLAB_CHECK(!cfg.cache_dir.empty(), "cache_dir must name a folder");
}

std::vector<int64_t> text_window_starts(const text::TokenFile& tf, int split, int64_t seq_len, bool within) {
  SSMLAB_CHECK(split == 0 || split == 1, "text_window_starts: split must be 0 (train) or 1 (validation)");
  std::vector<int64_t> starts;
  const auto tile = [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s + seq_len + 1 <= end; s += seq_len) starts.push_back(s);
  };
  const int64_t d0 = split == 0 ? 0 : tf.num_train_documents();
  const int64_t d1 = split == 0 ? tf.num_train_documents() : tf.num_documents();
  if (within) {
    for (int64_t d = d0; d < d1; ++d) tile(tf.offset(d), tf.offset(d + 1));
  } else {
    tile(tf.offset(d0), tf.offset(d1));
  }
  return starts;
}

Segment make_text_segment(const text::TokenFile& tf, const std::vector<int64_t>& starts, int64_t seq_len,
                          int64_t count, uint64_t seed, const std::string& name) {
  const auto available = static_cast<int64_t>(starts.size());
  SSMLAB_CHECK(available > 0, "the ", name, " split of ", tf.manifest_path().string(), " holds no window of ",
               seq_len + 1, " tokens; lower seq_len, or use windows = \"across\" or a larger validation_fraction");
  const int64_t m = count == 0 ? available : count;
  SSMLAB_CHECK(m <= available, name, " asks for ", m, " windows of ", seq_len + 1, " tokens; the split of ",
               tf.manifest_path().string(), " holds ", available, " (use 0 for all)");
  std::vector<int64_t> order = starts;
  Rng rng(seed);
  for (int64_t i = available - 1; i > 0; --i)
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(rng.randint(0, i + 1))]);
  at::Tensor w = at::empty({m, seq_len + 1}, at::kLong);  // (M, L + 1)
  int64_t* p = w.data_ptr<int64_t>();
  for (int64_t i = 0; i < m; ++i) tf.read(order[static_cast<size_t>(i)], seq_len + 1, p + i * (seq_len + 1));
  Segment seg;
  seg.name = name;
  seg.inputs = w.narrow(1, 0, seq_len).contiguous();   // (M, L)
  seg.targets = w.narrow(1, 1, seq_len).contiguous();  // (M, L): the next token at every position
  seg.seq_len = seq_len;
  return seg;
}

TextTask::TextTask(TextConfig cfg) : cfg_(std::move(cfg)) {
  check_text_config(cfg_);
  tokenizer_ = text::make_tokenizer(cfg_.tokenizer);
}

TaskShape TextTask::shape() const {
  TaskShape s;
  s.input = InputKind::tokens;
  s.vocab_size = tokenizer_->vocab_size();
  s.target = TargetKind::per_position;
  s.num_outputs = tokenizer_->vocab_size();
  return s;
}

std::shared_ptr<const text::TokenFile> TextTask::token_file() const {
  std::call_once(token_file_once_, [&] {
    const auto manifest = text::ensure_token_file(cfg_.token_file_options(), *tokenizer_);
    auto tf = std::make_shared<const text::TokenFile>(manifest);
    SSMLAB_CHECK(tf->vocab_size() == tokenizer_->vocab_size(), manifest.string(), ": vocabulary ",
                 tf->vocab_size(), " differs from the tokenizer's ", tokenizer_->vocab_size());
    token_file_ = std::move(tf);
  });
  return token_file_;
}

Segment TextTask::segment(int split) const {
  const auto tf = token_file();
  Rng seeds(static_cast<uint64_t>(cfg_.seed));
  const uint64_t train_seed = seeds.fork_seed(), test_seed = seeds.fork_seed();
  const int64_t T = cfg_.train_length();
  const auto starts = text_window_starts(*tf, split, T, cfg_.windows == "within");
  Segment seg = split == 0 ? make_text_segment(*tf, starts, T, cfg_.train_count, train_seed, "train")
                           : make_text_segment(*tf, starts, T, cfg_.test_count, test_seed, "validation");
  seg.bptt_segments = cfg_.segments;
  return seg;
}

Splits TextTask::make_splits() const {
  Splits s;
  s.train.push_back(segment(0));
  s.test.push_back(segment(1));
  return s;
}

std::vector<Segment> TextTask::make_test() const { return {segment(1)}; }

}  // namespace ssmlab::tasks
