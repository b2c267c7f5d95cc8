#include "ssmlab/core/error.h"

#include <ATen/core/Tensor.h>

namespace ssmlab {

std::string shape_str(c10::IntArrayRef sizes) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < sizes.size(); ++i) os << (i ? ", " : "") << std::to_string(sizes[i]);  // error.h: no num_put
  os << ")";
  return os.str();
}

std::string tensor_str(const at::Tensor& t) {
  return t.defined() ? str(shape_str(t.sizes()), " ", c10::toString(t.scalar_type()), " on ", t.device().str())
                     : std::string("undefined");
}

}  // namespace ssmlab
