// Fuzz targets of the readers that take files from outside: one file per target (target_<name>.cpp), listed
// once in targets.cpp. A target runs one input through the reader; it returns for an accepted input and
// for the documented errors (ssmlab::Error and its ConfigError/DataError, report::ReportError), and lets
// anything else escape, which the drivers count as a crash: libfuzzer_main.cpp (clang, -DSSMLAB_FUZZ=ON)
// and the fixed-seed mutation loop of tests/fuzz/test_fuzz_loop.cpp that runs in the normal suite.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace ssmlab::fuzz {

struct Target {
  const char* name;
  void (*run)(std::string_view input);
  std::vector<std::string> (*seeds)();  // valid inputs the mutations start from
};

// Every target (targets.cpp).
const std::vector<Target>& targets();

// One declaration pair per target file.
void run_safetensors(std::string_view input);
std::vector<std::string> seeds_safetensors();
void run_toml_config(std::string_view input);
std::vector<std::string> seeds_toml_config();
void run_metrics_jsonl(std::string_view input);
std::vector<std::string> seeds_metrics_jsonl();
void run_cifar10(std::string_view input);
std::vector<std::string> seeds_cifar10();
void run_idx(std::string_view input);
std::vector<std::string> seeds_idx();
void run_tar(std::string_view input);
std::vector<std::string> seeds_tar();
void run_gpt2_files(std::string_view input);
std::vector<std::string> seeds_gpt2_files();

}  // namespace ssmlab::fuzz
