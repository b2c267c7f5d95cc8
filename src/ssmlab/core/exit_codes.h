// The exit codes of the `ssmlab` command, one per category of failure, so that scripts and the sweep
// runner can tell a typo from a corrupt file from a crash. apps/main.cpp maps every exception to one of
// them (README, "Exit codes"). No LibTorch here: the report layer may use it too.
#pragma once

namespace ssmlab {

enum ExitCode : int {
  kExitOk = 0,
  kExitPartial = 1,  // the command ran, but part of it failed (a sweep run, a report figure)
  kExitConfig = 2,   // bad command line or config (ssmlab::ConfigError, TOML syntax, CLI usage)
  kExitData = 3,     // bad data or checkpoint file (ssmlab::DataError, JSON, report input files)
  kExitRuntime = 4,  // anything else: torch, out of memory, file system, a plain ssmlab::Error
  kExitInterrupted = 130,  // Ctrl-C (128 + SIGINT, as shells report it)
};

}  // namespace ssmlab
