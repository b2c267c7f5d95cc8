// The run-folder reader on hand-written folders: the layout's names, a finished, an unfinished and a failed run,
// config flattening (arrays of tables, typed values, file order), differing keys and final metrics.
#include <gtest/gtest.h>

#include <fstream>

#include "ssmlab/runfolder/layout.h"
#include "ssmlab/runfolder/run_folder.h"
#include "test_util.h"

namespace runfolder_test_run_folder {

namespace {

namespace fs = std::filesystem;
using namespace ssmlab::runfolder;
using nlohmann::json;

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

const char* kConfig = R"([run]
name = "mqar"
seed = 0
out_dir = "runs"

[model]
mixer = "mamba1"
d_model = 64
tie_embeddings = true
dims = [1, 2]

[[task.mqar.train]]
seq_len = 64
count = 1000

[[task.mqar.train]]
seq_len = 128
count = 500

[train]
lr = 1e-3
weight_decay = 1.0
)";

// A sweep folder: a finished run, an unfinished one (torn last line), a failed one and one not started.
void make_sweep(const fs::path& dir) {
  write(dir / "done/config.toml", kConfig);
  write(dir / "done/metrics.jsonl", "{\"kind\":\"train\",\"step\":10,\"train_loss\":2.0}\n"
                                    "{\"kind\":\"eval\",\"step\":10,\"test_acc\":0.5}\n");
  write(dir / "done/results.json", R"({"steps": 10, "test_acc": 0.5})");
  write(dir / "done/DONE", "");
  write(dir / "done/figures/influence.csv", "distance,mamba1\n1,1\n2,0.5\n");
  write(dir / "done/figures/smoothing.json", R"({"kind": "layers"})");
  write(dir / "done/figures/notes.txt", "not a figure");
  write(dir / "done/analysis/influence.json", "{}");
  write(dir / "done/checkpoints/step_00000010/config.toml", "never read");
  write(dir / "half/config.toml", kConfig);
  write(dir / "half/metrics.jsonl", "{\"kind\":\"train\",\"step\":10,\"train_loss\":2.0}\n"
                                    "{\"kind\":\"eval\",\"step\":10,\"epoch\":0,\"test_acc\":0.25}\n"
                                    "{\"kind\":\"eval\",\"step\":20,\"epoch\":0,\"test_acc\":0.75}\n{\"kind\":\"tr");
  write(dir / "bad/config.toml", kConfig);
  write(dir / "bad/metrics.jsonl", "");
  write(dir / "new/config.toml", kConfig);
  write(dir / "sweep.json", R"({"sweep": "s", "runs": [
      {"index": 0, "folder": "new", "status": "pending"},
      {"index": 1, "folder": "bad", "status": "failed", "error": "exit status 1: error: NaN loss\nlog tail"}]})");
  write(dir / "report/report.html", "<html></html>");
  write(dir / "report/figures/x/config.toml", "inside a report: never a run");
}

TEST(RunFolderLayout, NamesAndPaths) {
  const fs::path run = "sweep/run-1";
  EXPECT_EQ(config_file(run), run / "config.toml");
  EXPECT_EQ(metrics_file(run), run / "metrics.jsonl");
  EXPECT_EQ(results_file(run), run / "results.json");
  EXPECT_EQ(done_marker(run), run / "DONE");
  EXPECT_EQ(eval_file(run), run / "eval.json");
  EXPECT_EQ(checkpoints_dir(run), run / "checkpoints");
  EXPECT_EQ(analysis_dir(run), run / "analysis");
  EXPECT_EQ(figures_dir(run), run / "figures");
  EXPECT_EQ(train_log(run), run / "train.log");
  EXPECT_EQ(lock_file(run), run / ".lock");
  EXPECT_EQ(analysis_file(run, "influence"), run / "analysis" / "influence.json");
  EXPECT_EQ(figure_spec_file(run, "smoothing"), run / "figures" / "smoothing.json");
  EXPECT_EQ(figure_table_file(run, "smoothing"), run / "figures" / "smoothing.csv");
  EXPECT_EQ(sweep_manifest("sweep"), fs::path("sweep") / "sweep.json");
  EXPECT_EQ(results_csv("sweep"), fs::path("sweep") / "results.csv");
  EXPECT_EQ(results_sqlite("sweep"), fs::path("sweep") / "results.sqlite");
  EXPECT_EQ(report_page(report_dir("sweep")), fs::path("sweep") / "report" / "report.html");
  EXPECT_EQ(kEventsPrefix, "events.out.tfevents.");
  EXPECT_EQ(kCheckpointPrefix, "step_");
}

