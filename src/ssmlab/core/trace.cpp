#include "ssmlab/core/trace.h"

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"

namespace ssmlab {

void Trace::record(const std::string& name, int64_t layer, const at::Tensor& value) {
  values_[{name, layer}] = keep_graph ? value : value.detach().clone();
}

const at::Tensor& Trace::get(const std::string& name, int64_t layer) const {
  auto it = values_.find({name, layer});
  SSMLAB_CHECK(it != values_.end(), "Trace: nothing recorded under '", name, "' for layer ", layer);
  return it->second;
}

Trace Trace::segment(const std::set<std::string>& also) const {
  std::set<std::string> names = wanted_;
  if (!names.empty()) names.insert(also.begin(), also.end());  // empty already keeps every name
  Trace t(std::move(names));
  t.layer = layer;
  t.keep_graph = keep_graph;
  return t;
}

void Trace::merge_segments(const std::vector<Trace>& segments, const std::vector<int64_t>& lengths) {
  SSMLAB_CHECK(segments.size() == lengths.size(), "Trace::merge_segments: ", segments.size(), " segments but ",
               lengths.size(), " lengths");
  if (segments.empty()) return;
  std::map<std::pair<std::string, int64_t>, std::vector<at::Tensor>> pieces;
  for (size_t i = 0; i < segments.size(); ++i) {
    for (const auto& [key, value] : segments[i].values()) {
      if (key.first == "state") continue;
      SSMLAB_CHECK(value.dim() >= 2 && value.size(1) == lengths[i], "Trace: '", key.first, "' (layer ", key.second,
                   ") of segment ", i, " must be per position, (B, ", lengths[i], ", ...); got ",
                   shape_str(value.sizes()));
      pieces[key].push_back(value);
    }
  }
  // Already detached (or deliberately not) by the segments' own record calls: stored as they come.
  for (auto& [key, list] : pieces) {
    SSMLAB_CHECK(list.size() == segments.size(), "Trace: '", key.first, "' was recorded in ", list.size(), " of ",
                 segments.size(), " segments");
    values_[key] = list.size() == 1 ? list[0] : at::cat(list, 1);
  }
  for (const auto& [key, value] : segments.back().values())
    if (key.first == "state") values_[key] = value;
}

}  // namespace ssmlab
