// Exit codes and one-line errors of the ssmlab binary (core/exit_codes.h, apps/exit_handler.*): each
// category of bad input, run through the real command, ends with its code and exactly one stderr line
// that names the input, never std::terminate or a stack overflow.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstring>
#include <fstream>

#include "ssmlab/core/exit_codes.h"
#include "ssmlab/core/io.h"
#include "test_util.h"

namespace apps_test_exit_codes {

namespace fs = std::filesystem;

namespace {

const fs::path kSsmlab = fs::path(SSMLAB_BINARY_DIR) / "ssmlab";

struct Result {
  int status = -1;  // exit code, or 128 + signal
  std::string out, err;
};

Result run(const std::string& args, const fs::path& dir) {
  const fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string cmd = kSsmlab.string() + " " + args + " > " + out.string() + " 2> " + err.string();
  Result r;
  r.status = ssmlab::test::shell_status(cmd);
  r.out = ssmlab::read_file(out);
  r.err = ssmlab::read_file(err);
  return r;
}

// The error line: stderr's last line; log lines (warnings) may come before it, but no other error line.
std::string error_line(const std::string& err) {
  size_t count = 0, pos = 0;
  for (size_t at; (at = err.find(": error: ", pos)) != std::string::npos; pos = at + 1) ++count;
  if (count != 1 || err.empty() || err.back() != '\n') return "NOT ONE ERROR LINE: " + err;
  const size_t start = err.rfind('\n', err.size() - 2);
  return err.substr(start == std::string::npos ? 0 : start + 1);
}

// The run's exit code is `code` and its one error line contains each of `parts`.
void expect_exit(const Result& r, int code, std::initializer_list<std::string> parts) {
  EXPECT_EQ(r.status, code) << "stderr: " << r.err;
  const std::string line = error_line(r.err);
  for (const auto& p : parts) EXPECT_NE(line.find(p), std::string::npos) << "error line: " << line << "\nlacks: " << p;
}

std::string write(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary) << text;
  return file.string();
}

const char* kTiny = R"([run]
name = "tiny"
[model]
mixer = "mamba1"
d_model = 16
n_layers = 1
[model.mixers.mamba1]
d_state = 4
[task]
batch_size = 4
[task.mqar]
vocab_size = 32
[[task.mqar.train]]
seq_len = 16
num_kv_pairs = 2
count = 8
[[task.mqar.test]]
seq_len = 16
num_kv_pairs = 2
count = 8
[train]
epochs = 1
threads = 1
)";

std::string tiny_path(const fs::path& dir) { return write(dir / "tiny.toml", kTiny); }

class ExitCodes : public ::testing::Test {
 protected:
  ssmlab::test::TempDir tmp;
};

TEST_F(ExitCodes, UsageErrors) {
  expect_exit(run("train", tmp.path), ssmlab::kExitConfig, {"ssmlab: error:", "config"});
  expect_exit(run("frobnicate", tmp.path), ssmlab::kExitConfig, {"ssmlab: error:"});
  const std::string sweep = write(tmp.path / "s.toml", "[sweep]\ngrid = { \"train.lr\" = [0.1] }\n");
  expect_exit(run("sweep " + sweep + " --gpus 99999999999999999999999", tmp.path), ssmlab::kExitConfig,
              {"--gpus", "limit"});
  EXPECT_EQ(run("--help", tmp.path).status, 0);
}

TEST_F(ExitCodes, ConfigErrors) {
  const std::string bad = write(tmp.path / "bad.toml", "[model\nd_model = 3\n");
  expect_exit(run("config " + bad, tmp.path), ssmlab::kExitConfig, {"ssmlab config " + bad, "TOML syntax error"});
  const std::string empty = write(tmp.path / "empty.toml", "# nothing\n");
  expect_exit(run("train " + empty, tmp.path), ssmlab::kExitConfig, {"configs/quickstart.toml"});
  const std::string deep = write(tmp.path / "deep.toml", std::string(100000, 'a') + "=1\n" +
                                                              [] {
                                                                std::string s;
                                                                for (int i = 0; i < 50000; ++i) s += "a.";
                                                                return s + "b = 1\n";
                                                              }());
  expect_exit(run("config " + deep, tmp.path), ssmlab::kExitConfig, {"limit of"});
  const std::string tiny = write(tmp.path / "tiny.toml", kTiny);
  expect_exit(run("train " + tiny + " --set train.threads=100000", tmp.path), ssmlab::kExitConfig, {"train.threads"});
  expect_exit(run("train " + tiny + " --set train.lr=inf", tmp.path), ssmlab::kExitConfig, {"train.lr", "finite"});
  expect_exit(run("train " + tiny + " --set run.name=../../escape", tmp.path), ssmlab::kExitConfig, {"run.name"});
  expect_exit(run("train " + tiny + " --set task.mqar.train[0].num_kv_pairs=4611686018427387904", tmp.path),
              ssmlab::kExitConfig, {"num_kv_pairs"});
  expect_exit(run("config " + tiny + " --set model.d_model", tmp.path), ssmlab::kExitConfig, {"key=value"});
}

