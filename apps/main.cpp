// The ssmlab command: parse a subcommand, call experiments:: (docs/ARCHITECTURE.md, "apps").
//   ssmlab train CONFIG [--set key=value]... [--out DIR] [--nproc N]   (N data-parallel ranks; or under torchrun)
//   ssmlab eval RUN_DIR [--device DEV]
//   ssmlab config CONFIG [--set key=value]...   (print the resolved config)
//   ssmlab list [mixers|tasks|analyses|ops|transitions|keys]
//   ssmlab analyze NAME[,NAME...] RUN_DIR|CONFIG [--set key=value]... [--out DIR] [--device DEV]
//   ssmlab report DIR [--out DIR] [--embed]     (figures + report.html from run folders; report::)
//   ssmlab sweep FILE [--jobs N] [--gpus 0,1] [--per-gpu K] [--mem-per-run GB] [--out DIR] [--set k=v]...
//   ssmlab sweep FILE --slurm [--dry-run] [--nproc N] [sbatch options...]   (one Slurm job array)
//   ssmlab results DIR [--filter key=value]... [--csv FILE] [--sqlite FILE] [--all-keys]
//   ssmlab forget DIR [--out OUT] [--skip-missing] [--no-draw]   (T_forget per state size and its linear fit)
//   ssmlab tokenize CONFIG [--set key=value]... [--encode TEXT]   (the text task's token file, or TEXT's ids)
//   ssmlab export RUN_DIR OUT                    (a run's Mamba / Mamba-2 as a Hugging Face transformers folder)
//   ssmlab generate MODEL --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
//                  [--device cuda --cuda-graph]
//                  (MODEL: run folder, Hugging Face folder or cached model id)
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "exit_handler.h"
#include "ssmlab/analysis/registry.h"
#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/exit_codes.h"
#include "ssmlab/core/io.h"
#include "ssmlab/core/log.h"
#include "ssmlab/core/parse.h"
#include "ssmlab/experiments/analyze.h"
#include "ssmlab/experiments/config.h"
#include "ssmlab/experiments/forget.h"
#include "ssmlab/experiments/interop.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/experiments/results.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/experiments/runner.h"
#include "ssmlab/experiments/slurm.h"
#include "ssmlab/experiments/sweep.h"
#include "ssmlab/experiments/validate.h"
#include "ssmlab/mixers/registry.h"
#include "ssmlab/models/generate.h"
#include "ssmlab/models/hf_checkpoint.h"
#include "ssmlab/tasks/registry.h"
#include "ssmlab/tasks/text.h"
#include "ssmlab/ops/backend.h"
#include "ssmlab/report/gnuplot.h"
#include "ssmlab/report/io.h"
#include "ssmlab/report/report.h"
#include "ssmlab/train/distributed.h"
#include "ssmlab/train/launch.h"
#include "ssmlab/train/progress.h"
#include "ssmlab/runfolder/layout.h"

namespace {

using namespace ssmlab;

void print_eval(const train::EvalResult& r) {
  std::printf("test accuracy %.4f  (loss %.4f)\n", r.accuracy, r.loss);
  for (const auto& [name, acc] : r.per_segment) std::printf("  %-24s %.4f\n", name.c_str(), acc);
}

// argv without `--nproc N` / `--nproc=N`: what each local rank runs.
std::vector<std::string> args_without_nproc(int argc, char** argv) {
  std::vector<std::string> out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc") {
      ++i;
      continue;
    }
    if (a.rfind("--nproc=", 0) == 0) continue;
    out.push_back(a);
  }
  return out;
}

