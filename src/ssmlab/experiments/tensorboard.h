// Where TensorBoard finds the runs, by which names, and what its HPARAMS tab compares (docs/ARCHITECTURE.md,
// "Configs, runs, sweeps"; the encoding is train/tb_writer.*).
//
// A run of a sweep (its folder is listed in the sweep folder's sweep.json) writes its event file to
//   <sweep>/tb/<run.name>,<key>=<value>,.../events.out.tfevents.*
// over the swept keys in axis order, each named by its last dotted part ("mixer=attention") unless two swept keys
// share that part (then the whole key). In run.name, keys and values, characters other than letters, digits and
// ._+-@% become '_' and the name then ends in ~<first 8 of the run id> (so names stay distinct); a name longer than
// 200 bytes is cut and ends so too. TensorBoard names a run by its folder below the logdir, so
// `tensorboard --logdir <sweep>/tb` lists "demo,mixer=attention,max_position_embeddings=64,lr=0.001". A run
// outside any sweep writes into its own folder (named <run.name>-<hash>).
//
// Each run is an hparams session whose hparams are the swept keys plus a few basics (tb_hparams); the sweep's
// <sweep>/tb/events.out.tfevents.* holds the hparams Experiment: every hparam with the values the runs take, and
// the metrics (train/loss, then the final eval metrics the runs log: eval/acc, eval/loss, eval/acc/<segment>, ...).
#pragma once
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "ssmlab/experiments/config.h"
#include "ssmlab/experiments/sweep.h"
#include "ssmlab/train/tb_writer.h"

namespace ssmlab::experiments {

inline constexpr std::string_view kTbDir = "tb";  // <sweep>/tb/

// The keys beside the swept ones that every run's hparams carry (where the config has them).
const std::vector<std::string>& tb_basic_keys();

// The hparams of a run: `swept` keys first, then tb_basic_keys(), each with the resolved config's value (numbers,
// booleans, text; a key holding tables, e.g. a list of segments, as "sub=value;..." text).
train::HParams tb_hparams(const Config& cfg, const std::vector<std::string>& swept);

// The readable TensorBoard run name of a sweep run (the format above); `id` is its run id.
std::string tb_run_name(const Config& cfg, const std::vector<std::string>& swept, const std::string& id);

// Where the run of `cfg` in `run_dir` writes its events, and its hparams session: from the sweep.json of the
// parent folder when that lists run_dir (a malformed manifest is a warning: the run then writes into run_dir).
train::TbSession tb_session(const Config& cfg, const std::filesystem::path& run_dir);

// Writes (replacing) <sweep>/tb/events.out.tfevents.* with the sweep's hparams Experiment. The metrics are
// train/loss and the eval metrics found in the runs' metrics.jsonl (eval/acc and eval/loss before any run has
// evaluated). Nothing when no run has train.tensorboard on.
void write_tb_experiment(const Sweep& sweep);

}  // namespace ssmlab::experiments
