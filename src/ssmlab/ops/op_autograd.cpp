// Generic autograd and backward kernels of the ssmlab::<op> schemas (op_autograd.h).
#include "ssmlab/ops/op_autograd.h"

#include <cstdlib>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/strides.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>

#include "ssmlab/core/error.h"

namespace ssmlab::ops {
namespace {

using at::Tensor;
using c10::IValue;
using torch::jit::Stack;

thread_local bool t_recompute = false;

// While alive: grad mode on and the autograd keys not excluded, whatever the caller excluded (e.g. a compiled
// backward, or the redispatch below an Autograd kernel), so that autograd records below this point.
class RecordingScope {
 public:
  RecordingScope() : keys_(keys()), grad_on_(true) {}

 private:
  static c10::impl::LocalDispatchKeySet keys() {
    auto local = c10::impl::tls_local_dispatch_key_set();
    local.excluded_ = local.excluded_ - c10::autograd_dispatch_keyset_with_ADInplaceOrView;
    return local;
  }
  c10::impl::ForceDispatchKeyGuard keys_;
  at::AutoGradMode grad_on_;
};

// Redispatches `op` at `ks` telling the CPU/CUDA kernel it reaches to record the C++ entry's graph (ForwardGradScope
// reads t_recompute); call inside a RecordingScope.
void redispatch_recording(const c10::OperatorHandle& op, c10::DispatchKeySet ks, Stack* stack) {
  t_recompute = true;
  try {
    op.redispatchBoxed(ks, stack);
  } catch (...) {
    t_recompute = false;
    throw;
  }
  t_recompute = false;
}

bool differentiable(const IValue& v) { return v.isTensor() && at::isFloatingType(v.toTensor().scalar_type()); }

std::string short_name(const c10::OperatorHandle& op) { return op.schema().name(); }

// The node of one call of a differentiable op: saves its arguments, and its backward calls X_backward.
class RecomputeNode : public torch::autograd::Node {
 public:
  RecomputeNode(c10::OperatorHandle backward, std::vector<IValue> args) : backward_(std::move(backward)) {
    // Tensors are kept as SavedVariables (so an in-place change of an input before backward is reported),
    // everything else as it came.
    for (auto& a : args) {
      if (a.isTensor()) {
        saved_.emplace_back(a.toTensor(), /*is_output=*/false);
        a = IValue();  // placeholder, restored from saved_ in apply
        tensor_pos_.push_back(args_.size());
      }
      args_.push_back(std::move(a));
    }
  }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    SSMLAB_CHECK(!released_, short_name(backward_),
                 ": the saved inputs were freed by an earlier backward; pass retain_graph=True to run it twice");
    std::vector<Tensor> g(grads.size());
    for (size_t i = 0; i < grads.size(); ++i) g[i] = grads[i].defined() ? grads[i] : input_metadata(i).zeros_like();
    Stack s;
    s.reserve(args_.size() + 1);
    s.emplace_back(g);
    std::vector<IValue> args = args_;
    for (size_t k = 0; k < tensor_pos_.size(); ++k) args[tensor_pos_[k]] = saved_[k].unpack(shared_from_this());
    for (auto& a : args) s.push_back(std::move(a));
    backward_.callBoxed(&s);
    SSMLAB_CHECK(s.size() == 1 && s[0].isTensorList(), short_name(backward_), ": expected one Tensor[] result");
    auto out = s[0].toTensorVector();
    SSMLAB_CHECK(out.size() == num_outputs(), short_name(backward_), " returned ", out.size(),
                 " gradients for ", num_outputs(), " differentiable inputs");
    return out;
  }

  std::string name() const override { return short_name(backward_); }

  void release_variables() override {
    for (auto& v : saved_) v.reset_data();
    released_ = true;
  }

