// Errors and boundary checks. Check at the boundary, trust inside: every public entry validates its
// inputs with SSMLAB_CHECK and says what it expected and what came.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>

namespace at {
class Tensor;
}  // namespace at

namespace ssmlab {

// All errors that ssmlab raises for bad input (config, data, checkpoint, shapes) are this type.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  return os.str();
}

template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(::ssmlab::str(args...));
}

// "(2, 3, 4)" for shape messages.
std::string shape_str(c10::IntArrayRef sizes);

// "(2, 3) Float on cpu" (or "undefined") for messages about a tensor argument.
std::string tensor_str(const at::Tensor& t);

}  // namespace ssmlab

#define SSMLAB_CHECK(cond, ...)                          \
  do {                                                   \
    if (!(cond)) ::ssmlab::fail(__VA_ARGS__);            \
  } while (0)
