// ssd_scan (spec §1.3): the reference against scalar loops and hand-computed cases; the chunked SSD
// algorithm against the reference (output, final state, per-chunk states and every gradient) over chunk
// sizes {16, 64, 256}, L in {1, 63, 500, 2049} and n_groups in {1, H}; input errors; the dispatcher schemas.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <string>

#include "ops/ssd_scan_testing.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"
#include "test_util.h"
#include "tolerances.h"

namespace ops_test_ssd_scan {

namespace {

using ssmlab::ops::SsdScanOptions;
using ssmlab::ops::SsdScanOut;
using ssmlab::test::all_close;
using ssmlab::test::SsdInputs;
using ssmlab::test::SsdShape;

SsdScanOut run(const SsdInputs& in, const std::string& backend) {
  return ssmlab::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.opts, backend);
}

// The chunked algorithm itself ("auto" on CPU would take the fused kernel; tests/ops/test_ssd_scan_cpu.cpp).
SsdScanOut run_chunked(const SsdInputs& in, int64_t chunk, bool states = false) {
  SsdScanOptions o = in.opts;
  o.chunk_size = chunk;
  o.return_chunk_states = states;
  ssmlab::ops::check_ssd_scan_inputs(in.x, in.dt, in.A, in.B, in.C, o);
  return ssmlab::ops::ssd_scan_chunked(in.x, in.dt, in.A, in.B, in.C, o);
}

TEST(SsdScanReference, MatchesScalarLoops) {
  for (bool all : {false, true}) {
    for (SsdShape s : {SsdShape{2, 13, 4, 3, 5, 2}, SsdShape{1, 1, 3, 2, 1, 1}, SsdShape{3, 40, 6, 5, 7, 6}}) {
      SCOPED_TRACE(ssmlab::str("L ", s.l, " H ", s.h, " G ", s.g, " all options ", all));
      const SsdInputs in = ssmlab::test::make_ssd_inputs(s, at::kDouble, 11 + s.l, all);
      const auto [y, S] = ssmlab::test::ssd_naive(in);
      const SsdScanOut out = run(in, "reference");
      EXPECT_EQ(out.y.scalar_type(), at::kDouble);
      EXPECT_TRUE(all_close(out.y, y, ssmlab::test::kFp64Forward, "y"));
      EXPECT_TRUE(all_close(out.final_state, S, ssmlab::test::kFp64Forward, "final_state"));
    }
  }
}

// One head, P = N = 1, three steps, numbers worked out by hand:
//   dt' = clamp(softplus(dt + bias)) is bypassed (softplus off, bias 0): dt' = dt · dt_mult.
//   A = -ln 2 so exp(dt' A) = 2^-dt'.
TEST(SsdScanReference, HandComputedInterventions) {
  auto t = [](std::initializer_list<double> v, at::IntArrayRef shape) {
    return at::tensor(std::vector<double>(v), at::kDouble).view(shape);
  };
  SsdInputs in;
  in.x = t({1.0, 2.0, -1.0}, {1, 3, 1, 1});
  in.dt = t({1.0, 2.0, 1.0}, {1, 3, 1});
  in.A = t({-std::log(2.0)}, {1});
  in.B = t({1.0, 0.5, 2.0}, {1, 3, 1, 1});
  in.C = t({1.0, 1.0, 3.0}, {1, 3, 1, 1});
  in.opts.dt_softplus = false;
  // Plain: alpha = (1/2, 1/4, 1/2); S1 = 1; S2 = 1/4 + 2·2·0.5 = 2.25; S3 = 1.125 + 1·(-1)·2 = -0.875.
  {
    const SsdScanOut out = run(in, "reference");
    EXPECT_TRUE(all_close(out.y.flatten(), t({1.0, 2.25, -2.625}, {3}), ssmlab::test::kFp64Forward, "plain"));
  }
  // decay_mult 0.5 (RRI λ_α), b_mult 0.75 (λ_B): alpha = (1/4, 1/8, 1/4), weight 0.75·dt':
  //   S1 = 0.75; S2 = 0.09375 + 0.75·2·2·0.5 = 1.59375; S3 = 0.3984375 + 0.75·1·(-1)·2 = -1.1015625.
  {
    SsdInputs rri = in;
    rri.opts.decay_mult = t({0.5}, {1});
    rri.opts.b_mult = t({0.75}, {1});
    const SsdScanOut out = run(rri, "reference");
    EXPECT_TRUE(all_close(out.y.flatten(), t({0.75, 1.59375, -3.3046875}, {3}), ssmlab::test::kFp64Forward, "rri"));
    EXPECT_TRUE(all_close(run_chunked(rri, 2).y, out.y, ssmlab::test::kFp64Forward, "rri chunked"));
  }
  // dt_mult 2: dt' = (2, 4, 2), alpha = (1/4, 1/16, 1/4): S1 = 2; S2 = 0.125 + 4·2·0.5 = 4.125;
  //   S3 = 1.03125 + 2·(-1)·2 = -2.96875 (y3 = 3·S3).
  {
    SsdInputs m = in;
    m.opts.dt_mult = t({2.0}, {1});
    const SsdScanOut out = run(m, "reference");
    EXPECT_TRUE(all_close(out.y.flatten(), t({2.0, 4.125, -8.90625}, {3}), ssmlab::test::kFp64Forward, "dt_mult"));
    EXPECT_NEAR(out.final_state.item<double>(), -2.96875, 1e-12);
  }
  // dt limits [1.5, 1.5]: every dt' = 1.5, alpha = 2^-1.5: S1 = 1.5; S2 = 1.5·a + 1.5; S3 = S2·a - 3.
  {
    SsdInputs m = in;
    m.opts.dt_min = 1.5;
    m.opts.dt_max = 1.5;
    const double a = std::pow(2.0, -1.5), s2 = 1.5 * a + 1.5, s3 = s2 * a - 3.0;
    const SsdScanOut out = run(m, "reference");
    EXPECT_TRUE(all_close(out.y.flatten(), t({1.5, s2, 3 * s3}, {3}), ssmlab::test::kFp64Forward, "dt limits"));
  }
}

struct ChunkCase {
  int64_t l, g;
};
// Short names in ctest's list (gtest prints an unprintable parameter as its bytes).
void PrintTo(const ChunkCase& c, std::ostream* os) { *os << "L" << c.l << "_G" << c.g; }

class SsdScanChunkedVsReference : public ::testing::TestWithParam<ChunkCase> {};

// Every chunk size against one reference run: y, final_state, the chunk states and all 11 gradients.
TEST_P(SsdScanChunkedVsReference, OutputsStatesAndGradients) {
  const auto [l, g] = GetParam();
  const int64_t h = 4;
  const SsdShape s{2, l, h, 3, 5, g == 1 ? 1 : h};
  const SsdInputs in = ssmlab::test::make_ssd_inputs(s, at::kDouble, 100 + l + g);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7 + l);
  const at::Tensor gy = at::randn({s.b, l, h, s.p}, gen, at::kDouble);
  const at::Tensor gs = at::randn({s.b, h, s.p, s.n}, gen, at::kDouble);