 private:
  c10::OperatorHandle backward_;
  std::vector<IValue> args_;
  std::vector<torch::autograd::SavedVariable> saved_;
  std::vector<size_t> tensor_pos_;
  bool released_ = false;
};

// The refusal of a create_graph=True gradient through `fwd_name` (both Autograd paths say the same).
std::string double_backward_message(const std::string& fwd_name) {
  return str(fwd_name, "_backward: the gradient of ", fwd_name,
             " is not differentiable (double backward, e.g. torch.autograd.grad(..., create_graph=True) through ",
             fwd_name, ", is not supported); take first-order gradients only");
}

// The node of one eager CPU/CUDA call that kept the C++ entry's own autograd graph from the forward: its backward
// differentiates that graph (no second forward). It holds the entry's outputs (the graph's roots) and the leaf
// aliases of the op's differentiable inputs until the engine releases it.
class KeptGraphNode : public torch::autograd::Node {
 public:
  KeptGraphNode(std::string fwd_name, std::vector<Tensor> leaves, std::vector<Tensor> inputs)
      : fwd_name_(std::move(fwd_name)), leaves_(std::move(leaves)), inputs_(std::move(inputs)) {}

  void set_roots(std::vector<Tensor> roots) { roots_ = std::move(roots); }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    SSMLAB_CHECK(!c10::GradMode::is_enabled(), double_backward_message(fwd_name_));
    SSMLAB_CHECK(!released_, fwd_name_,
                 "_backward: the graph of this call was freed by an earlier backward; pass retain_graph=True to "
                 "run it twice");
    std::vector<Tensor> outs, gouts, want;
    for (size_t i = 0; i < roots_.size() && i < grads.size(); ++i)
      if (roots_[i].defined()) {
        outs.push_back(roots_[i]);
        gouts.push_back(grads[i].defined() ? grads[i] : at::zeros_like(roots_[i]));
      }
    std::vector<size_t> pos;
    for (size_t j = 0; j < leaves_.size(); ++j)
      if (leaves_[j].requires_grad()) {
        want.push_back(leaves_[j]);
        pos.push_back(j);
      }
    std::vector<Tensor> g;
    if (!outs.empty() && !want.empty())
      g = torch::autograd::grad(outs, want, gouts, /*retain_graph=*/true, /*create_graph=*/false,
                                /*allow_unused=*/true);
    torch::autograd::variable_list result(leaves_.size());
    for (size_t k = 0; k < pos.size(); ++k) {
      const size_t j = pos[k];
      const Tensor& like = inputs_[j];
      result[j] = k < g.size() && g[k].defined() ? as_dense(g[k].to(like.scalar_type()))
                                                 : at::zeros(like.sizes(), like.options());
    }
    return result;
  }

  std::string name() const override { return fwd_name_ + "_backward"; }

  void release_variables() override {
    roots_.clear();
    leaves_.clear();
    inputs_.clear();
    released_ = true;
  }

 private:
  std::string fwd_name_;
  std::vector<Tensor> leaves_, inputs_, roots_;
  bool released_ = false;
};

// Eager calls whose next kernel below autograd is the CPU or CUDA one keep the entry's graph (KeptGraphNode);
// anything else in between (fake or meta tensors under torch.compile / opcheck, functionalization, Python modes,
// functorch) and SSMLAB_OP_AUTOGRAD=recompute save the inputs and recompute the forward in the backward.
bool keep_graph(c10::DispatchKeySet ks) {
  const char* env = std::getenv("SSMLAB_OP_AUTOGRAD");
  if (env != nullptr && std::string(env) == "recompute") return false;
  const c10::DispatchKeySet below = ks & c10::after_ADInplaceOrView_keyset;
  if (below.empty()) return false;
  const auto k = below.highestPriorityTypeId();
  return k == c10::DispatchKey::CPU || k == c10::DispatchKey::CUDA;
}

}  // namespace

at::Tensor as_dense(const at::Tensor& t) {
  if (!t.defined()) return t;
  const auto want = c10::contiguous_strides(t.sizes());
  if (t.storage_offset() == 0 && t.strides() == at::IntArrayRef(want)) return t;
  return t.clone(at::MemoryFormat::Contiguous);
}

ForwardGradScope::ForwardGradScope()
    : prev_grad_mode_(c10::GradMode::is_enabled()), prev_recompute_(t_recompute) {
  // Normally the C++ entry runs without a graph (the op's Autograd kernel owns the graph); in a recompute it
  // must record one for backward_recompute_kernel to differentiate.
  c10::GradMode::set_enabled(t_recompute);
  t_recompute = false;  // nested ops behave normally
}

