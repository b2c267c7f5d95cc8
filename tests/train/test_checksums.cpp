// Checkpoint checksums (train/checksums.h) and state.json validation (train/state_file.h): a flipped byte
// in any file of a checkpoint is a DataError naming that file; old checkpoints without checksums.json still
// load; a state.json with a wrong type, a negative or mismatched step is refused, naming the file.
#include <gtest/gtest.h>

#include <fstream>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/core/sha256.h"
#include "ssmlab/train/checkpoint.h"
#include "ssmlab/train/checksums.h"
#include "test_util.h"

namespace train_test_checksums {

namespace fs = std::filesystem;
using namespace ssmlab::train;

namespace {

using ssmlab::test::TempDir;

struct Small {
  torch::nn::Linear model{4, 3};
  torch::optim::AdamW opt{model->parameters(), torch::optim::AdamWOptions(1e-3)};
  Small() {
    opt.zero_grad();
    model(at::ones({2, 4})).sum().backward();
    opt.step();
  }
};

fs::path saved(const fs::path& root, int64_t step = 5) {
  Small s;
  TrainState st;
  st.step = step;
  st.rng_state = "rng";
  const fs::path dir = checkpoint_dir(root, step);
  save_checkpoint(dir, *s.model, s.opt, st);
  return dir;
}

void flip_byte(const fs::path& file, size_t offset) {
  std::string bytes = ssmlab::read_file(file);
  ASSERT_LT(offset, bytes.size());
  bytes[offset] ^= 0x01;
  std::ofstream(file, std::ios::binary) << bytes;
}

template <class F>
std::string data_error(F&& f) {
  try {
    f();
  } catch (const ssmlab::DataError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong type: ") + e.what();
  }
  return "no error";
}

TEST(Checksums, Sha256OfKnownText) {
  EXPECT_EQ(ssmlab::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(ssmlab::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Checksums, WrittenForEveryFile) {
  TempDir tmp;
  const fs::path dir = saved(tmp.path);
  const std::string sums = ssmlab::read_file(dir / kChecksumsFile);
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "state.json"}) {
    EXPECT_NE(sums.find(f), std::string::npos) << f;
    EXPECT_NE(sums.find(ssmlab::sha256_hex(ssmlab::read_file(dir / f))), std::string::npos) << f;
  }
}

TEST(Checksums, FlippedByteInAnyFileIsDetected) {
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "state.json"}) {
    TempDir tmp;
    const fs::path dir = saved(tmp.path);
    // A byte in the data section (the tail) keeps the file parseable: only the checksum can tell.
    const size_t size = fs::file_size(dir / f);
    flip_byte(dir / f, std::string(f) == "state.json" ? size / 2 : size - 3);
    Small fresh;
    const std::string msg = data_error([&] { load_checkpoint(dir, *fresh.model, fresh.opt); });
    EXPECT_NE(msg.find((dir / f).string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("SHA-256"), std::string::npos) << msg;
  }
}

TEST(Checksums, WeightsOnlyLoadIsVerified) {
  TempDir tmp;
  const fs::path dir = saved(tmp.path);
  flip_byte(dir / "model.safetensors", fs::file_size(dir / "model.safetensors") - 1);
  torch::nn::Linear m(4, 3);
  const std::string msg = data_error([&] { load_model_weights(dir / "model.safetensors", *m); });
  EXPECT_NE(msg.find("corrupt"), std::string::npos) << msg;
}

TEST(Checksums, OldCheckpointWithoutChecksumsStillLoads) {
  TempDir tmp;
  const fs::path dir = saved(tmp.path);
  fs::remove(dir / kChecksumsFile);
  Small fresh;
  EXPECT_EQ(load_checkpoint(dir, *fresh.model, fresh.opt).step, 5);
  EXPECT_EQ(latest_checkpoint(tmp.path), dir);
}

TEST(Checksums, ChecksumsFileMissingAnEntryIsAnError) {
  TempDir tmp;
  const fs::path dir = saved(tmp.path);
  write_checksums(dir, {"model.safetensors"});
  Small fresh;
  const std::string msg = data_error([&] { load_checkpoint(dir, *fresh.model, fresh.opt); });
  EXPECT_NE(msg.find("lists no checksum"), std::string::npos) << msg;
}

// Rewrites state.json (and its checksum, as a hand edit plus a careful user would) with `edit` applied.
std::string state_error(const std::string& from, const std::string& to) {
  TempDir tmp;
  const fs::path dir = saved(tmp.path);
  std::string text = ssmlab::read_file(dir / "state.json");
  const auto at = text.find(from);
  if (at == std::string::npos) return "pattern not found: " + from;
  text.replace(at, from.size(), to);
  ssmlab::write_file_atomic(dir / "state.json", text);
  write_checksums(dir, {"model.safetensors", "optimizer.safetensors", "state.json"});
  Small fresh;
  return data_error([&] { load_checkpoint(dir, *fresh.model, fresh.opt); });
}

TEST(Checksums, StateJsonFieldsAreValidated) {
  EXPECT_NE(state_error("\"step\": 5", "\"step\": -5").find("\"step\" must be an integer >= 0"), std::string::npos);
  EXPECT_NE(state_error("\"step\": 5", "\"step\": 7").find("but the folder is for step 5"), std::string::npos);
  EXPECT_NE(state_error("\"step\": 5", "\"step\": \"5\"").find("\"step\" must be an integer"), std::string::npos);
  EXPECT_NE(state_error("\"epoch\": 0", "\"epoch\": 1.5").find("\"epoch\" must be an integer"), std::string::npos);
  EXPECT_NE(state_error("\"rng_state\": \"rng\"", "\"rng_state\": 3").find("\"rng_state\" must be a string"),
            std::string::npos);
  EXPECT_NE(state_error("\"extra\": null", "\"extra\": [1]").find("\"extra\" must be an object"), std::string::npos);
  const std::string deep = std::string(100, '[') + std::string(100, ']');
  EXPECT_NE(state_error("\"extra\": null", "\"extra\": " + deep).find("limit of 64"), std::string::npos);
  EXPECT_NE(state_error("\"extra\": null", "\"extra\": null").find("no error"), std::string::npos);
}

}  // namespace

}  // namespace train_test_checksums
