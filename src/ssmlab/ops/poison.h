// Test hook of the fast kernels: a switch that makes a kernel family allocate the outputs it writes filled with
// NaN instead of uninitialised, so a test sees every element the kernel forgets to write. One switch per family
// (the tests flip it with the family's set_poison_outputs), off by default; the cost when off is one atomic load.
#pragma once
#include <atomic>
#include <limits>

#include <ATen/ATen.h>

namespace ssmlab::ops {

class OutputPoison {
 public:
  void set(bool on) { on_.store(on); }
  bool on() const { return on_.load(); }
  // at::empty, or NaN-filled while the switch is on.
  at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& o) const {
    return on() ? at::full(sizes, std::numeric_limits<double>::quiet_NaN(), o) : at::empty(sizes, o);
  }

 private:
  std::atomic<bool> on_{false};
};

}  // namespace ssmlab::ops
