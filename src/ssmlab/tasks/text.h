// Language modelling on real text (the state-collapse lab, spec §3; issue 18): a corpus (text/corpus.h) tokenised
// once into a memory-mapped token file (text/token_file.h) by a tokenizer (text/tokenizer.h: gpt2 BPE or bytes),
// split by document into train and validation, then cut into windows of T + 1 consecutive tokens, T = seq_len x
// segments (T_train, train_length()):
//   inputs  (M, T) int64  tokens w[0 .. T-1] of a window
//   targets (M, T) int64  w[1 .. T]: every position predicts the next token (all counted)
// With segments = P > 1 a training example is P consecutive segments of seq_len tokens that the trainer runs in
// order with the state carried and detached between them (truncated BPTT, Segment::bptt_segments); validation
// windows have the same T and are evaluated in one forward (the values are the same).
// windows = "across" (default): the split's documents form one stream (each followed by the end-of-text id,
// gpt2's <|endoftext|> = 50256; byte has none, so byte documents simply abut) tiled by windows starting at
// k T, k = 0 .. floor((N - 1) / T) - 1 for a split of N tokens; windows cross document boundaries, so any L
// has data. windows = "within": each document (with its end-of-text id) tiled alone the same way; shorter
// documents give none. train_count / test_count windows are drawn without repeats from the tiling by a seeded
// permutation (ssmlab::Rng from `seed`: one child seed per split); 0 takes them all (also permuted, since the
// trainer never reshuffles). The vocabulary size, and so the model's, is the tokenizer's. Test metrics:
// next-token accuracy, loss and perplexity (test_ppl) over the validation windows (segment "validation").
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ssmlab/core/fields.h"
#include "ssmlab/tasks/task.h"
#include "ssmlab/text/token_file.h"
#include "ssmlab/text/tokenizer.h"

namespace ssmlab::tasks {

struct TextConfig {
  text::CorpusOptions corpus;
  text::TokenizerOptions tokenizer;
  std::string cache_dir = ".data/tokens";
  int64_t seq_len = 256;
  int64_t train_count = 0;
  int64_t test_count = 0;
  double validation_fraction = 0.05;
  int64_t seed = 123;
  std::string windows = "across";
  int64_t segments = 1;

  template <class V>
  void visit(V& v) {
    corpus.visit(v);
    tokenizer.visit(v);
    v("cache_dir", cache_dir, "folder of the token files (built once per corpus, tokenizer and split; reused)");
    v("seq_len", seq_len,
      "tokens per training segment L (windows hold L x segments + 1 tokens: inputs and shifted targets)",
      Check::at_least(1));
    v("segments", segments,
      "P consecutive segments of seq_len per example (truncated BPTT, spec §3.5): the trainer carries each "
      "layer's state across them, detached between segments; T_train = seq_len x segments",
      Check::at_least(1));
    v("train_count", train_count, "training windows; 0 = all (the split tiled by non-overlapping windows)",
      Check::at_least(0));
    v("test_count", test_count, "validation windows; 0 = all", Check::at_least(0));
    v("validation_fraction", validation_fraction,
      "fraction of the documents held out for validation (split by document, seeded)",
      Check{0.0, 1.0, /*min_open=*/true, /*max_open=*/true});
    v("seed", seed, "seed of the document split and of the window draws", Check::at_least(0));
    v("windows", windows,
      "across: windows run through the split's document stream (documents end with the end-of-text id); "
      "within: each window inside one document",
      Check::one_of({"across", "within"}));
  }

  text::TokenFileOptions token_file_options() const;
  // T_train, the effective training length: seq_len x segments (the tokens a training example spans; the
  // run's config.toml holds both keys, task.text.seq_len and task.text.segments).
  int64_t train_length() const { return seq_len * segments; }
};

void check_text_config(const TextConfig& cfg);

// Window starts (token positions) of one split of tf, as `windows` tiles it: split 0 = train, 1 = validation.
std::vector<int64_t> text_window_starts(const text::TokenFile& tf, int split, int64_t seq_len, bool within);

// A segment of `count` windows (0 = all) drawn from starts by a permutation seeded with `seed`.
Segment make_text_segment(const text::TokenFile& tf, const std::vector<int64_t>& starts, int64_t seq_len,
                          int64_t count, uint64_t seed, const std::string& name);

class TextTask : public Task {
 public:
  explicit TextTask(TextConfig cfg);  // loads the tokenizer (DataError naming a bad file)
  std::string name() const override { return "text"; }
  TaskShape shape() const override;  // tokens, per-position targets, vocabulary of the tokenizer
  Splits make_splits() const override;
  std::vector<Segment> make_test() const override;
  bool reports_perplexity() const override { return true; }
  const TextConfig& config() const { return cfg_; }
  const text::Tokenizer& tokenizer() const { return *tokenizer_; }
  text::TokenizerPtr tokenizer_ptr() const { return tokenizer_; }
  // The token file (built or reused on first use).
  std::shared_ptr<const text::TokenFile> token_file() const;

 private:
  Segment segment(int split) const;
  TextConfig cfg_;
  text::TokenizerPtr tokenizer_;
  mutable std::once_flag token_file_once_;
  mutable std::shared_ptr<const text::TokenFile> token_file_;
};

}  // namespace ssmlab::tasks