int cmd_train(const std::string& file, const std::vector<std::string>& sets, const std::string& out, int nproc,
              int argc, char** argv) {
  const auto dist_env = train::dist_env_from_environment();
  if (nproc > 1) {
    if (dist_env)
      fail_config("--nproc ", nproc, " inside a ", dist_env->source, " (rank ", dist_env->rank, " of ",
                  dist_env->world_size, "): the launcher (torchrun, srun) already started the ranks; drop --nproc");
    std::printf("ssmlab train: %d local ranks (Gloo on CPU)\n", nproc);
    train::LaunchOptions lo;
    lo.nproc = nproc;
    return train::launch_local_ranks(args_without_nproc(argc, argv), lo);
  }
  const bool lead = !dist_env || dist_env->rank == 0;
  experiments::Config cfg = ssmlab::app::as_config_error([&] {
    auto c = experiments::load_config(file, sets);
    experiments::validate_config(c, file);  // until load_config calls it itself
    return c;
  });
  const auto dir = experiments::run_dir_for(cfg, out.empty() ? std::nullopt : std::optional<std::filesystem::path>(out));
  struct GroupScope {  // the process group ends with the command, before static destructors run
    ~GroupScope() { train::set_current_group(nullptr); }
  } group_scope;
  if (dist_env) train::init_distributed_from_env();  // the rendezvous: every rank, bounded by SSMLAB_DIST_TIMEOUT
  if (lead) std::printf("ssmlab train: %s -> %s\n", file.c_str(), dir.string().c_str());
  auto outcome = experiments::train_run(cfg, dir);
  if (!lead) return 0;
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
  for (const auto& a : outcome.analyses)
    std::printf("analysis %s: %s/analysis/%s.json, figures/%s*\n", a.c_str(), dir.string().c_str(), a.c_str(),
                a.c_str());
  return 0;
}

// `ssmlab analyze NAMES TARGET`: TARGET is a run folder (its newest checkpoint) or a config file (the model as
// initialised, written to <run folder>-init unless --out says otherwise).
int cmd_analyze(const std::string& names_text, const std::string& target, const std::vector<std::string>& sets,
                const std::string& out, const std::string& device) {
  const auto names = analysis::parse_analysis_list(names_text);
  SSMLAB_CHECK(!names.empty(), "ssmlab analyze: name at least one analysis (", [] {
    std::string known;
    for (const auto& n : analysis::analysis_names()) known += (known.empty() ? "" : ", ") + n;
    return known;
  }(), ")");
  const std::filesystem::path t(target);
  experiments::Config cfg;
  std::filesystem::path dir;
  bool trained = false;
  if (std::filesystem::is_directory(t) && !std::filesystem::exists(runfolder::config_file(t)) &&
      models::is_hf_folder(t)) {
    // A Hugging Face folder: its model and tokenizer.json, the text task's other keys from --set.
    cfg = ssmlab::app::as_config_error([&] { return experiments::hf_analysis_config(t, sets); });
    dir = out.empty() ? std::filesystem::path("runs") / cfg.run.name : std::filesystem::path(out);
    trained = true;
  } else if (std::filesystem::is_directory(t)) {
    SSMLAB_CHECK(std::filesystem::exists(runfolder::config_file(t)), target, " is not a run folder: it has no config.toml");
    cfg = ssmlab::app::as_config_error([&] { return experiments::load_config(runfolder::config_file(t), sets); });
    dir = out.empty() ? t : std::filesystem::path(out);
    trained = true;
  } else {
    cfg = ssmlab::app::as_config_error([&] { return experiments::load_config(t, sets); });
    if (out.empty()) {
      dir = experiments::run_dir_for(cfg, std::nullopt);
      dir += "-init";
    } else {
      dir = out;
    }
  }
  if (dir != t) {  // an output folder other than the run folder gets the config, so `ssmlab report` can read it
    std::filesystem::create_directories(dir);
    write_file_atomic(runfolder::config_file(dir), experiments::run_config_text(cfg));
  }
  const auto runs = experiments::analyze(names, cfg, dir, trained ? t : std::filesystem::path(), device);
  for (const auto& r : runs) {
    std::printf("analysis %s -> %s\n", r.name.c_str(), r.summary_file.string().c_str());
    if (r.result.summary.contains("slope"))
      std::printf("  fitted slope %.4g per position (decay per token %.4g)\n", r.result.summary["slope"].get<double>(),
                  r.result.summary["decay_per_token"].get<double>());
    if (r.result.summary.contains("block_out")) {
      std::printf("  layer  mixer_out  block_out  (normalised: mixer_out  block_out)\n");
      const auto& s = r.result.summary;
      for (size_t i = 0; i < s["block_out"].size(); ++i)
        std::printf("  %5zu  %9.4g  %9.4g  %21.4g  %9.4g\n", i, s["mixer_out"][i].get<double>(),
                    s["block_out"][i].get<double>(), s["mixer_out_normalised"][i].get<double>(),
                    s["block_out_normalised"][i].get<double>());
    }
    for (const auto& f : r.result.files) std::printf("  wrote %s\n", f.string().c_str());
  }
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
    std::printf("tasks (task.name):\n");
    for (const auto& t : tasks::task_table()) std::printf("  %-14s %s\n", t.name.c_str(), t.summary.c_str());
  }
  if (all || what == "analyses") {
    std::printf("analyses (ssmlab analyze NAME RUN_DIR|CONFIG; analysis.after_training):\n");
    for (const auto& a : analysis::analysis_table()) std::printf("  %-14s %s\n", a.name.c_str(), a.summary.c_str());
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

std::vector<int64_t> parse_gpus(const std::string& text) {
  std::vector<int64_t> gpus;
  std::string item;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && text[i] != ',') {
      item += text[i];
      continue;
    }
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos)
      fail_config("--gpus: expected GPU numbers separated by commas (e.g. --gpus 0,1), got '", text, "'");
    gpus.push_back(parse_count(item, /*max=*/1023, "--gpus"));
    item.clear();
  }
  return gpus;
}

