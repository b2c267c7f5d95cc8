// The whole typed config of a run: one struct per TOML section, each field defined once in visit()
// (experiments/options_io.h drives TOML loading, --set overrides, printing, --help and the run id).
#pragma once
#include <string>

#include "ssmlab/core/fields.h"
#include "ssmlab/models/language_model.h"
#include "ssmlab/tasks/mqar.h"
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

struct TaskOptions {
  std::string name = "mqar";
  int64_t batch_size = 128;
  int64_t test_batch_size = 16;
  tasks::MqarConfig mqar;

  template <class V>
  void visit(V& v) {
    v("name", name, "task (ssmlab list)", Check::one_of({"mqar"}));
    v("batch_size", batch_size, "training batch size", Check::at_least(1));
    v("test_batch_size", test_batch_size, "evaluation batch size", Check::at_least(1));
    v("mqar", mqar, "multi-query associative recall (spec §2.8)");
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

  template <class V>
  void visit(V& v) {
    v("run", run, "run naming and seed");
    v("model", model, "the language model");
    v("task", task, "the data");
    v("train", train, "optimisation and evaluation");
    v("ops", ops, "kernel selection");
  }
};

}  // namespace ssmlab::experiments
