// Precompiled header for the layers above ops: ATen, torch::nn modules and optimizers (never torch/torch.h).
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/modules/dropout.h>
#include <torch/optim/adamw.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <map>