// Writes the sweep folder's results.csv / results.sqlite and prints the table.
void write_results(const std::filesystem::path& dir, const experiments::ResultsTable& table, const std::string& csv,
                   const std::string& sqlite) {
  std::printf("%s", experiments::format_table(table).c_str());
  if (!csv.empty()) experiments::write_csv(table, csv);
  if (!sqlite.empty()) experiments::write_sqlite(table, sqlite);
  if (!csv.empty() || !sqlite.empty())
    std::printf("written: %s%s%s\n", csv.c_str(), !csv.empty() && !sqlite.empty() ? ", " : "", sqlite.c_str());
}

// sbatch options left over by the parser: "--time", "4:00:00" -> "--time=4:00:00".
std::vector<std::string> sbatch_options(const std::vector<std::string>& extras) {
  std::vector<std::string> out;
  for (const auto& e : extras) {
    if (!e.empty() && e[0] == '-') {
      out.push_back(e);
    } else {
      if (out.empty() || out.back().find('=') != std::string::npos || out.back().rfind("--", 0) != 0)
        fail_config("ssmlab sweep: unexpected argument '", e, "' (sbatch options go as --name=value after --slurm)");
      out.back() += "=" + e;
    }
  }
  return out;
}

int cmd_sweep_slurm(const experiments::Sweep& sweep, const experiments::SlurmOptions& so, bool dry_run) {
  if (dry_run) {
    std::printf("%s", experiments::slurm_array_script(sweep, so).c_str());
    return kExitOk;
  }
  const auto sub = experiments::submit_slurm(sweep, so);
  if (sub.job_id.empty()) {
    std::printf("ssmlab sweep --slurm: every run of %s is finished; nothing submitted (script: %s)\n",
                sweep.name.c_str(), sub.script.string().c_str());
    return kExitOk;
  }
  std::printf("ssmlab sweep --slurm: submitted job array %s (%zu tasks of %zu runs) from %s; logs in %s; afterwards "
              "`ssmlab results %s`\n",
              sub.job_id.c_str(), sub.tasks, sweep.runs.size(), sub.script.string().c_str(),
              (sweep.out_dir / "slurm").string().c_str(), sweep.out_dir.string().c_str());
  return kExitOk;
}

