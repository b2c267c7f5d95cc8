// Packed variable-length sequences (selective_scan_varlen): against running every sequence on its own with
// the float64 reference (outputs, per-sequence final states, every gradient including the per-sequence
// initial states), on the reference and fused CPU backends and on CUDA where present; empty sequences;
// clear errors for malformed offsets.
#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "ops/selective_scan_naive.h"
#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"
#include "test_util.h"
#include "tolerances.h"

namespace ops_test_selective_scan_varlen {

namespace {

using ssmlab::test::opt;
using ssmlab::test::ScanFlags;
using ssmlab::test::ScanInputs;

struct Packed {
  ScanInputs in;       // u, delta, z (1, T, E); B, C (1, T, [G,] N); h0 (S, E, N) or undefined
  at::Tensor cu;       // (S + 1) int64
  std::vector<int64_t> lengths;
};

Packed make_packed(const std::vector<int64_t>& lengths, int64_t e, int64_t n, int64_t groups, const ScanFlags& f,
                   at::ScalarType dtype, uint64_t seed) {
  const int64_t total = std::accumulate(lengths.begin(), lengths.end(), int64_t{0});
  Packed p;
  p.lengths = lengths;
  ScanFlags no_h0 = f;
  no_h0.h0 = false;
  p.in = ssmlab::test::make_scan_inputs({1, total, e, n, groups}, no_h0, dtype, seed);
  const int64_t nseq = static_cast<int64_t>(lengths.size());
  if (f.h0) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed ^ 0xabc);
    p.in.h0 = at::randn({nseq, e, n}, gen, at::kDouble).to(dtype == at::kDouble ? at::kDouble : at::kFloat);
  }
  std::vector<int64_t> off{0};
  for (int64_t l : lengths) off.push_back(off.back() + l);
  p.cu = at::tensor(off, at::TensorOptions().dtype(at::kLong));
  return p;
}

ScanInputs leaves_on(const ScanInputs& in, c10::Device dev, bool f64) {
  ScanInputs l = in;
  for (at::Tensor* t : {&l.u, &l.delta, &l.A, &l.B, &l.C, &l.D, &l.z, &l.delta_bias, &l.h0})
    if (t->defined()) {
      at::Tensor x = t->detach();
      if (f64) x = x.to(at::kDouble);
      *t = x.to(dev).clone().requires_grad_(true);
    }
  return l;
}

// The expected side: each sequence sliced out of the float64 leaves and run alone by the reference.
ssmlab::ops::SelectiveScanOut run_each(const ScanInputs& l, const std::vector<int64_t>& lengths) {
  std::vector<at::Tensor> ys, finals;
  int64_t start = 0;
  for (size_t s = 0; s < lengths.size(); ++s) {
    const int64_t len = lengths[s];
    auto sl = [&](const at::Tensor& t) { return t.narrow(1, start, len); };
    std::optional<at::Tensor> h0;
    if (l.h0.defined()) h0 = l.h0.narrow(0, static_cast<int64_t>(s), 1);
    const auto r = ssmlab::ops::selective_scan_reference(
        sl(l.u), sl(l.delta), l.A, sl(l.B), sl(l.C), opt(l.D), l.z.defined() ? opt(sl(l.z)) : std::nullopt,
        opt(l.delta_bias), l.softplus, h0);
    ys.push_back(r.y);
    finals.push_back(r.final_state);
    start += len;
  }
  return {at::cat(ys, 1), at::cat(finals, 0)};
}

void check_varlen(const std::vector<int64_t>& lengths, int64_t e, int64_t n, int64_t groups, const ScanFlags& f,
                  at::ScalarType dtype, const std::string& backend, c10::Device dev, uint64_t seed) {
  SCOPED_TRACE(ssmlab::str("backend ", backend, " on ", dev.str(), " dtype ", c10::toString(dtype), " groups ",
                           groups, " N ", n));
  const Packed p = make_packed(lengths, e, n, groups, f, dtype, seed);
  const ScanInputs got_l = leaves_on(p.in, dev, false), ref_l = leaves_on(p.in, at::kCPU, true);
  const auto got = ssmlab::ops::selective_scan_varlen(got_l.u, got_l.delta, got_l.A, got_l.B, got_l.C,
                                                      opt(got_l.D), opt(got_l.z), opt(got_l.delta_bias),
                                                      got_l.softplus, p.cu.to(dev), opt(got_l.h0), backend);
  const auto ref = run_each(ref_l, lengths);
  ASSERT_EQ(got.y.sizes(), ref.y.sizes());
  ASSERT_EQ(got.final_state.sizes(), ref.final_state.sizes());
  EXPECT_TRUE(ssmlab::test::all_close(got.y, ref.y, ssmlab::test::forward_tol(dtype), "y"));
  EXPECT_TRUE(ssmlab::test::all_close(got.final_state, ref.final_state, ssmlab::test::forward_tol(dtype),
                                      "final_state"));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed ^ 0x5eed);
  const at::Tensor gy = at::randn(ref.y.sizes(), gen, at::kDouble).to(dtype).to(at::kDouble);
  const at::Tensor gs = at::randn(ref.final_state.sizes(), gen, at::kDouble);
  const auto g_got = ssmlab::test::grads_of(got.y, got.final_state, gy.to(dev), gs.to(dev), got_l);
  const auto g_ref = ssmlab::test::grads_of(ref.y, ref.final_state, gy, gs, ref_l);
  const auto names = ssmlab::test::defined_inputs(p.in);
  ASSERT_EQ(g_got.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i)
    EXPECT_TRUE(ssmlab::test::all_close(g_got[i], g_ref[i], ssmlab::test::grad_tol(dtype),
                                        ssmlab::str("d/d", names[i].first)));
}

