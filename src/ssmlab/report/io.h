// File helpers of the report layer, which must not depend on LibTorch (docs/ARCHITECTURE.md, "report/"), so it
// cannot use core/io (whose errors come from core/error.h, which includes c10). Same discipline: whole files are
// written to a temp name and renamed into place; errors name the path and the OS reason.
#pragma once
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ssmlab::report {

// Every error the report layer raises (a missing or malformed run file, gnuplot missing or failing).
class ReportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void report_fail(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw ReportError(os.str());
}

// Writes `bytes` to `path` + ".tmp.<pid>", fsyncs, renames over `path`. The parent folder must exist.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// Renames `from` over `to` (same folder), naming both on failure.
void rename_into_place(const std::filesystem::path& from, const std::filesystem::path& to);

// The whole content of `path`; errors name the path.
std::string read_file(const std::filesystem::path& path);

// Standard base64 with '=' padding (PNG figures embedded as data: URIs).
std::string base64(std::string_view bytes);

}  // namespace ssmlab::report
