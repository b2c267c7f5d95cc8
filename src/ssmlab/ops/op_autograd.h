// How the ssmlab::<op> schemas are served below and above autograd (docs/ARCHITECTURE.md, "The op").
// Each differentiable op `X` is functional: the CPU/CUDA kernels run the C++ entry without recording a graph,
// the Autograd kernel (generic, boxed) saves the inputs and attaches one node whose backward calls the op
// `X_backward(Tensor[] grads, <X's arguments>) -> Tensor[]`, which recomputes X's forward with autograd on and
// returns the gradients of X's floating-point tensor inputs that are present, in argument order (zeros where
// no output depends on one), each contiguous in its input's dtype. X_backward's Meta kernel is therefore
// generic too; X's own Meta kernel lives in ops/meta.cpp. Decode steps (ops with a Tensor(a!) argument) are not
// differentiable: their Autograd kernel runs them below autograd and bumps the mutated state's version.
#pragma once
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

namespace ssmlab::ops {

// The Autograd kernel of a differentiable op (see above).
void autograd_recompute_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack);
// The Autograd kernel of a decode step: refuses a state that requires grad, runs the op below autograd and
// bumps the version of every Tensor(a!) argument.
void autograd_decode_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack);
// X_backward's CPU/CUDA kernel: recompute X with autograd and differentiate.
void backward_recompute_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack);
// X_backward's Meta kernel: one empty contiguous tensor per floating-point tensor input, shaped like it.
void backward_meta_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack);

// True while a CPU/CUDA kernel runs for backward_recompute_kernel: it must then record the autograd graph of
// the C++ entry instead of running it under no_grad. Read and cleared by ForwardGradScope.
class ForwardGradScope {
 public:
  ForwardGradScope();
  ~ForwardGradScope();
  ForwardGradScope(const ForwardGradScope&) = delete;
  ForwardGradScope& operator=(const ForwardGradScope&) = delete;

 private:
  bool prev_grad_mode_;
  bool prev_recompute_;
};

}  // namespace ssmlab::ops