int cmd_sweep(const std::string& file, const std::vector<std::string>& sets, const std::string& out,
              const std::string& gpus, experiments::RunnerOptions opts, bool dry_run, bool slurm,
              experiments::SlurmOptions slurm_opts, const std::vector<std::string>& extras) {
  if (!gpus.empty()) opts.gpus = parse_gpus(gpus);
  if (!slurm && !extras.empty())
    fail_config("ssmlab sweep: unknown argument '", extras.front(), "' (sbatch options are taken only with --slurm)");
  experiments::Sweep sweep = ssmlab::app::as_config_error([&] { return experiments::load_sweep(file, sets); });
  if (!out.empty()) sweep.out_dir = out;
  if (slurm) {
    for (const auto& o : sbatch_options(extras)) slurm_opts.sbatch.push_back(o);
    return cmd_sweep_slurm(sweep, slurm_opts, dry_run);
  }
  if (dry_run) {
    std::printf("%s: %zu runs -> %s\n", file.c_str(), sweep.runs.size(), sweep.out_dir.string().c_str());
    for (const auto& run : sweep.runs) {
      const bool done = std::filesystem::exists(runfolder::done_marker(sweep.out_dir / run.folder));
      std::printf("  %3zu  %s  %s%s\n", run.index + 1, run.folder.c_str(), run.label().c_str(), done ? "  (done)" : "");
    }
    return 0;
  }
  const auto report = experiments::run_sweep(sweep, opts);
  std::printf("%s", experiments::format_report(report).c_str());
  if (!report.interrupted) {
    const auto table = experiments::collect_results(sweep.out_dir);
    std::printf("\n");
    write_results(sweep.out_dir, table, runfolder::results_csv(sweep.out_dir).string(),
                  runfolder::results_sqlite(sweep.out_dir).string());
  }
  if (report.interrupted) return kExitInterrupted;
  return report.count(experiments::RunStatus::failed) > 0 ? kExitPartial : kExitOk;
}

int cmd_results(const std::string& dir, const experiments::ResultsOptions& opts, std::string csv, std::string sqlite) {
  const auto table = experiments::collect_results(dir, opts);
  if (opts.filters.empty() && csv.empty() && sqlite.empty()) {  // a filtered view never replaces the full table
    csv = runfolder::results_csv(dir).string();
    sqlite = runfolder::results_sqlite(dir).string();
  }
  write_results(dir, table, csv, sqlite);
  return 0;
}

int cmd_report(const std::string& dir, const std::string& out, bool embed) {
  report::ReportOptions opts;
  opts.out = out;
  opts.embed_images = embed;
  const auto summary = report::write_report(dir, opts);
  std::printf("ssmlab report: %zu run%s, %zu figure%s -> %s\n", summary.runs, summary.runs == 1 ? "" : "s",
              summary.figures.size(), summary.figures.size() == 1 ? "" : "s", summary.html.string().c_str());
  for (const auto& p : summary.problems) std::fprintf(stderr, "ssmlab report: figure not drawn: %s\n", p.c_str());
  return summary.problems.empty() ? kExitOk : kExitPartial;
}

// `ssmlab forget DIR`: T_forget per state size from every run's analysis/loss_position.json, the linear fit, the
// table; writes OUT/forget.json and OUT/figures/forget_threshold.{csv,json} and draws the figure (gnuplot).
int cmd_forget(const std::string& dir, const std::string& out, bool skip_missing, bool no_draw) {
  std::vector<std::filesystem::path> skipped;
  const auto table = experiments::collect_forget(dir, skip_missing, &skipped);
  for (const auto& s : skipped)
    std::fprintf(stderr, "ssmlab forget: skipped %s (no analysis/%s.json)\n", s.string().c_str(),
                 experiments::kLossPositionAnalysis);
  std::printf("%s", experiments::format_forget(table).c_str());
  const std::filesystem::path o = out.empty() ? std::filesystem::path(dir) / "forget" : std::filesystem::path(out);
  const auto spec_file = experiments::write_forget(table, o);
  std::printf("written: %s, %s\n", (o / "forget.json").string().c_str(), spec_file.string().c_str());
  if (!no_draw) {
    const auto spec = report::figure_from_json(nlohmann::json::parse(read_file(spec_file)), spec_file.parent_path(),
                                               spec_file.string());
    const auto drawn = report::render_figure(spec, spec_file.parent_path(), "forget_threshold");
    std::printf("figure: %s\n", drawn.png.string().c_str());
  }
  return 0;
}

// The command's input, for the one-line error: "train configs/x.toml".
std::string context_of(const CLI::App& app, const std::vector<std::string>& inputs) {
  const auto subs = app.get_subcommands();
  if (subs.empty()) return "";
  std::string ctx = subs.front()->get_name();
  for (const auto& in : inputs)
    if (!in.empty()) ctx += " " + in;
  return ctx;
}

