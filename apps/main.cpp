// The ssmlab command: parse a subcommand, call experiments:: (docs/ARCHITECTURE.md, "apps").
//   ssmlab train CONFIG [--set key=value]... [--out DIR]
//   ssmlab eval RUN_DIR [--device DEV]
//   ssmlab config CONFIG [--set key=value]...   (print the resolved config)
//   ssmlab list [mixers|tasks|ops|transitions|keys]
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "ssmlab/core/error.h"
#include "ssmlab/core/log.h"
#include "ssmlab/experiments/config.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/mixers/registry.h"
#include "ssmlab/ops/backend.h"
#include "ssmlab/train/progress.h"

namespace {

using namespace ssmlab;

void print_eval(const train::EvalResult& r) {
  std::printf("test accuracy %.4f  (loss %.4f)\n", r.accuracy, r.loss);
  for (const auto& [name, acc] : r.per_segment) std::printf("  %-24s %.4f\n", name.c_str(), acc);
}

int cmd_train(const std::string& file, const std::vector<std::string>& sets, const std::string& out) {
  experiments::Config cfg = experiments::load_config(file, sets);
  const auto dir = experiments::run_dir_for(cfg, out.empty() ? std::nullopt : std::optional<std::filesystem::path>(out));
  std::printf("ssmlab train: %s -> %s\n", file.c_str(), dir.string().c_str());
  auto outcome = experiments::train_run(cfg, dir);
  if (outcome.already_done) {
    std::printf("this run is already finished (DONE in %s); `ssmlab eval %s` re-evaluates it\n", dir.string().c_str(),
                dir.string().c_str());
    return 0;
  }
  if (outcome.fit.halted) {
    std::printf("stopped after step %lld (train.halt_after_steps); run the same command again to resume\n",
                static_cast<long long>(outcome.fit.steps));
    return 0;
  }
  std::printf("done in %s: %lld steps%s\n", train::Progress::format_duration(outcome.fit.seconds).c_str(),
              static_cast<long long>(outcome.fit.steps), outcome.fit.early_stopped ? " (early stop)" : "");
  print_eval(outcome.fit.last_eval);
  std::printf("results: %s (metrics.jsonl, results.json, config.toml, checkpoints/)\n", dir.string().c_str());
  return 0;
}

int cmd_list(const std::string& what) {
  const bool all = what.empty();
  if (all || what == "mixers") {
    std::printf("mixers:\n");
    for (const auto& m : mixers::mixer_table()) std::printf("  %-14s %s\n", m.name.c_str(), m.summary.c_str());
  }
  if (all || what == "transitions") {
    std::printf("transitions (model.mixers.mamba1.transition):\n");
    for (const auto& t : mixers::transition_table()) std::printf("  %-14s %s\n", t.name.c_str(), t.summary.c_str());
  }
  if (all || what == "tasks") {
    std::printf("tasks:\n  %-14s %s\n", "mqar", "multi-query associative recall, zoology's generator (spec §2.8)");
  }
  if (all || what == "ops") {
    std::printf("ops (torch.ops.ssmlab.<op>; <op>_ref is the reference):\n");
    for (const auto& op : ops::op_table()) {
      std::string devices = "reference: cpu, cuda";
      for (const auto& d : op.fused_devices) devices += "; fused: " + d;
      std::printf("  %-16s %s [%s]\n", op.name.c_str(), op.summary.c_str(), devices.c_str());
    }
  }
  if (what == "keys") {
    experiments::Config cfg;
    std::printf("config keys (TOML sections; override any with --set key=value):\n%s",
                experiments::help_text(cfg).c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ssmlab: train, probe and fix State Space Models (Mamba and peers) in C++"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ssmlab 0.1.0");

  std::string config_file, out_dir, run_dir, device, list_what;
  std::vector<std::string> sets;

  auto* train = app.add_subcommand("train", "train a model from a TOML config into a run folder (resumes if "
                                            "interrupted)");
  train->add_option("config", config_file, "TOML config file (e.g. configs/quickstart.toml)")
      ->required()
      ->check(CLI::ExistingFile);
  train->add_option("--set", sets, "override a config key: --set model.d_state=32 (repeatable)");
  train->add_option("--out", out_dir, "run folder (default: <run.out_dir>/<run.name>-<config hash>)");
  train->footer("Config keys: `ssmlab list keys`.");

  auto* eval = app.add_subcommand("eval", "evaluate a run folder's newest checkpoint on its test segments");
  eval->add_option("run_dir", run_dir, "run folder written by `ssmlab train`")->required()->check(CLI::ExistingDirectory);
  eval->add_option("--device", device, "override train.device (cpu, cuda, auto)");

  auto* config = app.add_subcommand("config", "print the resolved config (defaults and overrides applied)");
  config->add_option("config", config_file, "TOML config file")->required()->check(CLI::ExistingFile);
  config->add_option("--set", sets, "override a config key (repeatable)");

  auto* list = app.add_subcommand("list", "list mixers, transitions, tasks, ops and their devices, or config keys");
  list->add_option("what", list_what, "mixers | transitions | tasks | ops | keys (default: all but keys)")
      ->check(CLI::IsMember({"mixers", "transitions", "tasks", "ops", "keys"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (*train) return cmd_train(config_file, sets, out_dir);
    if (*eval) {
      print_eval(experiments::eval_run(run_dir, device));
      std::printf("written: %s/eval.json\n", run_dir.c_str());
      return 0;
    }
    if (*config) {
      auto cfg = experiments::load_config(config_file, sets);
      std::cout << experiments::to_toml_string(cfg);
      return 0;
    }
    if (*list) return cmd_list(list_what);
  } catch (const ssmlab::Error& e) {
    std::fprintf(stderr, "ssmlab: error: %s\n", e.what());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "ssmlab: error (torch): %s\n", e.what_without_backtrace());
    return 2;
  }
  return 0;
}
