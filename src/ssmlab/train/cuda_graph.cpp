#include "ssmlab/train/cuda_graph.h"

#include <exception>
#include <string>
#include <utility>

#include "ssmlab/core/error.h"

#ifdef SSMLAB_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ssmlab/core/cuda_graph_util.h"
#endif

namespace ssmlab::train {

DeviceLossLog::DeviceLossLog(c10::Device device) {
  const auto f64 = at::TensorOptions().dtype(at::kDouble).device(device);
  sum_ = at::zeros({}, f64);
  step_ = at::zeros({}, f64);
  first_bad_ = at::zeros({2}, f64);
}

void DeviceLossLog::set_step(int64_t step) { step_.fill_(static_cast<double>(step)); }

void DeviceLossLog::record(const at::Tensor& loss) {
  at::NoGradGuard no_grad;
  const at::Tensor l = loss.detach().to(at::kDouble).reshape({});
  sum_.add_(l);
  const at::Tensor first = first_bad_.select(0, 0).eq(0).logical_and(at::isfinite(l).logical_not());
  first_bad_.copy_(at::where(first, at::stack({step_, l}), first_bad_));
}

DeviceLossLog::Taken DeviceLossLog::take() {
  const at::Tensor host = at::cat({sum_.reshape({1}), first_bad_}).cpu();
  sum_.zero_();
  const auto a = host.accessor<double, 1>();
  return {a[0], static_cast<int64_t>(a[1]), a[2]};
}

#ifdef SSMLAB_WITH_CUDA

struct CudaGraphStep::Impl {
  c10::Device device;
  Body body;
  std::function<void()> zero_grad;
  int64_t warmup_steps;
  int64_t warmed = 0;
  int64_t replays = 0;
  at::Tensor static_inputs, static_targets;
  c10::cuda::CUDAStream side;
  std::unique_ptr<at::cuda::CUDAGraph> graph;

  Impl(c10::Device d, Body b, std::function<void()> z, int64_t w)
      : device(d), body(std::move(b)), zero_grad(std::move(z)), warmup_steps(w),
        side(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, d.index())) {}

  // Runs `fn` on the side stream, ordered after everything queued on the current stream before, and before
  // everything queued on it after.
  template <class Fn>
  void on_side(Fn&& fn) {
    const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(device.index());
    cuda_graph::wait_stream(side, current);
    {
      c10::cuda::CUDAStreamGuard guard(side);
      fn();
    }
    cuda_graph::wait_stream(current, side);
  }
};

CudaGraphStep::CudaGraphStep(c10::Device device, Body body, std::function<void()> zero_grad, int64_t warmup_steps) {
  SSMLAB_CHECK(device.is_cuda(), "train.cuda_graph: the device must be a CUDA device; got ", device.str());
  SSMLAB_CHECK(warmup_steps >= 1, "train.cuda_graph: at least one eager warm-up step is needed; got ", warmup_steps);
  if (!device.has_index()) device = c10::Device(c10::kCUDA, c10::cuda::current_device());
  c10::cuda::CUDAGuard guard(device);
  impl_ = std::make_unique<Impl>(device, std::move(body), std::move(zero_grad), warmup_steps);
}

CudaGraphStep::~CudaGraphStep() = default;

bool CudaGraphStep::accepts(const at::Tensor& inputs, const at::Tensor& targets) const {
  const Impl& m = *impl_;
  if (!m.static_inputs.defined()) return true;  // the first batch fixes the shapes
  return inputs.sizes() == m.static_inputs.sizes() && inputs.scalar_type() == m.static_inputs.scalar_type() &&
         targets.sizes() == m.static_targets.sizes() && targets.scalar_type() == m.static_targets.scalar_type();
}

void CudaGraphStep::run(const at::Tensor& inputs, const at::Tensor& targets) {
  Impl& m = *impl_;
  SSMLAB_CHECK(accepts(inputs, targets), "CudaGraphStep::run: a batch of inputs ", inputs.sizes(), " and targets ",
               targets.sizes(), " does not match the captured shapes ", m.static_inputs.sizes(), " and ",
               m.static_targets.sizes(), " (the caller runs such a batch eagerly)");
  c10::cuda::CUDAGuard guard(m.device);
  if (!m.static_inputs.defined()) {
    m.static_inputs = at::empty(inputs.sizes(), inputs.options().device(m.device));
    m.static_targets = at::empty(targets.sizes(), targets.options().device(m.device));
  }
  m.static_inputs.copy_(inputs, /*non_blocking=*/true);
  m.static_targets.copy_(targets, /*non_blocking=*/true);
  if (m.warmed < m.warmup_steps) {
    // Eager steps on the side stream first: lazy initialisation (optimizer state, cuBLAS workspaces, autograd's
    // device threads) happens outside the capture.
    m.on_side([&] {
      m.zero_grad();
      m.body(m.static_inputs, m.static_targets);
    });
    ++m.warmed;
    return;
  }
  if (!m.graph) {
    auto graph = std::make_unique<at::cuda::CUDAGraph>();
    // Gradients set to none: the captured backward allocates them from the graph's pool, and every replay
    // writes them afresh (no zeroing between replays).
    m.zero_grad();
    m.on_side([&] {
      // The capture is ended before the error says what to do (cuda_graph::capture_into).
      const std::string failure =
          cuda_graph::capture_into(*graph, [&] { m.body(m.static_inputs, m.static_targets); });
      if (!failure.empty())
        fail("train.cuda_graph: capturing the training step failed: ", failure,
             " (an op of this model or task synchronises with the host during the step; set train.cuda_graph = "
             "false to train eagerly)");
    });
    m.graph = std::move(graph);
  }
  m.graph->replay();  // the capture ran nothing: the captured step runs here too
  ++m.replays;
}

bool CudaGraphStep::captured() const { return impl_->graph != nullptr; }

int64_t CudaGraphStep::replays() const { return impl_->replays; }

#else  // no CUDA kernels linked: nothing to capture on

struct CudaGraphStep::Impl {};

CudaGraphStep::CudaGraphStep(c10::Device device, Body, std::function<void()>, int64_t) {
  fail("train.cuda_graph needs a CUDA build (SSMLAB_CUDA=ON) and a CUDA device; this build has no CUDA (device ",
       device.str(), ")");
}

CudaGraphStep::~CudaGraphStep() = default;

bool CudaGraphStep::accepts(const at::Tensor&, const at::Tensor&) const { return false; }

void CudaGraphStep::run(const at::Tensor&, const at::Tensor&) { fail("train.cuda_graph: this build has no CUDA"); }

bool CudaGraphStep::captured() const { return false; }

int64_t CudaGraphStep::replays() const { return 0; }

#endif

}  // namespace ssmlab::train
