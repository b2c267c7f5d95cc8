#include "ssmlab/mixers/mixer.h"

#include "ssmlab/core/error.h"

namespace ssmlab::mixers {

const at::Tensor& State::at(const std::string& name) const {
  auto it = tensors.find(name);
  SSMLAB_CHECK(it != tensors.end(), "mixer state has no tensor '", name, "'");
  return it->second;
}

}  // namespace ssmlab::mixers
