// Precompiled header of libssmlab_ops: ATen and the autograd Function API, nothing of torch/nn.
#pragma once
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
