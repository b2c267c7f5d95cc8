// train.cuda_graph: one training step (forward, loss, backward, clipping, optimizer) of a fixed batch shape,
// captured into an at::cuda::CUDAGraph and replayed (docs/ARCHITECTURE.md, "train/"). No CUDA header here: the
// graph lives behind a pointer, and a build without the CUDA kernels (no SSMLAB_WITH_CUDA) has none (the
// constructor throws; the trainer refuses train.cuda_graph on a CPU device before that).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

#include <ATen/ATen.h>

namespace ssmlab::train {

// The training loss of steps whose value stays on the device (graph replays): summed there, and the first
// non-finite one remembered with its step, read back only when asked (a host sync). Works on any device.
class DeviceLossLog {
 public:
  explicit DeviceLossLog(c10::Device device);
  // The 1-based global step the next record() belongs to (a fill, outside any graph: no sync).
  void set_step(int64_t step);
  // Inside the step (capturable): adds the 0-d loss to the sum; if it is not finite and none was before, keeps
  // it and the step.
  void record(const at::Tensor& loss);
  struct Taken {
    double loss_sum = 0.0;   // of the steps recorded since the last take()
    int64_t bad_step = 0;    // the first step whose loss was not finite, 0 = none (never reset)
    double bad_loss = 0.0;   // its loss
  };
  // Reads the sum (and zeroes it) and the first non-finite loss.
  Taken take();

 private:
  at::Tensor sum_, step_, first_bad_;  // float64: sum; step; (step, loss)
};

class CudaGraphStep {
 public:
  // body(inputs, targets): the whole step on the current stream, no host sync, outputs only into tensors that
  // outlive the graph (parameters, optimizer state, device metrics). zero_grad: sets every gradient to none.
  using Body = std::function<void(const at::Tensor& inputs, const at::Tensor& targets)>;
  CudaGraphStep(c10::Device device, Body body, std::function<void()> zero_grad, int64_t warmup_steps = 3);
  ~CudaGraphStep();
  CudaGraphStep(const CudaGraphStep&) = delete;
  CudaGraphStep& operator=(const CudaGraphStep&) = delete;

  // The first batch seen fixes the shapes and dtypes; a batch that matches them can go through run().
  bool accepts(const at::Tensor& inputs, const at::Tensor& targets) const;
  // Copies the batch (any device) into the static input tensors, then: the first `warmup_steps` calls run the
  // body eagerly on a side stream (after zero_grad); the next one captures it (gradients set to none first, so
  // the backward allocates them in the graph's pool) and replays it; every later call only replays.
  void run(const at::Tensor& inputs, const at::Tensor& targets);
  bool captured() const;
  int64_t replays() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssmlab::train