constexpr ScanFlags kAll{true, true, true, true, true};

TEST(SelectiveScanVarlen, MatchesSeparateSequencesReference) {
  check_varlen({5, 0, 70, 33, 1}, 5, 16, 0, kAll, at::kDouble, "reference", at::kCPU, 100);
  check_varlen({17, 64, 65}, 3, 7, 3, {true, false, true, false, true}, at::kDouble, "reference", at::kCPU, 101);
}

TEST(SelectiveScanVarlen, MatchesSeparateSequencesFusedCpu) {
  check_varlen({5, 0, 70, 33, 1}, 5, 16, 0, kAll, at::kFloat, "auto", at::kCPU, 200);
  check_varlen({130, 2}, 4, 17, 2, {true, true, false, true, false}, at::kFloat, "auto", at::kCPU, 201);
  check_varlen({0, 9, 0}, 3, 4, 0, kAll, at::kDouble, "auto", at::kCPU, 202);
}

TEST(SelectiveScanVarlen, MatchesSeparateSequencesCuda) {
  if (!ssmlab::cuda_available()) GTEST_SKIP() << "no CUDA device";
  const c10::Device cuda(at::kCUDA, 0);
  check_varlen({5, 0, 70, 33, 1}, 5, 16, 0, kAll, at::kFloat, "auto", cuda, 300);
  check_varlen({200, 3, 64}, 64, 16, 2, kAll, at::kBFloat16, "auto", cuda, 301);
}

// A sequence's tokens never reach another sequence: changing sequence 0 leaves sequence 1's outputs as they were.
TEST(SelectiveScanVarlen, SequencesDoNotLeak) {
  Packed p = make_packed({20, 30}, 4, 8, 0, {true, true, true, true, false}, at::kFloat, 400);
  auto run = [&](const ScanInputs& in) {
    return ssmlab::ops::selective_scan_varlen(in.u, in.delta, in.A, in.B, in.C, opt(in.D), opt(in.z),
                                              opt(in.delta_bias), in.softplus, p.cu, std::nullopt);
  };
  const auto a = run(p.in);
  ScanInputs changed = p.in;
  changed.u = p.in.u.clone();
  changed.u.narrow(1, 0, 20).normal_();
  const auto b = run(changed);
  EXPECT_FALSE(at::allclose(a.y.narrow(1, 0, 20), b.y.narrow(1, 0, 20)));
  EXPECT_TRUE(at::equal(a.y.narrow(1, 20, 30), b.y.narrow(1, 20, 30)));
  EXPECT_TRUE(at::equal(a.final_state[1], b.final_state[1]));
}

TEST(SelectiveScanVarlen, RejectsMalformedOffsets) {
  const Packed p = make_packed({3, 4}, 2, 4, 0, {false, false, false, false, false}, at::kFloat, 500);
  auto call = [&](const at::Tensor& cu, const std::optional<at::Tensor>& h0 = std::nullopt) {
    ssmlab::ops::selective_scan_varlen(p.in.u, p.in.delta, p.in.A, p.in.B, p.in.C, std::nullopt, std::nullopt,
                                       std::nullopt, false, cu, h0);
  };
  auto lng = at::TensorOptions().dtype(at::kLong);
  ssmlab::test::expect_error([&] { call(at::tensor(std::vector<int64_t>{1, 3, 7}, lng)); }, {"from 0 to T = 7"});
  ssmlab::test::expect_error([&] { call(at::tensor(std::vector<int64_t>{0, 3, 6}, lng)); }, {"from 0 to T = 7"});
  ssmlab::test::expect_error([&] { call(at::tensor(std::vector<int64_t>{0, 5, 3, 7}, lng)); }, {"non-decreasing"});
  ssmlab::test::expect_error([&] { call(at::tensor(std::vector<double>{0, 3, 7})); }, {"cu_seqlens must be"});
  ssmlab::test::expect_error([&] { call(p.cu, at::zeros({3, 2, 4})); }, {"initial_state must be (S, E, N)"});
}

}  // namespace

}  // namespace ops_test_selective_scan_varlen