TEST(RunFolder, FlattensArraysOfTablesWithTypesInFileOrder) {
  const auto entries = flatten_config(kConfig, "c.toml");
  std::vector<std::string> keys;
  for (const auto& e : entries) keys.push_back(e.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"run.name", "run.seed", "run.out_dir", "model.mixer", "model.d_model",
                                            "model.tie_embeddings", "model.dims", "task.mqar.train[0].seq_len",
                                            "task.mqar.train[0].count", "task.mqar.train[1].seq_len",
                                            "task.mqar.train[1].count", "train.lr", "train.weight_decay"}));
  RunFolder r;
  r.set_config(entries);
  EXPECT_EQ(r.config.at("task.mqar.train[0].seq_len"), "64");
  EXPECT_EQ(r.config.at("task.mqar.train[1].seq_len"), "128");
  EXPECT_EQ(r.config.at("model.mixer"), "mamba1");
  EXPECT_EQ(r.config.at("train.lr"), "0.001");
  EXPECT_EQ(r.config.at("train.weight_decay"), "1.0");
  EXPECT_EQ(r.config.at("model.dims"), "[1, 2]");
  EXPECT_EQ(entries[4].kind, ValueKind::integer);
  EXPECT_EQ(entries[5].kind, ValueKind::boolean);
  EXPECT_EQ(entries[6].kind, ValueKind::other);
  EXPECT_EQ(entries.back().kind, ValueKind::real);
  try {
    flatten_config("[model\nd_model = 3\n", "bad.toml");
    ADD_FAILURE() << "a malformed config was accepted";
  } catch (const RunFolderError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.toml:1"), std::string::npos) << e.what();
  }
}

TEST(RunFolder, ReadsFinishedUnfinishedAndFailedRuns) {
  ssmlab::test::TempDir tmp;
  make_sweep(tmp.path);
  const auto dirs = find_run_folders(tmp.path);
  EXPECT_EQ(dirs, (std::vector<fs::path>{tmp.path / "bad", tmp.path / "done", tmp.path / "half", tmp.path / "new"}));
  const auto runs = read_run_folders(tmp.path);
  ASSERT_EQ(runs.size(), 4u);
  const RunFolder &bad = runs[0], &done = runs[1], &half = runs[2], &fresh = runs[3];

  EXPECT_EQ(done.name, "done");
  EXPECT_EQ(done.status, RunStatus::done);
  EXPECT_TRUE(done.done());
  ASSERT_TRUE(done.results.has_value());
  EXPECT_EQ((*done.results)["test_acc"], 0.5);
  EXPECT_EQ(done.figure_files, (std::vector<fs::path>{tmp.path / "done/figures/influence.csv",
                                                      tmp.path / "done/figures/smoothing.json"}));
  EXPECT_EQ(done.analysis_files, std::vector<fs::path>{tmp.path / "done/analysis/influence.json"});

  EXPECT_EQ(half.status, RunStatus::unfinished);
  EXPECT_EQ(half.train.size(), 1u);
  ASSERT_EQ(half.eval.size(), 2u) << "the torn last line is dropped";
  ASSERT_NE(half.newest_eval(), nullptr);
  EXPECT_EQ((*half.newest_eval())["step"], 20);
  EXPECT_EQ(final_metrics(half), (json{{"steps", 20}, {"test_acc", 0.75}}));
  EXPECT_EQ(final_metrics(done), (json{{"steps", 10}, {"test_acc", 0.5}}));

  EXPECT_EQ(bad.status, RunStatus::failed);
  EXPECT_STREQ(status_name(bad.status), "failed");
  EXPECT_EQ(bad.error, "exit status 1: error: NaN loss");
  EXPECT_EQ(bad.sweep_index, 1u);
  EXPECT_EQ(fresh.status, RunStatus::fresh);
  EXPECT_EQ(fresh.sweep_status, "pending");
  EXPECT_EQ(fresh.newest_eval(), nullptr);
  EXPECT_EQ(final_metrics(fresh), json::object());

  // A run folder read on its own still finds its sweep's manifest.
  EXPECT_EQ(read_run_folder(tmp.path / "bad", tmp.path / "bad").status, RunStatus::failed);
  EXPECT_EQ(read_run_folder(tmp.path / "bad", tmp.path / "bad").name, "bad");
  EXPECT_EQ(find_run_folders(tmp.path / "done"), std::vector<fs::path>{tmp.path / "done"});
}

