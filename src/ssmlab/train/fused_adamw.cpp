#include "ssmlab/train/fused_adamw.h"

#include <map>
#include <tuple>

#include "ssmlab/core/error.h"

namespace ssmlab::train {

FusedAdamW::FusedAdamW(torch::optim::AdamW& opt) : opt_(opt) {}

void FusedAdamW::step() { step_impl(nullptr); }

void FusedAdamW::step(const at::Tensor& lr) {
  SSMLAB_CHECK(lr.defined() && lr.dim() == 0 && lr.is_floating_point(),
               "FusedAdamW::step: lr must be a 0-d floating-point tensor");
  step_impl(&lr);
}

at::Tensor FusedAdamW::device_step(const at::Tensor& p) const {
  const auto it = steps_.find(p.unsafeGetTensorImpl());
  return it == steps_.end() ? at::Tensor() : it->second;
}

void FusedAdamW::step_impl(const at::Tensor* lr) {
  at::NoGradGuard no_grad;
  for (auto& group : opt_.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    // One fused call per (device, dtype) of the group's parameters: the multi-tensor kernels want one of each.
    struct FusedAdamWBucket {
      std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps;
    };
    std::map<std::tuple<int, int, int>, FusedAdamWBucket> buckets;
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;  // as opt.step(): no gradient, no step (and no state yet)
      SSMLAB_CHECK(!p.grad().is_sparse(), "FusedAdamW: sparse gradients are not supported");
      void* key = p.unsafeGetTensorImpl();
      auto& slot = opt_.state()[key];
      if (!slot) {  // the lazy state of torch::optim::AdamW::step
        auto s = std::make_unique<torch::optim::AdamWParamState>();
        s->step(0);
        s->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
        s->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        if (o.amsgrad()) s->max_exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        slot = std::move(s);
      }
      auto* s = dynamic_cast<torch::optim::AdamWParamState*>(slot.get());
      SSMLAB_CHECK(s != nullptr, "FusedAdamW: the optimizer state of a parameter is not an AdamWParamState");
      if (o.amsgrad() && !s->max_exp_avg_sq().defined())
        s->max_exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
      auto it = steps_.find(key);
      if (it == steps_.end())
        it = steps_
                 .emplace(key, at::full({}, static_cast<double>(s->step()),
                                        at::TensorOptions().dtype(at::kFloat).device(p.device())))
                 .first;
      s->step(s->step() + 1);  // the host count (exact for eager steps; sync_host_steps after graph replays)
      auto& b = buckets[{static_cast<int>(p.device().type()), static_cast<int>(p.device().index()),
                         static_cast<int>(p.scalar_type())}];
      b.params.push_back(p);
      b.grads.push_back(p.grad());
      b.exp_avgs.push_back(s->exp_avg());
      b.exp_avg_sqs.push_back(s->exp_avg_sq());
      if (o.amsgrad()) b.max_exp_avg_sqs.push_back(s->max_exp_avg_sq());
      b.steps.push_back(it->second);
    }
    const auto [beta1, beta2] = o.betas();
    for (auto& [k, b] : buckets) {
      // The kernels read the step as already counted (torch.optim's _fused_adamw increments first).
      at::_foreach_add_(b.steps, 1);
      if (lr == nullptr) {
        at::_fused_adamw_(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs, b.max_exp_avg_sqs, b.steps, o.lr(), beta1,
                          beta2, o.weight_decay(), o.eps(), o.amsgrad(), /*maximize=*/false);
      } else {
        const at::Device dev = b.params.front().device();
        // CUDA kernels read lr as a float32 on the parameters' device; the CPU kernel takes its value.
        const at::Tensor lr_here =
            dev.is_cpu() ? *lr : (lr->device() == dev && lr->scalar_type() == at::kFloat ? *lr : lr->to(dev, at::kFloat));
        at::_fused_adamw_(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs, b.max_exp_avg_sqs, b.steps, lr_here, beta1,
                          beta2, o.weight_decay(), o.eps(), o.amsgrad(), /*maximize=*/false);
      }
    }
  }
}

void FusedAdamW::sync_host_steps() {
  std::vector<at::Tensor> counts;
  std::vector<torch::optim::AdamWParamState*> states;
  for (const auto& [key, t] : steps_) {
    auto it = opt_.state().find(const_cast<void*>(key));
    if (it == opt_.state().end()) continue;
    auto* s = dynamic_cast<torch::optim::AdamWParamState*>(it->second.get());
    if (s == nullptr) continue;
    counts.push_back(t.to(at::kCPU, at::kDouble));
    states.push_back(s);
  }
  for (size_t i = 0; i < states.size(); ++i) states[i]->step(static_cast<int64_t>(counts[i].item<double>()));
}

at::Tensor clip_grad_norm_nosync(const std::vector<at::Tensor>& params, double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return {};
  const std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2);
  const at::Tensor total = norms.size() == 1 ? norms.front() : at::stack(norms).norm(2);
  const at::Tensor coef = at::clamp(max_norm / (total + 1e-6), std::nullopt, 1.0);
  at::_foreach_mul_(grads, coef);
  return total;
}

}  // namespace ssmlab::train