TEST_F(ExitCodes, DataErrors) {
  // A run folder whose checkpoint is garbage: eval must say which file, with the data code.
  const fs::path runf = tmp.path / "run";
  write(runf / "config.toml", kTiny);
  const fs::path ck = runf / "checkpoints" / "step_00000005";
  write(ck / "model.safetensors", "not a safetensors file");
  write(ck / "optimizer.safetensors", "x");
  write(ck / "state.json", "{}");
  expect_exit(run("eval " + runf.string(), tmp.path), ssmlab::kExitData, {"model.safetensors"});
  // A hand-edited metrics.jsonl: "kind" of the wrong type in the middle.
  fs::remove_all(runf / "checkpoints");
  write(runf / "metrics.jsonl", "{\"kind\":\"eval\",\"step\":1}\n{\"kind\":7}\n{\"kind\":\"eval\",\"step\":2}\n");
  expect_exit(run("results " + tmp.path.string() + " --csv " + (tmp.path / "r.csv").string(), tmp.path),
              ssmlab::kExitData, {"metrics.jsonl:2", "\"kind\" must be a string"});
  expect_exit(run("report " + runf.string(), tmp.path), ssmlab::kExitData, {"metrics.jsonl:2"});
}

// The text task: a tokenizer file that is missing or cut off is bad data (code 3), named in the one error line.
TEST_F(ExitCodes, TextTokenizerFiles) {
  write(tmp.path / "corpus" / "a.txt", "some text\n");
  const std::string cfg = write(tmp.path / "text.toml", "[task]\nname = \"text\"\n[task.text]\ncorpus = \"files\"\n"
                                                        "path = \"" + (tmp.path / "corpus").string() + "\"\n");
  // The encoder is read first, so a missing encoder.json is named whether or not the default merges file exists.
  const std::string missing = (tmp.path / "none.json").string();
  expect_exit(run("tokenize " + cfg + " --set task.text.bpe_encoder=" + missing + " --encode hi", tmp.path),
              ssmlab::kExitData, {"ssmlab tokenize", missing, "no such file"});
  const std::string cut = write(tmp.path / "cut.json", "{\"a\": 0, \"b\"");
  expect_exit(run("train " + cfg + " --set task.text.bpe_encoder=" + cut + " --out " + (tmp.path / "run").string(),
                  tmp.path),
              ssmlab::kExitData,
              {cut, "not valid JSON"});
  expect_exit(run("tokenize " + tiny_path(tmp.path), tmp.path), ssmlab::kExitConfig, {"needs task.name"});
}

TEST_F(ExitCodes, FilterMatchingNothing) {
  write(tmp.path / "run" / "config.toml", kTiny);
  expect_exit(run("results " + tmp.path.string() + " --filter model.mixer=mamba2", tmp.path), ssmlab::kExitConfig,
              {"no run matches", "model.mixer has mamba1"});
}

TEST_F(ExitCodes, RuntimeErrors) {
  // An --out that cannot be created: a file system error, not std::terminate.
  const std::string tiny = write(tmp.path / "tiny.toml", kTiny);
  write(tmp.path / "file", "a file, not a folder");
  expect_exit(run("train " + tiny + " --out " + (tmp.path / "file" / "run").string(), tmp.path), ssmlab::kExitRuntime,
              {"ssmlab train " + tiny + ": error:"});
}

}  // namespace

}  // namespace apps_test_exit_codes
