// The Meta kernels of every ssmlab::<op> schema (ops/meta.cpp) and of every <op>_backward (ops/op_autograd.cpp):
// called through the dispatcher on meta tensors they give the CPU kernels' output shapes, dtypes, strides and
// storage offsets, for odd sizes and several dtypes; and every schema has a Meta kernel.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "ssmlab/core/error.h"

namespace ops_test_meta {

namespace {

using c10::IValue;

// One call: the op's name, positional arguments and keyword arguments (the rest take the schema's defaults).
struct Call {
  std::string op;
  std::vector<IValue> pos;
  std::map<std::string, IValue> kw;
};

c10::OperatorHandle find(const std::string& name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(("ssmlab::" + name).c_str(), "");
}

std::vector<IValue> full_args(const c10::FunctionSchema& s, const Call& c) {
  std::vector<IValue> out;
  for (size_t i = 0; i < s.arguments().size(); ++i) {
    const auto& a = s.arguments()[i];
    if (i < c.pos.size()) {
      out.push_back(c.pos[i]);
    } else if (auto it = c.kw.find(a.name()); it != c.kw.end()) {
      out.push_back(it->second);
    } else {
      SSMLAB_CHECK(a.default_value().has_value(), c.op, ": argument ", a.name(), " has no default");
      out.push_back(*a.default_value());
    }
  }
  return out;
}

// The same arguments with every tensor moved to the meta device (and mutated ones cloned on CPU, so both
// calls start from the same state).
std::vector<IValue> to_device(const std::vector<IValue>& args, bool meta) {
  std::vector<IValue> out;
  for (const auto& a : args) {
    if (a.isTensor()) {
      out.emplace_back(meta ? a.toTensor().to(at::kMeta) : a.toTensor().clone());
    } else if (a.isTensorList()) {
      std::vector<at::Tensor> l;
      for (const auto& t : a.toTensorVector()) l.push_back(meta ? t.to(at::kMeta) : t.clone());
      out.emplace_back(l);
    } else {
      out.push_back(a);
    }
  }
  return out;
}

std::vector<at::Tensor> run(const c10::OperatorHandle& op, std::vector<IValue> args) {
  torch::jit::Stack s(std::move(args));
  op.callBoxed(&s);
  std::vector<at::Tensor> out;
  for (const auto& v : s) {
    if (v.isTensor()) out.push_back(v.toTensor());
    if (v.isTensorList())
      for (const auto& t : v.toTensorVector()) out.push_back(t);
  }
  return out;
}

void expect_same_layout(const std::vector<at::Tensor>& meta, const std::vector<at::Tensor>& cpu,
                        const std::string& what) {
  ASSERT_EQ(meta.size(), cpu.size()) << what << ": number of outputs";
  for (size_t i = 0; i < cpu.size(); ++i) {
    SCOPED_TRACE(what + " output " + std::to_string(i));
    EXPECT_TRUE(meta[i].is_meta());
    EXPECT_EQ(meta[i].sizes(), cpu[i].sizes());
    EXPECT_EQ(meta[i].scalar_type(), cpu[i].scalar_type());
    EXPECT_EQ(meta[i].strides(), cpu[i].strides());
    EXPECT_EQ(meta[i].storage_offset(), cpu[i].storage_offset());
  }
}

// Every schema's calls, with odd sizes; tensors in dtype `dt` (cu_seqlens int64).
std::vector<Call> calls(at::ScalarType dt, at::Generator& gen) {
  auto r = [&](std::vector<int64_t> s, double scale = 1.0, double shift = 0.0) {
    return (at::randn(s, gen, at::kDouble) * scale + shift).to(dt);
  };
  auto neg = [&](std::vector<int64_t> s) { return (-(at::rand(s, gen, at::kDouble) + 0.1)).to(dt); };
  auto posv = [&](std::vector<int64_t> s) { return (at::rand(s, gen, at::kDouble) + 0.5).to(dt); };
  std::vector<Call> c;
  for (const char* name : {"selective_scan", "selective_scan_ref"}) {
    c.push_back({name, {r({3, 7, 6}), r({3, 7, 6}, 0.5, -1), neg({6, 5}), r({3, 7, 2, 5}), r({3, 7, 2, 5})},
                 {{"D", r({6})}, {"z", r({3, 7, 6})}, {"delta_bias", r({6})}, {"delta_softplus", true},
                  {"initial_state", r({3, 6, 5}).to(at::kFloat)}}});
    c.push_back({name, {r({1, 1, 3}), r({1, 1, 3}), neg({3, 1}), r({1, 1, 1}), r({1, 1, 1})}, {}});
  }
  const at::Tensor cu = at::tensor(std::vector<int64_t>{0, 3, 3, 8}, at::kLong);
  for (const char* name : {"selective_scan_varlen", "selective_scan_varlen_ref"}) {
    c.push_back({name, {r({1, 8, 5}), r({1, 8, 5}, 0.5, -1), neg({5, 3}), r({1, 8, 3}), r({1, 8, 3}), cu},
                 {{"D", r({5})}, {"z", r({1, 8, 5})}, {"delta_softplus", true}, {"initial_state", r({3, 5, 3})}}});
    c.push_back({name, {r({1, 8, 5}), r({1, 8, 5}, 0.1, 0.3), neg({5, 3}), r({1, 8, 3}), r({1, 8, 3}), cu}, {}});
  }
  for (const char* name : {"causal_conv1d", "causal_conv1d_ref"}) {
    c.push_back({name, {r({3, 9, 5}), r({5, 4})}, {{"bias", r({5})}, {"silu", true}, {"initial_state", r({3, 3, 5})}}});
    c.push_back({name, {r({2, 5, 3}), r({3, 2})}, {}});  // W = 2: final state (B, 1, E)
    c.push_back({name, {r({2, 1, 3}), r({3, 1})}, {}});  // W = 1: empty final state
  }
  for (const char* name : {"causal_conv1d_update", "causal_conv1d_update_ref"}) {
    c.push_back({name, {r({3, 5}), r({3, 3, 5}), r({5, 4})}, {{"bias", r({5})}, {"silu", true}}});
    c.push_back({name, {r({1, 3}), r({1, 1, 3}), r({3, 2})}, {}});
  }
  for (const char* name : {"selective_state_update", "selective_state_update_ref"}) {
    const auto st = dt == at::kDouble ? at::kDouble : at::kFloat;
    c.push_back({name, {r({3, 6, 5}).to(st), r({3, 6}), r({3, 6}, 0.5, -1), neg({6, 5}), r({3, 2, 5}), r({3, 2, 5})},
                 {{"D", r({6})}, {"z", r({3, 6})}, {"dt_bias", r({6})}, {"dt_softplus", true}}});
    c.push_back({name, {r({1, 3, 4}).to(st), r({1, 3}), r({1, 3}), neg({3, 4}), r({1, 4}), r({1, 4})}, {}});
  }
  for (const char* name : {"wkv", "wkv_ref"}) {
    const auto st = dt == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor state = at::cat({at::zeros({2, 2, 5}), at::full({2, 1, 5}, -1e38)}, 1).to(st);
    c.push_back({name, {neg({5}), r({5}), r({2, 7, 5}), r({2, 7, 5})}, {{"initial_state", state}}});
    c.push_back({name, {neg({3}), r({3}), r({1, 1, 3}), r({1, 1, 3})}, {}});
  }
  for (const char* name : {"ssd_scan", "ssd_scan_ref"}) {
    c.push_back({name, {r({2, 9, 4, 3}), r({2, 9, 4}, 0.5), neg({4}), r({2, 9, 2, 5}), r({2, 9, 2, 5})},
                 {{"D", r({4})}, {"dt_bias", r({4})}, {"initial_state", r({2, 4, 3, 5})}, {"chunk_size", int64_t{4}},
                  {"return_chunk_states", true}, {"dt_mult", posv({4})}, {"decay_mult", posv({4})},
                  {"b_mult", posv({4})}}});
    c.push_back({name, {r({1, 5, 2, 3}), r({1, 5, 2}), neg({2}), r({1, 5, 1, 4}), r({1, 5, 1, 4})},
                 {{"chunk_size", int64_t{2}}}});
  }
  c.push_back({"ssd_scan_update", {r({2, 4, 3}), r({2, 4}), neg({4}), r({2, 2, 5}), r({2, 2, 5}), r({2, 4, 3, 5})},
               {{"D", r({4})}, {"dt_bias", r({4})}, {"decay_mult", posv({4})}}});
  c.push_back({"ssd_scan_update", {r({1, 1, 1}), r({1, 1}), neg({1}), r({1, 1, 2}), r({1, 1, 2}), r({1, 1, 1, 2})}, {}});
  for (const char* name : {"delta_rule", "delta_rule_ref"}) {
    const auto st = dt == at::kDouble ? at::kDouble : at::kFloat;
    // Gated DeltaNet with grouped value heads (H 2, HV 4) and an initial state; KDA's per-key gate; DeltaNet.
    c.push_back({name, {r({2, 7, 2, 3}), r({2, 7, 2, 3}), r({2, 7, 4, 5}), posv({2, 7, 4})},
                 {{"g", neg({2, 7, 4})}, {"initial_state", r({2, 4, 3, 5}).to(st)}, {"chunk_size", int64_t{4}}}});
    c.push_back({name, {r({1, 5, 1, 3}), r({1, 5, 1, 3}), r({1, 5, 1, 2}), posv({1, 5, 1})}, {{"g", neg({1, 5, 1, 3})}}});
    c.push_back({name, {r({1, 1, 1, 2}), r({1, 1, 1, 2}), r({1, 1, 1, 1}), posv({1, 1, 1})}, {}});
  }
  c.push_back({"delta_rule_update", {r({2, 2, 3}), r({2, 2, 3}), r({2, 4, 5}), posv({2, 4}), r({2, 4, 3, 5})},
               {{"g", neg({2, 4})}}});
  c.push_back({"delta_rule_update", {r({1, 1, 2}), r({1, 1, 2}), r({1, 1, 3}), posv({1, 1}), r({1, 1, 2, 3})}, {}});
  {
    const auto st = dt == at::kDouble ? at::kDouble : at::kFloat;
    // Mamba-3 MIMO (R 2, halves) from an initial state; SISO (adjacent) from zeros; one decode step.
    for (const char* name : {"mamba3_scan", "mamba3_scan_ref"}) {
      c.push_back({name, {r({2, 7, 2, 3, 4}), r({2, 7, 2, 3, 4}), r({2, 7, 2, 3, 5}), neg({2, 7, 3}), posv({2, 7, 3}),
                          r({2, 7, 3}), r({2, 7, 3, 2})},
                   {{"D", r({3})}, {"phase", r({2, 3, 2}).to(st)}, {"state", r({2, 3, 5, 4}).to(st)},
                    {"k_prev", r({2, 2, 3, 4})}, {"x_prev", r({2, 2, 3, 5})}, {"pairing", std::string("halves")},
                    {"chunk_size", int64_t{4}}}});
      c.push_back({name, {r({1, 5, 1, 1, 4}), r({1, 5, 1, 1, 4}), r({1, 5, 1, 1, 3}), neg({1, 5, 1}), posv({1, 5, 1}),
                          r({1, 5, 1}), r({1, 5, 1, 1})}, {}});
    }
    c.push_back({"mamba3_step", {r({2, 2, 3, 4}), r({2, 2, 3, 4}), r({2, 2, 3, 5}), neg({2, 3}), posv({2, 3}), r({2, 3}),
                                 r({2, 3, 2}), r({2, 3, 2}).to(st), r({2, 3, 5, 4}).to(st), r({2, 2, 3, 4}),
                                 r({2, 2, 3, 5})},
                 {{"D", r({3})}, {"pairing", std::string("halves")}}});
  }
  // Token cross-entropy: some rows ignored; V = 1.
  const at::Tensor ce_targets = at::tensor(std::vector<int64_t>{0, 4, -100, 2, 1, 3, -100}, at::kLong);
  for (const char* name : {"cross_entropy", "cross_entropy_ref"}) {
    c.push_back({name, {r({7, 5}, 2.0), ce_targets}, {{"ignore_index", int64_t{-100}}}});
    c.push_back({name, {r({3, 1}), at::zeros({3}, at::kLong)}, {}});
  }
  return c;
}

TEST(OpsMeta, EverySchemaHasAMetaKernelAndASample) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  std::set<std::string> sampled;
  for (const auto& c : calls(at::kDouble, gen)) sampled.insert(c.op);
  size_t n = 0;
  for (const auto& name : c10::Dispatcher::singleton().getAllOpNames()) {
    const std::string full = name.name;
    if (full.rfind("ssmlab::", 0) != 0) continue;
    ++n;
    const std::string op = full.substr(8);
    EXPECT_TRUE(find(op).hasKernelForDispatchKey(c10::DispatchKey::Meta)) << full << " has no Meta kernel";
    const bool backward = op.size() > 9 && op.substr(op.size() - 9) == "_backward";
    if (!backward) EXPECT_TRUE(sampled.count(op)) << full << " has no sample in test_meta.cpp";
  }
  EXPECT_GE(n, 25u) << "expected the 15 ssmlab ops and their 10 _backward schemas";
}

TEST(OpsMeta, OutputsMatchTheCpuKernels) {
  for (const auto dt : {at::kDouble, at::kFloat, at::kBFloat16}) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
    for (const auto& c : calls(dt, gen)) {
      const std::string what = c.op + " " + c10::toString(dt);
      SCOPED_TRACE(what);
      const auto op = find(c.op);
      const auto args = full_args(op.schema(), c);
      const auto cpu = run(op, to_device(args, false));
      const auto meta = run(op, to_device(args, true));
      expect_same_layout(meta, cpu, what);
      // The backward schema, where there is one, with a gradient for every output.
      const std::string bwd_name = c.op + "_backward";
      if (!c10::Dispatcher::singleton().findSchema({"ssmlab::" + bwd_name, ""})) continue;
      std::vector<at::Tensor> grads;
      for (const auto& o : cpu) grads.push_back(at::ones_like(o));
      std::vector<IValue> bargs{IValue(grads)};
      bargs.insert(bargs.end(), args.begin(), args.end());
      const auto bwd = find(bwd_name);
      const auto gcpu = run(bwd, to_device(bargs, false));
      const auto gmeta = run(bwd, to_device(bargs, true));
      expect_same_layout(gmeta, gcpu, bwd_name);
      // One gradient per floating-point tensor input, shaped like it.
      std::vector<at::Tensor> floating;
      for (const auto& a : args)
        if (a.isTensor() && at::isFloatingType(a.toTensor().scalar_type())) floating.push_back(a.toTensor());
      ASSERT_EQ(gcpu.size(), floating.size());
      for (size_t i = 0; i < floating.size(); ++i) {
        EXPECT_EQ(gcpu[i].sizes(), floating[i].sizes()) << "gradient " << i;
        EXPECT_EQ(gcpu[i].scalar_type(), floating[i].scalar_type()) << "gradient " << i;
      }
    }
  }
}

// The meta kernels reject what the real ones reject, with the same message.
TEST(OpsMeta, BadShapesAreErrorsOnMetaToo) {
  const auto m = at::TensorOptions().device(at::kMeta).dtype(at::kFloat);
  const auto op = find("selective_scan");
  std::vector<IValue> args = full_args(
      op.schema(), {"selective_scan", {at::empty({2, 5, 4}, m), at::empty({2, 5, 3}, m), at::empty({4, 3}, m),
                                       at::empty({2, 5, 3}, m), at::empty({2, 5, 3}, m)}, {}});
  torch::jit::Stack s(args);
  try {
    op.callBoxed(&s);
    ADD_FAILURE() << "a delta of the wrong shape was accepted on meta";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("delta must match u"), std::string::npos) << e.what();
  }
}

}  // namespace

}  // namespace ops_test_meta
