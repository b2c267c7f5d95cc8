// Trace: how analyses see inside a model. A mixer or block reports named intermediates per layer through
// `record`; when no Trace is passed (nullptr) or the name is not wanted, nothing is computed or kept. The names
// and their shapes per mixer are one vocabulary, docs/GLOSSARY.md "Trace names" (tests parse its tables).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ssmlab {

class Trace {
 public:
  // Empty `wanted` means: keep every name (except the explicit-only ones, see wants_explicitly).
  explicit Trace(std::set<std::string> wanted = {}) : wanted_(std::move(wanted)) {}

  bool wants(const std::string& name) const { return wanted_.empty() || wanted_.count(name) > 0; }
  // True only when `name` is in the wanted set: for records too large for a keep-everything Trace (Mamba-1's
  // per-channel decay, (B, L, E, N)), which a mixer computes only when an analysis names them.
  bool wants_explicitly(const std::string& name) const { return wanted_.count(name) > 0; }
  const std::set<std::string>& wanted() const { return wanted_; }

  // Keeps `value` under (name, layer): a detached copy, or with keep_graph the tensor itself.
  void record(const std::string& name, int64_t layer, const at::Tensor& value);

  const at::Tensor& get(const std::string& name, int64_t layer) const;
  bool has(const std::string& name, int64_t layer) const { return values_.count({name, layer}) > 0; }
  const std::map<std::pair<std::string, int64_t>, at::Tensor>& values() const { return values_; }

  // An empty Trace asking for the same names with the same options, for one segment of a sequence cut into
  // segments (Block's state snapshots, Mamba-2's pieces); merge_segments gathers the segments back.
  // `also`: names the segments must record whatever this Trace asks for (Block adds `state` for snapshots).
  Trace segment(const std::set<std::string>& also = {}) const;
  // Records the segments' records, in sequence order, as one sequence's: `state` from the last segment (the
  // final state), every other name concatenated along dim 1 (positions). Names other than `state` must be
  // per position, (B, length, ...) with `lengths[i]` the length of segment i, else an Error names the name:
  // that holds for every mixer that supports forward_stateful.
  void merge_segments(const std::vector<Trace>& segments, const std::vector<int64_t>& lengths);

  // The layer index that blocks stamp on their records (set by the model before each block).
  int64_t layer = 0;
  // Keep recorded tensors as they are (no detach, no copy), so an analysis can take gradients of recorded
  // intermediates with respect to inputs or parameters. A kept tensor may share storage with the model's
  // (e.g. a decode state updated in place later). Off: a detached copy, which holds no graph.
  bool keep_graph = false;
  // > 0: Block::forward records `state` every `state_every` positions, (B, S, ...state dims) with
  // S = ceil(L / state_every), snapshot i taken after position min((i + 1)·state_every, L) - 1, by running the
  // mixer's forward_stateful segment by segment (mixers without it give an Error). 0: the final state only.
  int64_t state_every = 0;

 private:
  std::set<std::string> wanted_;
  std::map<std::pair<std::string, int64_t>, at::Tensor> values_;
};

// Helper for call sites: `trace_record(trace, "dt", dt)` is free when trace is null.
inline void trace_record(Trace* trace, const char* name, const at::Tensor& value) {
  if (trace != nullptr && trace->wants(name)) trace->record(name, trace->layer, value);
}

}  // namespace ssmlab