  SsdInputs ref = ssmlab::test::ssd_as_leaves(in);
  const SsdScanOut out_ref = run(ref, "reference");
  const auto g_ref = ssmlab::test::ssd_grads(out_ref, gy, gs, ref);
  const auto names = ssmlab::test::ssd_leaves(ref);
  ASSERT_EQ(names.size(), 11u);

  for (int64_t chunk : {16, 64, 256}) {
    SCOPED_TRACE(ssmlab::str("chunk ", chunk));
    SsdInputs ch = ssmlab::test::ssd_as_leaves(in);
    const SsdScanOut out = run_chunked(ch, chunk, /*states=*/true);
    EXPECT_TRUE(all_close(out.y, out_ref.y, ssmlab::test::kFp64Forward, "y"));
    EXPECT_TRUE(all_close(out.final_state, out_ref.final_state, ssmlab::test::kFp64Forward, "final_state"));
    {
      at::NoGradGuard ng;
      SsdScanOptions o = in.opts;
      o.chunk_size = chunk;
      o.return_chunk_states = true;
      const SsdScanOut snaps = ssmlab::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, o, "reference");
      EXPECT_EQ(out.chunk_states.size(1), (l + chunk - 1) / chunk);
      EXPECT_TRUE(all_close(out.chunk_states, snaps.chunk_states, ssmlab::test::kFp64Forward, "chunk_states"));
      EXPECT_TRUE(all_close(out.chunk_states.select(1, -1), out.final_state, {0.0, 0.0}, "last chunk state"));
    }
    const auto g_out = ssmlab::test::ssd_grads(out, gy, gs, ch);
    for (size_t i = 0; i < names.size(); ++i)
      EXPECT_TRUE(all_close(g_out[i], g_ref[i], ssmlab::test::kFp64Grad, "d/d" + names[i].first));
  }
}