ForwardGradScope::~ForwardGradScope() {
  c10::GradMode::set_enabled(prev_grad_mode_);
  t_recompute = prev_recompute_;
}

void autograd_recompute_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks, Stack* stack) {
  const size_t n_args = op.schema().arguments().size();
  std::vector<IValue> args(stack->end() - static_cast<std::ptrdiff_t>(n_args), stack->end());
  std::vector<Tensor> diff;
  bool needs_grad = false;
  for (const auto& a : args)
    if (differentiable(a)) {
      diff.push_back(a.toTensor());
      needs_grad = needs_grad || a.toTensor().requires_grad();
    }
  needs_grad = needs_grad && c10::GradMode::is_enabled();
  if (needs_grad && keep_graph(ks)) {
    // Run the entry with autograd recording on leaf aliases of the differentiable inputs (as
    // backward_recompute_kernel does), keep that graph, and hand the caller detached outputs whose history is one
    // KeptGraphNode.
    std::vector<Tensor> leaves;
    for (auto it = stack->end() - static_cast<std::ptrdiff_t>(n_args); it != stack->end(); ++it)
      if (differentiable(*it)) {
        const Tensor& t = it->toTensor();
        leaves.push_back(t.detach().requires_grad_(t.requires_grad()));
        *it = leaves.back();
      }
    {
      RecordingScope recording;
      redispatch_recording(op, ks & c10::after_ADInplaceOrView_keyset, stack);
    }
    auto node = std::shared_ptr<KeptGraphNode>(new KeptGraphNode(op.schema().name(), leaves, diff),
                                               torch::autograd::deleteNode);
    node->set_next_edges(torch::autograd::collect_next_edges(diff));
    const size_t n_out = op.schema().returns().size();
    std::vector<Tensor> roots;
    for (auto it = stack->end() - static_cast<std::ptrdiff_t>(n_out); it != stack->end(); ++it) {
      if (!it->isTensor()) continue;
      const Tensor o = it->toTensor();
      roots.push_back(o.requires_grad() ? o : Tensor());
      Tensor out = o.detach();
      torch::autograd::set_history(out, node);
      *it = out;
    }
    node->set_roots(std::move(roots));
    return;
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(ks & c10::after_ADInplaceOrView_keyset, stack);
  }
  if (!needs_grad) return;
  const std::string bwd_name = op.schema().name() + "_backward";
  auto bwd = c10::Dispatcher::singleton().findSchemaOrThrow(bwd_name.c_str(), "");
  auto node = std::shared_ptr<RecomputeNode>(new RecomputeNode(bwd, std::move(args)), torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(diff));
  const size_t n_out = op.schema().returns().size();
  for (auto it = stack->end() - static_cast<std::ptrdiff_t>(n_out); it != stack->end(); ++it)
    if (it->isTensor()) torch::autograd::set_history(it->toTensor(), node);
}

void autograd_decode_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks, Stack* stack) {
  const auto& schema = op.schema();
  const size_t n_args = schema.arguments().size();
  std::vector<Tensor> mutated;
  for (size_t i = 0; i < n_args; ++i) {
    const auto* alias = schema.arguments()[i].alias_info();
    const IValue& v = (*stack)[stack->size() - n_args + i];
    if (alias && alias->isWrite() && v.isTensor()) {
      const Tensor& t = v.toTensor();
      SSMLAB_CHECK(!(c10::GradMode::is_enabled() && t.requires_grad()), schema.name(), ": ",
                   schema.arguments()[i].name(),
                   " requires grad, but this decode step updates it in place and is not differentiable; run it "
                   "under torch.no_grad() (the sequence op is the differentiable one)");
      mutated.push_back(t);
    }
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(ks & c10::after_ADInplaceOrView_keyset, stack);
  }
  for (const auto& t : mutated) torch::autograd::increment_version(t);
}