// Builds (or finds) the token file of a text config and prints what it holds; with --encode, prints TEXT's ids.
int cmd_tokenize(const std::string& file, const std::vector<std::string>& sets, const std::string* encode) {
  const experiments::Config cfg = ssmlab::app::as_config_error([&] { return experiments::load_config(file, sets); });
  if (cfg.task.name != "text")
    fail_config(file, ": task.name is '", cfg.task.name, "'; ssmlab tokenize needs task.name = \"text\"");
  const tasks::TextTask task(cfg.task.text);
  if (encode) {
    for (uint32_t id : task.tokenizer().encode(*encode)) std::printf("%u ", id);
    std::printf("\n");
    return 0;
  }
  const auto tf = task.token_file();
  const int64_t L = cfg.task.text.seq_len;
  const bool within = cfg.task.text.windows == "within";
  std::printf("token file: %s\n", tf->manifest_path().string().c_str());
  std::printf("  %lld tokens (%d bytes each), vocabulary %lld, %lld documents: %lld train, %lld validation\n",
              static_cast<long long>(tf->size()), tf->bytes_per_token(), static_cast<long long>(tf->vocab_size()),
              static_cast<long long>(tf->num_documents()), static_cast<long long>(tf->num_train_documents()),
              static_cast<long long>(tf->num_documents() - tf->num_train_documents()));
  std::printf("  windows of %lld + 1 tokens (%s documents): %zu train, %zu validation\n", static_cast<long long>(L),
              within ? "within" : "across", tasks::text_window_starts(*tf, 0, L, within).size(),
              tasks::text_window_starts(*tf, 1, L, within).size());
  return 0;
}

struct GenerateArgs {
  std::string prompt, prompt_ids, tokenizer, dtype = "float32";
  models::GenerateOptions opts;
  bool full_forward = false;
};

