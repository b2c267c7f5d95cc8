// generate's decode through a CUDA graph (rules: generate_graph.h).
#include "ssmlab/models/generate_graph.h"

#include <memory>
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

namespace ssmlab::models {

at::Tensor step_in_static_state(LanguageModelImpl& model, const at::Tensor& token_t,
                                std::vector<mixers::State>& states) {
  std::vector<mixers::State> work = states;  // the same tensors; a mixer's rebinding lands here only
  at::Tensor logits = model.step(token_t, work);
  SSMLAB_CHECK(work.size() == states.size(), "generate --cuda-graph: the decode step returned ", work.size(),
               " layer states for ", states.size());
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // (the kept tensor, the step's new value)
  for (size_t i = 0; i < states.size(); ++i) {
    for (const auto& [name, now] : work[i].tensors) {
      const auto kept = states[i].tensors.find(name);
      if (kept == states[i].tensors.end() || !kept->second.defined())
        fail("generate --cuda-graph: the decode step added the state tensor '", name, "' to layer ", i,
             " (a captured step needs every state tensor to exist before it; decode without --cuda-graph)");
      const at::Tensor& before = kept->second;
      if (!now.defined() || now.sizes() != before.sizes() || now.scalar_type() != before.scalar_type() ||
          now.device() != before.device())
        fail("generate --cuda-graph: the decode step changed layer ", i, "'s state tensor '", name, "' from ",
             tensor_str(before), " to ", tensor_str(now),
             " (a captured step must keep its state's shapes, dtypes and device; decode without --cuda-graph)");
      if (!now.is_same(before)) copies.emplace_back(before, now);
    }
    SSMLAB_CHECK(work[i].tensors.size() == states[i].tensors.size(), "generate --cuda-graph: the decode step ",
                 "dropped a state tensor of layer ", i, " (", states[i].tensors.size(), " before, ",
                 work[i].tensors.size(), " after)");
  }
  // A new value that shares memory with a tensor about to be overwritten (e.g. a snapshot rebound to another
  // state tensor) is taken before any copy.
  for (auto& c : copies)
    for (const auto& other : copies)
      if (c.second.is_alias_of(other.first)) {
        c.second = c.second.clone();
        break;
      }
  for (const auto& [dst, src] : copies) dst.copy_(src);
  return logits;
}

#ifdef SSMLAB_WITH_CUDA

namespace {

constexpr int64_t kDecodeGraphWarmups = 2;    // eager steps on the side stream before the capture (mamba_ssm: 2)
constexpr int64_t kDecodeGraphEosBatch = 16;  // greedy with a stop token: tokens read back at a time

}  // namespace

int64_t decode_with_cuda_graph(LanguageModelImpl& model, std::vector<mixers::State>& states, int64_t last_token,
                               int64_t count, const GenerateOptions& opts, at::Generator& gen,
                               std::vector<int64_t>& tokens) {
  if (count <= 0) return 0;
  c10::Device dev = model.embedding->weight.device();
  SSMLAB_CHECK(dev.is_cuda(), "generate --cuda-graph: the model must be on a CUDA device; it is on ", dev.str());
  if (!dev.has_index()) dev = c10::Device(c10::kCUDA, c10::cuda::current_device());
  c10::cuda::CUDAGuard device_guard(dev);
  const bool greedy = opts.temperature == 0.0;
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(dev);
  // Static tensors, outside the graph's pool: the step's input token (greedy: also its output), and for greedy
  // every generated token at the position a device counter gives.
  const at::Tensor token = at::full({1, 1}, last_token, i64);  // (B, 1), B = 1
  const at::Tensor history = at::zeros({count}, i64);
  const at::Tensor counter = at::zeros({1}, i64);
  auto body = [&]() -> at::Tensor {
    at::Tensor logits = step_in_static_state(model, token.select(1, 0), states);  // (1, V)
    if (greedy) {
      const at::Tensor next = logits.argmax(-1, /*keepdim=*/true);  // (1, 1) int64, the first maximum
      token.copy_(next);
      history.index_copy_(0, counter, next.view({1}));
      counter.add_(1);
    }
    return logits;
  };

  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, dev.index());
  // fn() on the side stream, ordered after everything queued on the current stream before and before
  // everything queued on it after (capture cannot run on the default stream).
  auto on_side = [&](auto&& fn) {
    const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(dev.index());
    cuda_graph::wait_stream(side, current);
    {
      c10::cuda::CUDAStreamGuard stream_guard(side);
      fn();
    }
    cuda_graph::wait_stream(current, side);
  };
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  at::Tensor graph_logits;  // the captured step's output: every replay rewrites it
  int64_t replays = 0, read = 0;
  for (int64_t n = 0; n < count; ++n) {
    at::Tensor logits;
    if (n < kDecodeGraphWarmups) {
      // Lazy initialisation (cuBLAS handles and workspaces of the side stream) outside the capture; these are
      // real decode steps.
      on_side([&] { logits = body(); });
    } else {
      if (!graph) {
        auto g = std::make_unique<at::cuda::CUDAGraph>();
        std::string failure;
        on_side([&] { failure = cuda_graph::capture_into(*g, [&] { graph_logits = body(); }); });
        if (!failure.empty())
          fail("generate --cuda-graph: capturing the decode step failed: ", failure,
               " (an op of this model's step synchronises with the host; decode without --cuda-graph)");
        graph = std::move(g);
      }
      graph->replay();  // the capture ran nothing: this replay is step n
      ++replays;
      logits = graph_logits;
    }
    if (greedy) {
      const bool last = n + 1 == count;
      if (!last && !(opts.eos_token_id && (n + 1) % kDecodeGraphEosBatch == 0)) continue;
      const at::Tensor host = history.narrow(0, read, n + 1 - read).cpu();  // waits for the steps so far
      const int64_t* p = host.data_ptr<int64_t>();
      for (int64_t j = 0; j < host.numel(); ++j) {
        tokens.push_back(p[j]);
        if (opts.eos_token_id && p[j] == *opts.eos_token_id) return replays;  // later steps' tokens dropped
      }
      read = n + 1;
    } else {
      const int64_t next = sample_token(logits, opts, gen);  // reads the logits back (a host sync)
      tokens.push_back(next);
      if (opts.eos_token_id && next == *opts.eos_token_id) break;
      token.fill_(next);  // queued before the next step
    }
  }
  return replays;
}

#else  // no CUDA kernels linked: nothing to capture on

int64_t decode_with_cuda_graph(LanguageModelImpl& model, std::vector<mixers::State>&, int64_t, int64_t,
                               const GenerateOptions&, at::Generator&, std::vector<int64_t>&) {
  fail("generate --cuda-graph needs a CUDA build (SSMLAB_CUDA=ON) and a CUDA device; this build has no CUDA "
       "(the model is on ", model.embedding->weight.device().str(), ")");
}

#endif

}  // namespace ssmlab::models
