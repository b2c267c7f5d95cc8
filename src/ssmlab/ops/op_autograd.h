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
// X_backward's Autograd kernel: X_backward is not differentiable; a call that would record a graph (grad mode on
// and an input that requires grad: double backward) is refused with an error instead of returning gradients
// that are silently cut from the graph. Otherwise it runs X_backward below autograd.
void autograd_backward_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack);
// X_backward's Meta kernel: one empty contiguous tensor per floating-point tensor input, shaped like it.
void backward_meta_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack);

// t itself when it is exactly what a Meta kernel describes (storage offset 0, the contiguous strides of its
// sizes, size-1 dimensions included), else a copy that is.
at::Tensor as_dense(const at::Tensor& t);

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
