#include "ssmlab/core/trace.h"

#include "ssmlab/core/error.h"

namespace ssmlab {

void Trace::record(const std::string& name, int64_t layer, const at::Tensor& value) {
  values_[{name, layer}] = value.detach().clone();
}

const at::Tensor& Trace::get(const std::string& name, int64_t layer) const {
  auto it = values_.find({name, layer});
  SSMLAB_CHECK(it != values_.end(), "Trace: nothing recorded under '", name, "' for layer ", layer);
  return it->second;
}

}  // namespace ssmlab