int cmd_generate(const std::string& target, const GenerateArgs& a, const std::string& device) {
  const at::ScalarType dtype = a.dtype == "float64" ? at::kDouble : at::kFloat;
  auto lm = experiments::load_language_model(target, dtype, device.empty() ? "cpu" : device, a.tokenizer);
  std::vector<int64_t> prompt;
  if (!a.prompt_ids.empty()) {
    std::string_view rest = a.prompt_ids;
    while (true) {
      const size_t comma = rest.find(',');
      prompt.push_back(parse_count(rest.substr(0, comma), int64_t{1} << 40, "--prompt-ids"));
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  } else {
    if (!lm.tokenizer)
      fail_config(target, " has no tokenizer (no tokenizer.json); give --tokenizer FILE or --prompt-ids");
    for (uint32_t id : lm.tokenizer->encode(a.prompt)) prompt.push_back(id);
  }
  models::GenerateOptions o = a.opts;
  if (!o.eos_token_id) o.eos_token_id = lm.eos_token_id;
  o.use_step = !a.full_forward;
  const auto r = models::generate(*lm.model, prompt, o);
  std::vector<uint32_t> ids(r.tokens.begin(), r.tokens.end());
  if (lm.tokenizer) {
    std::vector<uint32_t> p(prompt.begin(), prompt.end());
    std::printf("%s%s\n", lm.tokenizer->decode(p).c_str(), lm.tokenizer->decode(ids).c_str());
  }
  std::printf("ids:");
  for (int64_t t : r.tokens) std::printf(" %lld", static_cast<long long>(t));
  std::printf("\n");
  std::fprintf(stderr, "%s: %zu prompt tokens in %.3f s, %zu new tokens in %.3f s (%s): %.1f tokens/s\n",
               lm.source.c_str(), prompt.size(), r.prompt_seconds, r.tokens.size(),
               r.prompt_seconds + r.decode_seconds,
               !o.use_step ? "full forward" : o.cuda_graph ? "recurrent step, CUDA graph" : "recurrent step",
               r.tokens_per_second);
  return 0;
}

int run(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines in order with stderr when the output is a file (sweep logs)
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
  train->add_option("--set", sets, "override a config key: --set model.mixers.mamba1.d_state=32 (repeatable)");
  train->add_option("--out", out_dir, "run folder (default: <run.out_dir>/<run.name>-<config hash>)");
  int train_nproc = 1;
  train->add_option("--nproc", train_nproc, "data-parallel ranks on this host (processes, Gloo on CPU); the same "
                                            "binary also runs under torchrun / srun from RANK, WORLD_SIZE, "
                                            "MASTER_ADDR, MASTER_PORT")
      ->check(CLI::Range(1, 1024));
  train->footer("Config keys: `ssmlab list keys`. Several hosts: README, \"Training on several processes\".");

  auto* eval = app.add_subcommand("eval", "evaluate a run folder's newest checkpoint on its test segments");
  eval->add_option("run_dir", run_dir, "run folder written by `ssmlab train`")->required()->check(CLI::ExistingDirectory);
  eval->add_option("--device", device, "override train.device (cpu, cuda, auto)");

  auto* config = app.add_subcommand("config", "print the resolved config (defaults and overrides applied)");
  config->add_option("config", config_file, "TOML config file")->required()->check(CLI::ExistingFile);
  config->add_option("--set", sets, "override a config key (repeatable)");

  auto* list = app.add_subcommand("list", "list mixers, transitions, tasks, analyses, ops and their devices, or config "
                                          "keys");
  list->add_option("what", list_what, "mixers | transitions | tasks | analyses | ops | keys (default: all but keys)")
      ->check(CLI::IsMember({"mixers", "transitions", "tasks", "analyses", "ops", "keys"}));

  std::string analyze_names, analyze_target;
  auto* analyze = app.add_subcommand("analyze", "run analyses on a trained run folder (its newest checkpoint) or on "
                                                "the initialised model of a config; writes analysis/ and figures/");
  analyze->add_option("names", analyze_names, "analysis name(s), comma-separated: influence, smoothing (ssmlab list "
                                              "analyses)")
      ->required();
  analyze->add_option("target", analyze_target, "run folder, or config file (a freshly initialised model)")
      ->required()
      ->check(CLI::ExistingPath);
  analyze->add_option("--set", sets, "override a config key, e.g. --set analysis.influence.samples=16 (repeatable)");
  analyze->add_option("--out", out_dir, "folder for the outputs (default: the run folder; for a config "
                                        "<run folder>-init)");
  analyze->add_option("--device", device, "override train.device (cpu, cuda, auto)");
  analyze->footer("Then `ssmlab report DIR` draws the figures; several runs in one folder share one figure per "
                  "analysis.");

  std::string sweep_gpus;
  bool sweep_dry_run = false;
  experiments::RunnerOptions sweep_opts;
  auto* sweep = app.add_subcommand("sweep", "run every config of a sweep file ([sweep] grid / zip lists) as its own "
                                            "process; skips finished runs, resumes interrupted ones");
  sweep->add_option("file", config_file, "sweep file (e.g. configs/sweeps/mqar-cpu.toml)")
      ->required()
      ->check(CLI::ExistingFile);
  sweep->add_option("--jobs,-j", sweep_opts.jobs, "runs at a time (default 1, or GPUs x --per-gpu)");
  sweep->add_option("--gpus", sweep_gpus, "GPUs to spread runs over, e.g. 0,1 (CUDA_VISIBLE_DEVICES per run)");
  sweep->add_option("--per-gpu", sweep_opts.per_gpu, "runs sharing one GPU (default 1)");
  sweep->add_option("--mem-per-run", sweep_opts.mem_per_run_gb,
                    "GB one run needs; fewer runs share a GPU (or the host) when their memory would not fit");
  sweep->add_option("--mem", sweep_opts.mem_gb, "GB per GPU (or of the host) for --mem-per-run (default: nvidia-smi / "
                                                "MemAvailable)");
  sweep->add_option("--out", out_dir, "sweep folder (default: [sweep].out_dir, else <run.out_dir>/<sweep name>)");
  sweep->add_option("--set", sets, "override a key of the base config (repeatable)");
  sweep->add_flag("--dry-run", sweep_dry_run, "list the runs and their folders; run nothing (with --slurm: print the "
                                             "job array script)");
  bool sweep_slurm = false;
  experiments::SlurmOptions slurm_opts;
  sweep->add_flag("--slurm", sweep_slurm, "submit the sweep to Slurm as ONE job array (one task per unfinished run, "
                                         "each resumable); sbatch options follow, e.g. --partition=gpu --time=4:00:00");
  sweep->add_option("--sbatch", slurm_opts.sbatch, "one sbatch option for --slurm, e.g. --sbatch=--gres=gpu:1 "
                                                   "(repeatable; plain sbatch options after --slurm work too)");
  sweep->add_option("--nproc", slurm_opts.nproc, "with --slurm: data-parallel ranks per run (ssmlab train --nproc)")
      ->check(CLI::Range(1, 1024));
  sweep->allow_extras();
  sweep->footer("Ctrl-C stops every run (they resume next time). Writes sweep.json, results.csv and results.sqlite in "
                "the sweep folder; each run's output is in its folder's train.log.");

  std::string results_csv, results_sqlite;
  experiments::ResultsOptions results_opts;
  auto* results = app.add_subcommand("results", "one table of every run folder under DIR: differing config keys and "
                                                "final metrics (CSV and SQLite)");
  results->add_option("dir", run_dir, "a sweep folder, or any folder holding run folders")
      ->required()
      ->check(CLI::ExistingDirectory);
  results->add_option("--filter", results_opts.filters,
                      "keep runs where key=value (also !=, <, <=, >, >=), e.g. --filter model.mixer=mamba1 (repeatable)");
  results->add_option("--csv", results_csv, "CSV file to write (default without --filter: DIR/results.csv)");
  results->add_option("--sqlite", results_sqlite, "SQLite file to write, table runs (default without --filter: "
                                                  "DIR/results.sqlite)");
  results->add_flag("--all-keys", results_opts.all_keys, "every config key as a column, not only those that differ");

  std::string report_dir, report_out;
  bool report_embed = false;
  auto* report_cmd = app.add_subcommand("report", "draw a run folder or a folder of runs (a sweep) as figures and one "
                                                  "HTML page, from the files alone (nothing is re-run)");
  report_cmd->add_option("dir", report_dir, "run folder, or a folder of run folders")
      ->required()
      ->check(CLI::ExistingDirectory);
  report_cmd->add_option("--out", report_out, "report folder (default: DIR/report)");
  report_cmd->add_flag("--embed", report_embed, "inline the PNGs into report.html (one file to send)");
  report_cmd->footer("Writes report.html, figures/*.{png,svg,gp,dat}; needs gnuplot. Figure specs: docs/ARCHITECTURE.md.");

  std::string forget_out;
  bool forget_skip = false, forget_no_draw = false;
  auto* forget = app.add_subcommand("forget", "the forget threshold (spec §3.5): T_forget per state size from every run's "
                                              "analysis/loss_position.json under DIR, its linear fit and figure");
  forget->add_option("dir", run_dir, "a sweep folder over state sizes x training lengths (or any folder of runs)")
      ->required()
      ->check(CLI::ExistingDirectory);
  forget->add_option("--out", forget_out, "output folder (default: DIR/forget)");
  forget->add_flag("--skip-missing", forget_skip, "leave out run folders without analysis/loss_position.json");
  forget->add_flag("--no-draw", forget_no_draw, "write the figure spec and table only (no gnuplot)");

  std::string encode_text;
  auto* tokenize = app.add_subcommand("tokenize", "build (or find) the token file of a text-task config and print its "
                                                  "counts; --encode prints the ids of a string instead");
  tokenize->add_option("config", config_file, "TOML config with task.name = \"text\"")
      ->required()
      ->check(CLI::ExistingFile);
  tokenize->add_option("--set", sets, "override a config key (repeatable)");
  auto* encode_opt = tokenize->add_option("--encode", encode_text, "print the token ids of this text (the config's "
                                                                   "tokenizer)");

  std::string export_run_dir, export_out;
  auto* export_cmd = app.add_subcommand("export", "write a run folder's Mamba / Mamba-2 language model (newest "
                                                  "checkpoint) as a Hugging Face transformers folder");
  export_cmd->add_option("run_dir", export_run_dir, "run folder")->required()->check(CLI::ExistingDirectory);
  export_cmd->add_option("out", export_out, "output folder (config.json + model.safetensors)")->required();

  std::string generate_target;
  GenerateArgs gen_args;
  auto* generate = app.add_subcommand("generate", "generate text from a run folder, a Hugging Face folder or a "
                                                  "model id in the local Hugging Face cache; prints tokens/s");
  generate->add_option("model", generate_target, "run folder, Hugging Face folder, or cached model id")->required();
  auto* prompt_opt = generate->add_option("--prompt", gen_args.prompt, "the prompt text");
  generate->add_option("--prompt-ids", gen_args.prompt_ids, "the prompt as comma-separated token ids")
      ->excludes(prompt_opt);
  generate->add_option("--max-new-tokens", gen_args.opts.max_new_tokens, "tokens to generate (default 32)");
  generate->add_option("--temperature", gen_args.opts.temperature, "sampling temperature; 0 = greedy (default 1)");
  generate->add_option("--top-k", gen_args.opts.top_k, "sample from the k most likely tokens; 0 = all (default)");
  generate->add_option("--top-p", gen_args.opts.top_p, "nucleus: the smallest set reaching probability p (default 1)");
  generate->add_option("--seed", gen_args.opts.seed, "sampling seed (default 0)");
  generate->add_flag_function("--greedy", [&](int64_t) { gen_args.opts.temperature = 0.0; }, "argmax decoding (temperature 0)");
  generate->add_flag("--full-forward", gen_args.full_forward,
                     "re-run the whole sequence for every token instead of the recurrent step (a check; slow)");
  generate->add_flag("--cuda-graph", gen_args.opts.cuda_graph,
                     "capture the decode step in a CUDA graph and replay it per token (--device cuda)");
  generate->add_option("--tokenizer", gen_args.tokenizer, "a tokenizer.json to use instead of the model's");
  generate->add_option("--dtype", gen_args.dtype, "float32 (default) or float64")
      ->check(CLI::IsMember({"float32", "float64"}));
  generate->add_option("--device", device, "cpu (default), cuda, auto");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "ssmlab: error: %s (ssmlab --help, or ssmlab COMMAND --help)\n", e.what());
    return kExitConfig;
  }

  try {
    if (*train) return cmd_train(config_file, sets, out_dir, train_nproc, argc, argv);
    if (*eval) {
      print_eval(experiments::eval_run(run_dir, device));
      std::printf("written: %s/eval.json\n", run_dir.c_str());
      return 0;
    }
    if (*config) {
      auto cfg = ssmlab::app::as_config_error([&] { return experiments::load_config(config_file, sets); });
      std::cout << experiments::to_toml_string(cfg);
      return 0;
    }
    if (*list) return cmd_list(list_what);
    if (*analyze) return cmd_analyze(analyze_names, analyze_target, sets, out_dir, device);
    if (*report_cmd) return cmd_report(report_dir, report_out, report_embed);
    if (*sweep)
      return cmd_sweep(config_file, sets, out_dir, sweep_gpus, sweep_opts, sweep_dry_run, sweep_slurm, slurm_opts,
                       sweep->remaining());
    if (*results) return cmd_results(run_dir, results_opts, results_csv, results_sqlite);
    if (*forget) return cmd_forget(run_dir, forget_out, forget_skip, forget_no_draw);
    if (*tokenize) return cmd_tokenize(config_file, sets, encode_opt->count() > 0 ? &encode_text : nullptr);
    if (*export_cmd) {
      experiments::export_run(export_run_dir, export_out);
      std::printf("exported %s -> %s (config.json, model.safetensors)\n", export_run_dir.c_str(), export_out.c_str());
      return 0;
    }
    if (*generate) return cmd_generate(generate_target, gen_args, device);
  } catch (...) {
    return ssmlab::app::report_current_exception(context_of(app, {config_file, run_dir, report_dir, analyze_target, export_run_dir, generate_target}));
  }
  return kExitOk;
}

}  // namespace

// Every exception becomes one line on stderr and the exit code of its category (core/exit_codes.h), including
// those thrown before a command runs (CLI set-up, out of memory).
int main(int argc, char** argv) {
  ssmlab::app::install_terminate_handler();
  try {
    return run(argc, argv);
  } catch (...) {
    return ssmlab::app::report_current_exception("");
  }
}