INSTANTIATE_TEST_SUITE_P(SsdScan, SsdScanChunkedVsReference,
                         ::testing::Values(ChunkCase{1, 1}, ChunkCase{1, 4}, ChunkCase{63, 1}, ChunkCase{63, 4},
                                           ChunkCase{500, 1}, ChunkCase{500, 4}, ChunkCase{2049, 1},
                                           ChunkCase{2049, 4}),
                         [](const ::testing::TestParamInfo<ChunkCase>& i) {
                           return ssmlab::str("L", i.param.l, "_G", i.param.g);
                         });

// Without the optional inputs (no D, bias, limits, initial state, interventions): zero initial state.
TEST(SsdScanChunked, NoOptionsMatchesReference) {
  const SsdInputs in = ssmlab::test::make_ssd_inputs({3, 77, 6, 4, 8, 2}, at::kDouble, 5, /*all_options=*/false);
  const SsdScanOut ref = run(in, "reference");
  for (int64_t chunk : {1, 7, 77, 1000}) {
    const SsdScanOut out = run_chunked(in, chunk);
    EXPECT_TRUE(all_close(out.y, ref.y, ssmlab::test::kFp64Forward, ssmlab::str("y chunk ", chunk)));
    EXPECT_TRUE(all_close(out.final_state, ref.final_state, ssmlab::test::kFp64Forward, "final_state"));
  }
}

// float32 and bfloat16 inputs computed in fp32, against the fp64 reference on the same rounded inputs.
TEST(SsdScanChunked, LowPrecisionAgainstFp64Reference) {
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    const SsdInputs in = ssmlab::test::make_ssd_inputs({2, 300, 4, 8, 16, 1}, dtype, 9);
    SsdInputs in64 = in;
    for (auto& [name, t] : ssmlab::test::ssd_leaves(in64)) *t = t->to(at::kDouble);
    const SsdScanOut ref = run(in64, "reference");
    const SsdScanOut out = run_chunked(in, 64);
    EXPECT_EQ(out.y.scalar_type(), dtype);
    EXPECT_EQ(out.final_state.scalar_type(), at::kFloat);
    EXPECT_TRUE(all_close(out.y, ref.y, ssmlab::test::forward_tol(dtype), "y"));
    EXPECT_TRUE(all_close(out.final_state, ref.final_state, ssmlab::test::kFp32Forward, "final_state"));
  }
}

TEST(SsdScan, LengthZero) {
  const SsdInputs in = ssmlab::test::make_ssd_inputs({2, 0, 2, 3, 4, 1}, at::kDouble, 3);
  for (const SsdScanOut& out : {run(in, "reference"), run(in, "auto"), run_chunked(in, 16)}) {
    EXPECT_EQ(out.y.sizes(), (at::IntArrayRef{2, 0, 2, 3}));
    EXPECT_TRUE(all_close(out.final_state, *in.opts.initial_state, {0.0, 0.0}, "final = initial"));
  }
}

TEST(SsdScan, BadInputsNameTheProblem) {
  const SsdInputs in = ssmlab::test::make_ssd_inputs({2, 5, 4, 3, 6, 2}, at::kFloat, 1);
  auto with = [&](auto edit) {
    SsdInputs c = in;
    edit(c);
    return [c] { run(c, "auto"); };
  };
  using ssmlab::test::expect_error;
  expect_error(with([](SsdInputs& c) { c.x = c.x.flatten(2); }), {"x must be (B, L, H, P)"});
  expect_error(with([](SsdInputs& c) { c.dt = c.dt.narrow(1, 0, 4); }), {"dt must be (B, L, H)", "(2, 5, 4)"});
  expect_error(with([](SsdInputs& c) { c.A = at::ones({3}); }), {"A must be (H)"});
  expect_error(with([](SsdInputs& c) { c.B = at::ones({2, 5, 3, 6}); }), {"H % G == 0"});
  expect_error(with([](SsdInputs& c) { c.C = c.C.narrow(3, 0, 5); }), {"C must match B"});
  expect_error(with([](SsdInputs& c) { c.opts.D = at::ones({4, 3}); }), {"D must be (H)"});
  expect_error(with([](SsdInputs& c) { c.opts.initial_state = at::zeros({2, 4, 3, 5}); }),
               {"initial_state must be (B, H, P, N)", "(2, 4, 3, 6)"});
  expect_error(with([](SsdInputs& c) { c.opts.decay_mult = at::zeros({4}); }), {"decay_mult must be > 0"});
  expect_error(with([](SsdInputs& c) { c.opts.chunk_size = 0; }), {"chunk_size"});
  expect_error(with([](SsdInputs& c) { c.opts.dt_max = 1e-4; }), {"dt_min <= dt_max"});
  expect_error(with([](SsdInputs& c) { c.x = c.x.to(at::kInt); }), {"floating point"});
  expect_error([&] { ssmlab::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.opts, "fast"); }, {"fast"});
}

