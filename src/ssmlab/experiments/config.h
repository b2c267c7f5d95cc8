// The whole typed config of a run: one struct per TOML section, each field defined once in visit()
// (experiments/options_io.h drives TOML loading, --set overrides, printing, --help and the run id).
#pragma once
#include <string>

#include "ssmlab/core/fields.h"
#include "ssmlab/analysis/registry.h"
#include "ssmlab/models/options.h"
#include "ssmlab/tasks/registry.h"
#include "ssmlab/train/options.h"

namespace ssmlab::experiments {

struct RunOptions {
  std::string name = "run";
  int64_t seed = 0;
  std::string out_dir = "runs";

  template <class V>
  void visit(V& v) {
    v("name", name, "run name; the run folder is <out_dir>/<name>-<config hash>");
    v("seed", seed, "seed of the model init and of everything random outside the task data", Check::at_least(0));
    v("out_dir", out_dir, "where run folders go (relative to the working directory)");
  }
};

// The [task] section: which task, batch sizes, and (inherited) one sub-table per registered task, [task.<name>].
struct TaskOptions : tasks::TaskConfigs {
  std::string name = "mqar";
  int64_t batch_size = 128;
  int64_t test_batch_size = 16;

  template <class V>
  void visit(V& v) {
    v("name", name, "task (ssmlab list tasks)", Check::one_of(tasks::task_names()));
    v("batch_size", batch_size, "training batch size", Check::at_least(1));
    v("test_batch_size", test_batch_size, "evaluation batch size", Check::at_least(1));
    tasks::TaskConfigs::visit(v);  // the sub-tables sit directly under [task]
  }
};

struct OpsOptions {
  std::string backend = "auto";

  template <class V>
  void visit(V& v) {
    v("backend", backend, "auto: the fastest kernel for the device; reference: the time-stepped oracle",
      Check::one_of({"auto", "reference"}));
  }
};

struct Config {
  RunOptions run;
  models::ModelOptions model;
  TaskOptions task;
  train::TrainOptions train;
  OpsOptions ops;
  analysis::AnalysisOptions analysis;

  template <class V>
  void visit(V& v) {
    v("run", run, "run naming and seed");
    v("model", model, "the model backbone (its input embedding and head follow the task)");
    v("task", task, "the data");
    v("train", train, "optimisation and evaluation");
    v("ops", ops, "kernel selection");
    v("analysis", analysis, "analyses (ssmlab analyze; after_training runs them when training ends)");
  }
};

}  // namespace ssmlab::experiments
