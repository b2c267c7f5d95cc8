// generate's decode through a CUDA graph (GenerateOptions::cuda_graph, `ssmlab generate --cuda-graph`): one decode
// step -- the token embedding read from a static (1, 1) int64 token tensor, LanguageModel::step over every layer
// with the recurrent state kept in the same tensors, the head, and for greedy decoding the argmax written back into
// the token tensor and into a device-side token list -- captured into an at::cuda::CUDAGraph and replayed once per
// new token. No CUDA header here: the graph lives in the .cpp, under SSMLAB_WITH_CUDA (compiled outside the unity
// batches, src/CMakeLists.txt); a build without it throws.
#pragma once
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "ssmlab/models/generate.h"
#include "ssmlab/models/language_model.h"

namespace ssmlab::models {

// LanguageModel::step (token_t (B) -> logits (B, V)) whose recurrent state ends in the tensors it started in:
// the step runs on a shallow copy of `states`, and every state tensor that a mixer rebound (Mamba-2's SSM state,
// a dtype change) is copied back into the tensor `states` holds (sources that alias another copied tensor are
// cloned first). What a captured graph needs: its replays read and write fixed addresses. An Error names a
// layer's state tensor that the step added, dropped, or changed in shape, dtype or device.
at::Tensor step_in_static_state(LanguageModelImpl& model, const at::Tensor& token_t,
                                std::vector<mixers::State>& states);

// Generates `count` tokens after `last_token` (appended to `tokens`; stops after opts.eos_token_id) from
// `states`, the state after the prompt and at least one eager step (so that every state tensor has its final
// shape and dtype; the decode runs under the caller's autocast and NoGradGuard). The first two steps run eagerly
// on a side stream (warm-up), the third is captured, and it and every later one are graph replays. Greedy
// (opts.temperature == 0): the argmax stays on the device and the tokens are read back once at the end, or every
// 16 tokens when a stop token is set. Sampling: the replay's logits are read back for sample_token (a host sync
// per token) and the drawn token is written into the static token tensor. Returns the number of replays.
int64_t decode_with_cuda_graph(LanguageModelImpl& model, std::vector<mixers::State>& states, int64_t last_token,
                               int64_t count, const GenerateOptions& opts, at::Generator& gen,
                               std::vector<int64_t>& tokens);

}  // namespace ssmlab::models
