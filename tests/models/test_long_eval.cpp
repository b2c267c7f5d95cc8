// Long-sequence evaluation (models/long_eval.h, LanguageModel::forward_stateful): the segmented path equals
// the one-shot forward (uneven segments, segment 1, L = 1, conv width 1, a mamba2 with its own state-norm
// periods), its states continue into step(), next_token_losses is forward's cross-entropy, mixers without a
// stateful forward are named in the error, and the working memory of a long run does not grow with L.
#include <atomic>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/CPUAllocator.h>

#include "ssmlab/models/long_eval.h"
#include "test_util.h"
#include "tolerances.h"

namespace models_test_long_eval {

namespace {

using ssmlab::models::LanguageModel;
using ssmlab::models::ModelOptions;
using ssmlab::test::all_close;

constexpr int64_t kVocab = 23;

struct Case {
  std::string name;
  std::string mixer;
  bool state_norm = false;  // mamba2 with state normalisation every 4 tokens (absolute positions)
  int64_t d_conv = 3;       // conv width W (W = 1: an empty conv state)
};
// Short names in ctest's list (gtest prints an unprintable parameter as its bytes).
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

ModelOptions options(const Case& c) {
  ModelOptions o;
  o.mixer = c.mixer;
  o.d_model = 16;
  o.n_layers = 2;
  o.mlp_expand = 2;  // the block's MLP sits on the segmented path too
  o.mixers.mamba1.d_state = 5;
  o.mixers.mamba1.d_conv = c.d_conv;
  o.mixers.mamba2.d_conv = c.d_conv;
  o.mixers.mamba2.d_state = 6;
  o.mixers.mamba2.head_dim = 8;  // E 32 -> H 4
  o.mixers.mamba2.n_groups = 2;
  o.mixers.mamba2.chunk_size = 4;
  o.mixers.mamba2.interventions.eval_segment = 5;  // the mixer's own pieces cross the model's segments
  if (c.state_norm) {
    o.mixers.mamba2.interventions.state_norm_tau = 0.05;
    o.mixers.mamba2.interventions.segment = 4;
  }
  return o;
}

LanguageModel model(const Case& c) {
  LanguageModel m(options(c), kVocab, "auto", 7);
  m->eval();
  m->to(at::kDouble);
  return m;
}

// Logits of tokens fed in pieces of the given lengths through forward_stateful.
at::Tensor in_pieces(LanguageModel& m, const at::Tensor& tokens, const std::vector<int64_t>& lengths) {
  at::NoGradGuard no_grad;
  auto states = m->init_state(tokens.size(0), at::kCPU);
  std::vector<at::Tensor> out;
  int64_t t0 = 0;
  for (int64_t l : lengths) {
    out.push_back(m->forward_stateful(tokens.narrow(1, t0, l), states));
    t0 += l;
  }
  EXPECT_EQ(t0, tokens.size(1));
  return at::cat(out, 1);
}

at::Tensor by_segments(LanguageModel& m, const at::Tensor& tokens, int64_t segment) {
  std::vector<at::Tensor> out;
  int64_t expected = 0;
  ssmlab::models::run_segments(*m, tokens, segment, [&](int64_t t0, const at::Tensor& logits) {
    EXPECT_EQ(t0, expected);
    EXPECT_LE(logits.size(1), segment);
    expected += logits.size(1);
    out.push_back(logits.clone());
  });
  return at::cat(out, 1);
}

class LongEval : public ::testing::TestWithParam<Case> {};

TEST_P(LongEval, SegmentsEqualOneShot) {
  LanguageModel m = model(GetParam());
  const at::Tensor tokens = at::randint(0, kVocab, {2, 37}, at::kLong);
  at::Tensor full;
  {
    at::NoGradGuard no_grad;
    full = m->forward(tokens);  // (2, 37, V)
  }
  const auto tol = ssmlab::test::kFp64Forward;
  EXPECT_TRUE(all_close(in_pieces(m, tokens, {5, 1, 13, 18}), full, tol, "pieces 5 1 13 18"));
  for (int64_t segment : {1, 3, 8, 37, 100})
    EXPECT_TRUE(all_close(by_segments(m, tokens, segment), full, tol, ssmlab::str("segment ", segment)));
  const at::Tensor one = tokens.narrow(1, 0, 1);  // L = 1
  at::Tensor full1;
  {
    at::NoGradGuard no_grad;
    full1 = m->forward(one);
  }
  EXPECT_TRUE(all_close(by_segments(m, one, 4), full1, tol, "L 1"));
}

// The carried states are the decoding states: step() after a segmented prefix continues the sequence.
TEST_P(LongEval, StatesContinueIntoStep) {
  LanguageModel m = model(GetParam());
  const at::Tensor tokens = at::randint(0, kVocab, {2, 20}, at::kLong);
  at::NoGradGuard no_grad;
  const at::Tensor full = m->forward(tokens);
  auto states = m->init_state(2, at::kCPU);
  ssmlab::models::run_segments(*m, tokens.narrow(1, 0, 14), 6, [](int64_t, const at::Tensor&) {}, &states);
  for (int64_t t = 14; t < 20; ++t)
    EXPECT_TRUE(all_close(m->step(tokens.select(1, t), states), full.select(1, t), ssmlab::test::kFp64Forward,
                          ssmlab::str("step at ", t)));
}

TEST_P(LongEval, NextTokenLossesAreForwardsCrossEntropy) {
  LanguageModel m = model(GetParam());
  const at::Tensor tokens = at::randint(0, kVocab, {3, 29}, at::kLong);
  at::Tensor expected;
  {
    at::NoGradGuard no_grad;
    const at::Tensor logp = at::log_softmax(m->forward(tokens), -1);  // (3, 29, V)
    expected = -logp.narrow(1, 0, 28).gather(-1, tokens.narrow(1, 1, 28).unsqueeze(-1)).squeeze(-1);
  }
  m->train();
  const at::Tensor losses = ssmlab::models::next_token_losses(*m, tokens, 6);
  EXPECT_TRUE(m->is_training()) << "run_segments restores the module's mode";
  EXPECT_EQ(losses.scalar_type(), at::kFloat);
  EXPECT_TRUE(all_close(losses, expected, ssmlab::test::kFp32Forward, "losses"));
  EXPECT_EQ(ssmlab::models::next_token_losses(*m, tokens.narrow(1, 0, 1), 4).sizes(), (at::IntArrayRef{3, 0}));
}

INSTANTIATE_TEST_SUITE_P(Mixers, LongEval,
                         ::testing::Values(Case{"mamba1", "mamba1"}, Case{"mamba2", "mamba2"},
                                           Case{"mamba2_state_norm", "mamba2", /*state_norm=*/true},
                                           Case{"mamba1_W1", "mamba1", false, /*d_conv=*/1},
                                           Case{"mamba2_W1", "mamba2", false, /*d_conv=*/1}),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

TEST(LongEvalErrors, MixersWithoutStatefulForwardAreNamed) {
  ModelOptions o;
  o.mixer = "attention";
  o.d_model = 16;
  o.mixers.attention.n_heads = 2;
  LanguageModel m(o, kVocab, "auto", 1);
  EXPECT_FALSE(m->supports_stateful());
  const at::Tensor tokens = at::randint(0, kVocab, {1, 8}, at::kLong);
  ssmlab::test::expect_error([&] { ssmlab::models::next_token_losses(*m, tokens, 4); },
                             {"mixer 'attention'", "forward_stateful"});
  auto states = m->init_state(1, at::kCPU);
  ssmlab::test::expect_error([&] { m->forward_stateful(tokens, states); }, {"'attention'", "mamba1, mamba2"});
  ssmlab::mixers::State s;
  ssmlab::test::expect_error([&] { m->blocks[0]->mixer->forward_stateful(at::zeros({1, 8, 16}), s); },
                             {"mixer 'attention' has no state-carrying forward"});
  LanguageModel ok(options({"mamba2", "mamba2"}), kVocab, "auto", 1);
  ssmlab::test::expect_error([&] { ssmlab::models::run_segments(*ok, tokens, 0, [](int64_t, const at::Tensor&) {}); },
                             {"segment must be >= 1"});
}

// Counts the bytes the CPU allocator hands out (current and peak) while installed.
class CountingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr inner = inner_->allocate(n);
    void* p = inner.get();
    const c10::Device dev = inner.device();
    auto* ctx = new Held{std::move(inner), static_cast<int64_t>(n), this};
    const int64_t now = current_.fetch_add(ctx->n) + ctx->n;
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    return {p, ctx, &CountingAllocator::release, dev};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
  // Installs this allocator over the current one; the peak is counted from here.
  void install() {
    inner_ = c10::GetCPUAllocator();
    peak_ = current_.load();
    c10::SetCPUAllocator(this, kPriority);
  }
  void uninstall() { c10::SetCPUAllocator(inner_, kPriority); }
  // Peak bytes above what was held at install().
  int64_t peak_above(int64_t base) const { return peak_.load() - base; }
  int64_t current() const { return current_.load(); }

 private:
  struct Held {
    c10::DataPtr inner;
    int64_t n;
    CountingAllocator* owner;
  };
  static void release(void* p) {
    auto* h = static_cast<Held*>(p);
    h->owner->current_ -= h->n;
    delete h;
  }
  static constexpr uint8_t kPriority = 100;
  c10::Allocator* inner_ = nullptr;
  std::atomic<int64_t> current_{0}, peak_{0};
};

// Peak bytes allocated while f runs, above what was held before.
template <class F>
int64_t peak_bytes(F&& f) {
  static CountingAllocator counter;  // outlives every tensor it allocated
  const int64_t base = counter.current();
  counter.install();
  f();
  counter.uninstall();
  return counter.peak_above(base);
}

// A 16x longer sequence in the same segments needs no more working memory beyond its (B, L-1) loss row;
// the one-shot forward at that length needs several times more (so the check can fail).
TEST(LongEvalMemory, PeakDoesNotGrowWithLength) {
  ModelOptions o = options({"mamba2", "mamba2"});
  o.mixers.mamba2.interventions.eval_segment = 4096;
  o.mixers.mamba2.chunk_size = 64;
  LanguageModel m(o, 64, "auto", 3);
  m->eval();
  const int64_t segment = 256, short_l = 2048, long_l = 16 * short_l;
  const at::Tensor long_tokens = at::randint(0, 64, {1, long_l}, at::kLong);
  const at::Tensor short_tokens = long_tokens.narrow(1, 0, short_l).clone();
  auto segmented = [&](const at::Tensor& t) {
    return peak_bytes([&] { ssmlab::models::next_token_losses(*m, t, segment); });
  };
  segmented(short_tokens);  // warm-up (one-time allocations of the first call)
  const int64_t peak_short = segmented(short_tokens);
  const int64_t peak_long = segmented(long_tokens);
  RecordProperty("peak_short_bytes", std::to_string(peak_short));
  RecordProperty("peak_long_bytes", std::to_string(peak_long));
  const int64_t loss_growth = 4 * (long_l - short_l);  // the fp32 loss row is the only O(L) result
  EXPECT_LE(peak_long, peak_short + loss_growth + peak_short / 4)
      << "segmented peak " << peak_long << " B at L " << long_l << " vs " << peak_short << " B at L " << short_l;
  const int64_t peak_one_shot = peak_bytes([&] {
    at::NoGradGuard no_grad;
    m->forward(long_tokens);
  });
  RecordProperty("peak_one_shot_bytes", std::to_string(peak_one_shot));
  EXPECT_GT(peak_one_shot, 4 * peak_long) << "one-shot peak " << peak_one_shot << " B; segmented " << peak_long;
}

}  // namespace

}  // namespace models_test_long_eval
