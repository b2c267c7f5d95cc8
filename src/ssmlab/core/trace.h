// Trace: how analyses see inside a model. A mixer or block reports named intermediates per layer
// ("mixer_out", "block_out", "dt", "state", ...) through `record`; when no Trace is passed (nullptr)
// or the name is not wanted, nothing is computed or kept.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>

#include <ATen/core/Tensor.h>

namespace ssmlab {

class Trace {
 public:
  // Empty `wanted` means: keep every name.
  explicit Trace(std::set<std::string> wanted = {}) : wanted_(std::move(wanted)) {}

  bool wants(const std::string& name) const { return wanted_.empty() || wanted_.count(name) > 0; }

  // Keeps a detached copy of `value` under (name, layer).
  void record(const std::string& name, int64_t layer, const at::Tensor& value);

  const at::Tensor& get(const std::string& name, int64_t layer) const;
  bool has(const std::string& name, int64_t layer) const { return values_.count({name, layer}) > 0; }
  const std::map<std::pair<std::string, int64_t>, at::Tensor>& values() const { return values_; }

  // The layer index that blocks stamp on their records (set by the model before each block).
  int64_t layer = 0;

 private:
  std::set<std::string> wanted_;
  std::map<std::pair<std::string, int64_t>, at::Tensor> values_;
};

// Helper for call sites: `trace_record(trace, "dt", dt)` is free when trace is null.
inline void trace_record(Trace* trace, const char* name, const at::Tensor& value) {
  if (trace != nullptr && trace->wants(name)) trace->record(name, trace->layer, value);
}

}  // namespace ssmlab