void backward_recompute_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks, Stack* stack) {
  const auto& schema = op.schema();
  const size_t n_args = schema.arguments().size();
  std::vector<IValue> args(stack->end() - static_cast<std::ptrdiff_t>(n_args), stack->end());
  stack->erase(stack->end() - static_cast<std::ptrdiff_t>(n_args), stack->end());
  const std::vector<Tensor> grads = args[0].toTensorVector();
  std::string fwd_name = schema.name();
  fwd_name.resize(fwd_name.size() - std::string("_backward").size());
  auto fwd = c10::Dispatcher::singleton().findSchemaOrThrow(fwd_name.c_str(), "");

  Stack fstack(args.begin() + 1, args.end());
  std::vector<Tensor> leaves, like;
  for (auto& a : fstack)
    if (differentiable(a)) {
      like.push_back(a.toTensor());
      Tensor leaf = a.toTensor().detach().requires_grad_(true);
      leaves.push_back(leaf);
      a = leaf;
    }
  const size_t n_out = fwd.schema().returns().size();
  SSMLAB_CHECK(grads.size() == n_out, schema.name(), ": got ", grads.size(), " output gradients for ", n_out,
               " outputs of ", fwd_name);
  std::vector<Tensor> outs, gouts;
  {
    // Autograd must record below this kernel, whatever the caller excluded (e.g. a compiled backward).
    RecordingScope recording;
    redispatch_recording(fwd, c10::DispatchKeySet(ks.highestPriorityTypeId()), &fstack);
    for (size_t i = 0; i < n_out; ++i) {
      const Tensor& o = fstack[i].toTensor();
      if (!o.requires_grad()) continue;
      outs.push_back(o);
      gouts.push_back(grads[i].defined() ? grads[i] : at::zeros_like(o));
    }
    std::vector<Tensor> g;
    if (!outs.empty())
      g = torch::autograd::grad(outs, leaves, gouts, /*retain_graph=*/false, /*create_graph=*/false,
                                /*allow_unused=*/true);
    std::vector<Tensor> result(leaves.size());
    for (size_t j = 0; j < leaves.size(); ++j) {
      if (j < g.size() && g[j].defined()) {
        SSMLAB_CHECK(g[j].sizes() == like[j].sizes(), schema.name(), ": gradient ", j, " has shape ",
                     shape_str(g[j].sizes()), ", its input ", shape_str(like[j].sizes()));
        result[j] = as_dense(g[j].detach().to(like[j].scalar_type()));
      } else {
        result[j] = at::zeros(like[j].sizes(), like[j].options());
      }
    }
    stack->emplace_back(result);
  }
}

void autograd_backward_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks, Stack* stack) {
  const auto& schema = op.schema();
  const size_t n_args = schema.arguments().size();
  if (c10::GradMode::is_enabled()) {
    bool needs_grad = false;
    for (auto it = stack->end() - static_cast<std::ptrdiff_t>(n_args); it != stack->end() && !needs_grad; ++it) {
      if (it->isTensor()) needs_grad = it->toTensor().requires_grad();
      if (it->isTensorList())
        for (const Tensor& t : it->toTensorVector()) needs_grad = needs_grad || (t.defined() && t.requires_grad());
    }
    std::string fwd = schema.name();
    fwd.resize(fwd.size() - std::string("_backward").size());
    SSMLAB_CHECK(!needs_grad, double_backward_message(fwd));
  }
  at::AutoDispatchBelowADInplaceOrView guard;
  op.redispatchBoxed(ks & c10::after_ADInplaceOrView_keyset, stack);
}

void backward_meta_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet, Stack* stack) {
  const size_t n_args = op.schema().arguments().size();
  std::vector<Tensor> result;
  for (auto it = stack->end() - static_cast<std::ptrdiff_t>(n_args) + 1; it != stack->end(); ++it)
    if (differentiable(*it)) {
      const Tensor& t = it->toTensor();
      result.push_back(at::empty_symint(t.sym_sizes(), t.options()));
    }
  stack->erase(stack->end() - static_cast<std::ptrdiff_t>(n_args), stack->end());
  stack->emplace_back(result);
}

}  // namespace ssmlab::ops