// The decode step looped over t gives the scan's rows and final state (C++ and through the dispatcher).
TEST(SsdScanUpdate, StepLoopEqualsScan) {
  const SsdInputs in = ssmlab::test::make_ssd_inputs({2, 37, 6, 3, 5, 3}, at::kDouble, 23);
  const SsdScanOut ref = run(in, "reference");
  auto update = c10::Dispatcher::singleton().findSchemaOrThrow("ssmlab::ssd_scan_update", "").typed<at::Tensor(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&,
      const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool, double, std::optional<double>,
      const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&)>();
  SsdScanOptions o = in.opts;
  o.initial_state.reset();
  for (bool dispatcher : {false, true}) {
    at::Tensor S = in.opts.initial_state->clone();
    std::vector<at::Tensor> ys;
    for (int64_t t = 0; t < in.x.size(1); ++t) {
      const at::Tensor x = in.x.select(1, t), dt = in.dt.select(1, t), B = in.B.select(1, t), C = in.C.select(1, t);
      ys.push_back(dispatcher ? update.call(x, dt, in.A, B, C, S, o.D, o.dt_bias, o.dt_softplus, o.dt_min, o.dt_max,
                                            o.dt_mult, o.decay_mult, o.b_mult)
                              : ssmlab::ops::ssd_scan_update(x, dt, in.A, B, C, S, o));
    }
    EXPECT_TRUE(all_close(at::stack(ys, 1), ref.y, ssmlab::test::kFp64Forward, "y"));
    EXPECT_TRUE(all_close(S, ref.final_state, ssmlab::test::kFp64Forward, "state"));
  }
  at::Tensor S = in.opts.initial_state->clone();
  ssmlab::test::expect_error(
      [&] { ssmlab::ops::ssd_scan_update(in.x.select(1, 0), in.dt.select(1, 0), in.A, in.B.select(1, 0),
                                         in.C.select(1, 0), S, in.opts); },
      {"initial_state"});
  at::Tensor bad = at::zeros({2, 6, 3, 4}, at::kDouble);
  ssmlab::test::expect_error(
      [&] { ssmlab::ops::ssd_scan_update(in.x.select(1, 0), in.dt.select(1, 0), in.A, in.B.select(1, 0),
                                         in.C.select(1, 0), bad, o); },
      {"state must be (B, H, P, N)", "(2, 6, 3, 5)"});
}

TEST(SsdScan, DispatcherSchemasMatchCpp) {
  const SsdInputs in = ssmlab::test::make_ssd_inputs({2, 21, 4, 3, 5, 2}, at::kDouble, 17);
  for (const char* name : {"ssmlab::ssd_scan", "ssmlab::ssd_scan_ref"}) {
    auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
    const auto& o = in.opts;
    auto [y, fs, cs] =
        op.typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool, double,
                std::optional<double>, const std::optional<at::Tensor>&, int64_t, bool,
                const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                const std::optional<at::Tensor>&)>()
            .call(in.x, in.dt, in.A, in.B, in.C, o.D, o.dt_bias, o.dt_softplus, o.dt_min, o.dt_max, o.initial_state,
                  /*chunk_size=*/8, /*return_chunk_states=*/true, o.dt_mult, o.decay_mult, o.b_mult);
    const auto [y_ref, s_ref] = ssmlab::test::ssd_naive(in);
    EXPECT_TRUE(all_close(y, y_ref, ssmlab::test::kFp64Forward, std::string(name) + " y"));
    EXPECT_TRUE(all_close(fs, s_ref, ssmlab::test::kFp64Forward, std::string(name) + " final_state"));
    EXPECT_EQ(cs.sizes(), (at::IntArrayRef{2, 3, 4, 3, 5}));
  }
}

}  // namespace

}  // namespace ops_test_ssd_scan
