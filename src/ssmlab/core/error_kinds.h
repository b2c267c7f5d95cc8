// The categories of ssmlab::Error (core/error.h). A plain Error is a runtime failure; these two say that
// the input was at fault, so `ssmlab` exits with that category's code (core/exit_codes.h). Kept out of
// error.h, which nearly every file includes, so that throwing them costs a rebuild only of those that do.
#pragma once
#include "ssmlab/core/error.h"

namespace ssmlab {

// A bad command line or config: TOML syntax, unknown key, wrong type, out-of-range value, --set, --filter.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A bad or inconsistent data file: checkpoint, safetensors, state.json, checksums, metrics.jsonl.
class DataError : public Error {
 public:
  using Error::Error;
};

template <class... Args>
[[noreturn]] void fail_config(const Args&... args) {
  throw ConfigError(::ssmlab::str(args...));
}

template <class... Args>
[[noreturn]] void fail_data(const Args&... args) {
  throw DataError(::ssmlab::str(args...));
}

}  // namespace ssmlab
