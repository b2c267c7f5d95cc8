// The one place where the `ssmlab` command turns an exception into a message and an exit code
// (core/exit_codes.h; README, "Exit codes").
#pragma once
#include <string>

#include "ssmlab/core/error_kinds.h"

namespace ssmlab::app {

// Call inside a catch block: prints one line, "ssmlab <context>: error: <what>", to stderr (newlines of a
// long message folded into "; ") and returns the exit code of the exception's category.
int report_current_exception(const std::string& context);

// Runs `f`; an ssmlab::Error that is not already a ConfigError or DataError becomes a ConfigError. For the
// phase where a config or sweep file is read and resolved, so that a bad value found by any check there (a
// task's own segment check, say) exits as a config error.
template <class F>
auto as_config_error(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const ConfigError&) {
    throw;
  } catch (const DataError&) {
    throw;
  } catch (const Error& e) {
    throw ConfigError(e.what());
  }
}

// A std::terminate handler that prints one line and exits with the runtime code rather than aborting
// with a core dump (an exception escaping a thread or a noexcept function).
void install_terminate_handler();

}  // namespace ssmlab::app
