// Errors and boundary checks. Check at the boundary, trust inside: every public entry validates its
// inputs with SSMLAB_CHECK and says what it expected and what came.
#pragma once
#include <cstdio>
#include <sstream>
#include <type_traits>
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
// Numbers are formatted with std::to_string / snprintf and inserted as text, never through the stream's num_put
// facet: in a Python process whose libstdc++ is not the one libssmlab_ops.so was built with (the GPU machine's
// /opt/gcc 13 toolchain, 2026-12-07), `os << long` inside the library crashed (SIGSEGV in the facet lookup) while
// building an ordinary warning. Same text as the stream's defaults: integers in decimal, bool as 0/1, floating
// point as %g (6 significant digits).
template <class T>
void append_one(std::ostringstream& os, const T& v) {
  if constexpr (std::is_same_v<T, bool>) {
    os << (v ? "1" : "0");
  } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, char> && !std::is_same_v<T, signed char> &&
                       !std::is_same_v<T, unsigned char>) {
    os << std::to_string(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
    os << buf;
  } else {
    os << v;
  }
}
inline void append(std::ostringstream&) {}
template <class T, class... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  append_one(os, v);
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
