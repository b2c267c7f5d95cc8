#include "exit_handler.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <new>
#include <stdexcept>

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "ssmlab/core/exit_codes.h"
#include "ssmlab/runfolder/run_folder.h"
#include "ssmlab/report/io.h"

namespace ssmlab::app {
namespace {

// One line, at most ~2000 characters: a checkpoint mismatch lists every tensor on its own line, and a torch
// message may carry a C++ backtrace.
std::string one_line(std::string msg) {
  std::string out;
  for (size_t i = 0; i < msg.size(); ++i) {
    if (msg[i] == '\r') continue;
    if (msg[i] != '\n') {
      out += msg[i];
      continue;
    }
    while (i + 1 < msg.size() && (msg[i + 1] == ' ' || msg[i + 1] == '\n')) ++i;
    if (i + 1 < msg.size()) out += "; ";
  }
  if (out.size() > 2000) out = out.substr(0, 1997) + "...";
  return out;
}

struct Classified {
  int code;
  std::string message;
};

// The exception in flight, by category. Order matters: subclasses before their bases.
Classified classify() {
  try {
    throw;
  } catch (const ConfigError& e) {
    return {kExitConfig, e.what()};
  } catch (const DataError& e) {
    return {kExitData, e.what()};
  } catch (const Error& e) {
    return {kExitRuntime, e.what()};
  } catch (const report::ReportError& e) {
    return {kExitData, e.what()};
  } catch (const runfolder::RunFolderError& e) {
    return {kExitData, e.what()};
  } catch (const toml::parse_error& e) {
    return {kExitConfig, str("TOML syntax error at line ", e.source().begin.line, ": ", e.description())};
  } catch (const nlohmann::json::exception& e) {
    return {kExitData, str("bad JSON: ", e.what())};
  } catch (const c10::Error& e) {
    return {kExitRuntime, str("torch: ", e.what_without_backtrace())};
  } catch (const std::filesystem::filesystem_error& e) {
    return {kExitRuntime, str("file system: ", e.what())};
  } catch (const std::bad_alloc&) {
    return {kExitRuntime, "out of memory (std::bad_alloc): the model, batch or data do not fit"};
  } catch (const std::invalid_argument& e) {
    return {kExitRuntime, str("invalid argument: ", e.what())};
  } catch (const std::out_of_range& e) {
    return {kExitRuntime, str("value out of range: ", e.what())};
  } catch (const std::exception& e) {
    return {kExitRuntime, str("unexpected error: ", e.what())};
  } catch (...) {
    return {kExitRuntime, "unknown exception (not a std::exception)"};
  }
}

}  // namespace

int report_current_exception(const std::string& context) {
  Classified c{kExitRuntime, "out of memory while reporting an error"};
  try {
    c = classify();
    c.message = one_line(c.message);
  } catch (const std::bad_alloc&) {
  }
  std::fprintf(stderr, "ssmlab%s%s: error: %s\n", context.empty() ? "" : " ", context.c_str(), c.message.c_str());
  std::fflush(stderr);
  return c.code;
}

void install_terminate_handler() {
  std::set_terminate([] {
    int code = kExitRuntime;
    if (std::current_exception()) code = report_current_exception("(terminate)");
    else std::fprintf(stderr, "ssmlab: error: std::terminate without an exception\n");
    std::fflush(stdout);
    std::_Exit(code);
  });
}

}  // namespace ssmlab::app
