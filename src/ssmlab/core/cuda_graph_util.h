// What the CUDA-graph captures share (train/cuda_graph.cpp's training step, models/generate_graph.cpp's decode
// step): stream ordering, autocast's cast cache off while capturing, and a capture that is ended whatever happens.
// Include it only from a file compiled outside the unity batches with the toolkit's include folder
// (src/CMakeLists.txt): under SSMLAB_WITH_CUDA it includes c10's CUDA headers; without it, it is empty.
#pragma once
#ifdef SSMLAB_WITH_CUDA
#include <exception>
#include <string>

#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAStream.h>

namespace ssmlab::cuda_graph {

// `waiter` does nothing more until all work queued on `source` so far is done (torch.cuda.Stream.wait_stream).
inline void wait_stream(const c10::cuda::CUDAStream& waiter, const c10::cuda::CUDAStream& source) {
  c10::cuda::CUDAEvent ev;
  ev.record(source);
  ev.block(waiter);
}

// Autocast's cast cache off while capturing (its cached casts would outlive or alias the graph's memory);
// restored after, whatever happens.
class AutocastCacheOff {
 public:
  AutocastCacheOff() : was_(at::autocast::is_autocast_cache_enabled()) {
    at::autocast::set_autocast_cache_enabled(false);
  }
  ~AutocastCacheOff() { at::autocast::set_autocast_cache_enabled(was_); }
  AutocastCacheOff(const AutocastCacheOff&) = delete;
  AutocastCacheOff& operator=(const AutocastCacheOff&) = delete;

 private:
  bool was_;
};

// Captures body() into `graph` on the current stream (not the default stream: callers run this on a side
// stream), with autocast's cache off. An op that waits for the host or copies from it is not capturable: it
// throws, or it invalidates the capture and capture_end throws. The capture is ended either way (the allocator
// stops routing to the graph's pool). Returns the first error's text, empty when the capture succeeded.
template <class Body>
std::string capture_into(at::cuda::CUDAGraph& graph, Body&& body) {
  AutocastCacheOff cache_off;
  graph.capture_begin();
  std::string failure;
  try {
    body();
  } catch (const std::exception& e) {
    failure = e.what();
  }
  try {
    graph.capture_end();
  } catch (const std::exception& e) {
    if (failure.empty()) failure = e.what();
  }
  return failure;
}

}  // namespace ssmlab::cuda_graph

#endif  // SSMLAB_WITH_CUDA