TEST(RunFolder, MalformedFilesAreErrorsNamingTheFile) {
  ssmlab::test::TempDir tmp;
  make_sweep(tmp.path);
  auto expect = [&](const fs::path& dir, const std::string& part) {
    try {
      read_run_folder(dir, tmp.path);
      ADD_FAILURE() << "no error for " << part;
    } catch (const RunFolderError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  write(tmp.path / "half/metrics.jsonl", "{\"kind\":\"train\",\"step\":1}\nnot json\n{\"kind\":\"eval\"}\n");
  expect(tmp.path / "half", "metrics.jsonl:2");
  write(tmp.path / "done/results.json", "[1, 2]");
  expect(tmp.path / "done", "results.json: not a JSON object");
  write(tmp.path / "sweep.json", "{\"runs\": 3}");
  expect(tmp.path / "new", "sweep.json: not a sweep manifest");
  EXPECT_THROW(find_run_folders(tmp.path / "missing"), RunFolderError);
}

TEST(RunFolder, DifferingKeysInFileOrder) {
  auto run = [](const std::string& extra) {
    RunFolder r;
    r.set_config(flatten_config(std::string(kConfig) + extra, "c.toml"));
    return r;
  };
  std::vector<RunFolder> runs = {run(""), run(""), run("")};
  EXPECT_TRUE(differing_keys(runs).empty());
  runs[1] = run("[optim]\nbeta2 = 0.95\n");
  auto cfg = runs[2].config_entries;
  for (auto& e : cfg) {
    if (e.key == "task.mqar.train[1].seq_len") e.text = "256";
    if (e.key == "model.mixer") e.text = "s4d";
    if (e.key == "run.out_dir") e.text = "elsewhere";  // where a run was written never differs
  }
  runs[2].set_config(cfg);
  EXPECT_EQ(differing_keys(runs),
            (std::vector<std::string>{"model.mixer", "task.mqar.train[1].seq_len", "optim.beta2"}));
  EXPECT_EQ(config_keys(runs).size(), 14u);
  EXPECT_EQ(metric_order({json{{"z", 1}, {"test_acc/L64", 1}, {"steps", 1}}, json{{"test_acc", 1}, {"a", 2}}}),
            (std::vector<std::string>{"steps", "test_acc", "test_acc/L64", "a", "z"}));
}

}  // namespace

namespace {

TEST(RunFolderKeys, UnusedMixersAndTasksOptionsDoNotDiffer) {
  using ssmlab::runfolder::RunFolder;
  auto run = [](const std::string& toml) {
    RunFolder r;
    r.set_config(ssmlab::runfolder::flatten_config(toml, "test"));
    return r;
  };
  const RunFolder a = run("[model]\nmixer = \"mamba1\"\n[model.mixers.mamba1]\nd_state = 16\n[model.mixers.mamba2]\n"
                          "d_state = 128\n[task]\nname = \"mqar\"\n[task.seqimage]\ndownsample = 1\n");
  const RunFolder b = run("[model]\nmixer = \"attention\"\n[model.mixers.mamba1]\nd_state = 16\n[model.mixers.mamba2]\n"
                          "d_state = 16\n[task]\nname = \"mqar\"\n[task.seqimage]\ndownsample = 4\n");
  const RunFolder c = run("[model]\nmixer = \"mamba1\"\n[model.mixers.mamba1]\nd_state = 32\n[model.mixers.mamba2]\n"
                          "d_state = 128\n[task]\nname = \"mqar\"\n[task.seqimage]\ndownsample = 1\n");
  EXPECT_EQ(ssmlab::runfolder::differing_keys({a, b}), (std::vector<std::string>{"model.mixer"}));
  // Two runs of the same mixer with different options: that option differs; unused sub-tables still do not.
  EXPECT_EQ(ssmlab::runfolder::differing_keys({a, b, c}),
            (std::vector<std::string>{"model.mixer", "model.mixers.mamba1.d_state"}));
}

}  // namespace

}  // namespace runfolder_test_run_folder
