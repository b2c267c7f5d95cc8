// Host launchers of the CUDA WKV (cuda.cu, kernels in kernel_wkv.cuh); no autograd here (autograd.cpp
// wraps them). Defined only where the CUDA kernels are linked (SSMLAB_WITH_CUDA). Tensors as in cpu.h, on one
// CUDA device, contiguous, in the compute dtype (float32 or float64).
#pragma once
#include <ATen/core/Tensor.h>

#include "ssmlab/ops/wkv/cpu.h"

namespace ssmlab::ops::wkv_cuda_host {

wkv_cpu::Forward forward(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& h0);
wkv_cpu::Grads backward(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& h0, const at::Tensor& y, const at::Tensor& states, const at::Tensor& dy,
                        const at::Tensor& dfinal);

}  // namespace ssmlab::ops::wkv_cuda_host
