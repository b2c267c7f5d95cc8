// TensorBoard event files, read back by a reader written here against the format (TFRecord framing with masked
// CRC32C, Event / Summary / Summary.Value protobuf fields), not with the writer's code: the first event is the
// file version, the others recover exactly the tags, steps and values logged; a flipped byte is caught. A tiny
// training run's event file mirrors its metrics.jsonl, also after a halt and resume; train.tensorboard = false
// writes none.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "ssmlab/experiments/run.h"
#include "ssmlab/train/tb_writer.h"

namespace train_test_tb_writer {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// CRC-32C bit by bit (polynomial 0x1EDC6F41, reflected 0x82F63B78).
uint32_t crc32c_bitwise(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char ch : s) {
    c ^= ch;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}
uint32_t masked(const std::string& s) {
  const uint32_t c = crc32c_bitwise(s);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

struct Event {
  double wall_time = NAN;
  int64_t step = 0;
  std::string file_version;
  std::vector<std::pair<std::string, float>> values;
};

class Reader {
 public:
  explicit Reader(std::string bytes) : b_(std::move(bytes)) {}
  bool done() const { return pos_ == b_.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      if (pos_ >= b_.size() || shift > 63) throw std::runtime_error("truncated varint");
      const uint8_t byte = static_cast<uint8_t>(b_[pos_++]);
      v |= uint64_t(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return v;
    }
  }
  std::string take(size_t n) {
    if (pos_ + n > b_.size()) throw std::runtime_error("truncated field");
    std::string s = b_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  template <class T>
  T fixed() {
    T v;
    std::memcpy(&v, take(sizeof(T)).data(), sizeof(T));
    return v;
  }

 private:
  std::string b_;
  size_t pos_ = 0;
};

std::pair<std::string, float> parse_value(const std::string& bytes) {
  Reader r(bytes);
  std::pair<std::string, float> out{"", NAN};
  while (!r.done()) {
    const uint64_t key = r.varint();
    if (key == (1 << 3 | 2)) out.first = r.take(r.varint());
    else if (key == (2 << 3 | 5)) out.second = r.fixed<float>();
    else throw std::runtime_error("unexpected Summary.Value field " + std::to_string(key >> 3));
  }
  return out;
}

Event parse_event(const std::string& bytes) {
  Reader r(bytes);
  Event e;
  while (!r.done()) {
    const uint64_t key = r.varint();
    switch (key) {
      case 1 << 3 | 1: e.wall_time = r.fixed<double>(); break;
      case 2 << 3 | 0: e.step = static_cast<int64_t>(r.varint()); break;
      case 3 << 3 | 2: e.file_version = r.take(r.varint()); break;
      case 5 << 3 | 2: {
        Reader s(r.take(r.varint()));
        while (!s.done()) {
          if (s.varint() != (1 << 3 | 2)) throw std::runtime_error("unexpected Summary field");
          e.values.push_back(parse_value(s.take(s.varint())));
        }
        break;
      }
      default: throw std::runtime_error("unexpected Event field " + std::to_string(key >> 3));
    }
  }
  return e;
}

// All events of a file; throws on a CRC mismatch or truncation.
std::vector<Event> read_events(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  Reader r(os.str());
  std::vector<Event> out;
  while (!r.done()) {
    const std::string len_bytes = r.take(8);
    if (r.fixed<uint32_t>() != masked(len_bytes)) throw std::runtime_error("length CRC mismatch");
    uint64_t len;
    std::memcpy(&len, len_bytes.data(), 8);
    const std::string data = r.take(len);
    if (r.fixed<uint32_t>() != masked(data)) throw std::runtime_error("data CRC mismatch");
    out.push_back(parse_event(data));
  }
  return out;
}

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("ssmlab_tb_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<fs::path> event_files(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().starts_with("events.out.tfevents.")) out.push_back(e.path());
  return out;
}

// (step, tag) -> value as the event file should hold it: every finite number of each record but step/epoch.
std::map<std::pair<int64_t, std::string>, float> expected_scalars(const std::vector<json>& records) {
  std::map<std::pair<int64_t, std::string>, float> out;
  for (const auto& r : records)
    for (const auto& [k, v] : r.items())
      if (k != "step" && k != "epoch" && v.is_number() && std::isfinite(v.get<double>()))
        out[{r["step"].get<int64_t>(), k}] = static_cast<float>(v.get<double>());
  return out;
}

std::map<std::pair<int64_t, std::string>, float> logged_scalars(const std::vector<Event>& events) {
  std::map<std::pair<int64_t, std::string>, float> out;
  for (size_t i = 1; i < events.size(); ++i)
    for (const auto& [tag, value] : events[i].values) {
      EXPECT_FALSE(out.count({events[i].step, tag})) << "step " << events[i].step << " tag " << tag << " twice";
      out[{events[i].step, tag}] = value;
    }
  return out;
}

TEST(TbWriter, Crc32cKnownAnswer) {
  EXPECT_EQ(ssmlab::train::crc32c("123456789"), 0xE3069283u);  // the CRC-32C check value
  EXPECT_EQ(crc32c_bitwise("123456789"), 0xE3069283u);
  EXPECT_EQ(ssmlab::train::crc32c(""), 0u);
}

TEST(TbWriter, EventsParseAndHoldWhatWasLogged) {
  const auto dir = fresh_dir("unit");
  const std::vector<json> replay = {{{"kind", "train"}, {"step", 1}, {"epoch", 0}, {"train_loss", 3.5}}};
  ssmlab::train::TbWriter tb(dir, replay);
  EXPECT_EQ(tb.path().parent_path(), dir);
  EXPECT_TRUE(tb.path().filename().string().starts_with("events.out.tfevents."));
  const std::vector<json> logged = {
      {{"kind", "train"}, {"step", 2}, {"train_loss", 1.25}, {"lr", 3e-4}, {"tokens_per_s", 12345.6}},
      {{"kind", "eval"}, {"step", 300000}, {"test_acc", 0.96875}, {"test_acc/L32_K4", 0.5}, {"test_loss", nullptr}},
      {{"kind", "note"}, {"step", 3}, {"text", "no numbers: no event"}},
  };
  const double before = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  for (const auto& r : logged) tb.write(r);
  const auto events = read_events(tb.path());  // written unbuffered: readable at once
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_TRUE(events[0].values.empty());
  EXPECT_NEAR(events[2].wall_time, before, 60.0);
  EXPECT_EQ(events[1].step, 1);
  EXPECT_EQ(events[1].values, (std::vector<std::pair<std::string, float>>{{"train_loss", 3.5f}}));
  EXPECT_EQ(events[2].step, 2);
  EXPECT_EQ(events[2].values,
            (std::vector<std::pair<std::string, float>>{{"lr", 3e-4f}, {"tokens_per_s", 12345.6f}, {"train_loss", 1.25f}}));
  EXPECT_EQ(events[3].step, 300000);
  EXPECT_EQ(events[3].values,
            (std::vector<std::pair<std::string, float>>{{"test_acc", 0.96875f}, {"test_acc/L32_K4", 0.5f}}));

  // A second writer on the folder starts afresh: one file, holding only its own replay.
  ssmlab::train::TbWriter again(dir, {});
  ASSERT_EQ(event_files(dir).size(), 1u);
  EXPECT_EQ(read_events(again.path()).size(), 1u);
  fs::remove_all(dir);
}

TEST(TbWriter, ReaderCatchesACorruptByte) {
  const auto dir = fresh_dir("corrupt");
  ssmlab::train::TbWriter tb(dir, {});
  tb.write({{"step", 5}, {"train_loss", 2.0}});
  ASSERT_NO_THROW(read_events(tb.path()));
  std::fstream f(tb.path(), std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-6, std::ios::end);  // inside the last record's float
  char c;
  f.get(c);
  f.seekp(-6, std::ios::end);
  f.put(static_cast<char>(c ^ 0x10));
  f.close();
  EXPECT_THROW(read_events(tb.path()), std::runtime_error);
  fs::remove_all(dir);
}

ssmlab::experiments::Config tiny() {
  ssmlab::experiments::Config c;
  c.run.seed = 3;
  c.model.d_model = 16;
  c.model.n_layers = 1;
  c.model.mixers.mamba1.d_state = 4;
  c.task.batch_size = 16;
  c.task.test_batch_size = 64;
  c.task.mqar.vocab_size = 32;
  c.task.mqar.train = {{16, 2, 256}};
  c.task.mqar.test = {{16, 2, 32}};
  c.train.epochs = 2;
  c.train.lr = 1e-2;
  c.train.log_every = 4;
  c.train.eval_every = 8;
  c.train.checkpoint_every = 8;
  c.train.early_stop_acc = 0.0;
  c.train.threads = 1;
  return c;
}

std::vector<json> metrics(const fs::path& dir) {
  std::ifstream in(dir / "metrics.jsonl");
  std::vector<json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));
  return out;
}

TEST(TbWriter, TrainingRunMirrorsMetricsJsonl) {
  const auto dir = fresh_dir("run");
  ssmlab::experiments::train_run(tiny(), dir);
  const auto files = event_files(dir);
  ASSERT_EQ(files.size(), 1u);
  const auto events = read_events(files[0]);
  ASSERT_GT(events.size(), 5u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  const auto expected = expected_scalars(metrics(dir));
  EXPECT_EQ(logged_scalars(events), expected);
  EXPECT_TRUE(expected.count({32, "test_acc"}));
  EXPECT_TRUE(expected.count({32, "train_loss"}));
  fs::remove_all(dir);
}

TEST(TbWriter, ResumedRunMirrorsMetricsJsonl) {
  const auto dir = fresh_dir("resume");
  auto c = tiny();
  c.train.halt_after_steps = 20;  // the newest checkpoint is at 16: steps 17-20 are logged, then re-done
  auto first = ssmlab::experiments::train_run(c, dir);
  ASSERT_TRUE(first.fit.halted);
  c.train.halt_after_steps = 0;
  ssmlab::experiments::train_run(c, dir);
  const auto files = event_files(dir);
  ASSERT_EQ(files.size(), 1u) << "the resumed run replaces the old event file";
  const auto events = read_events(files[0]);
  EXPECT_EQ(logged_scalars(events), expected_scalars(metrics(dir)));
  int64_t last = 0;
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_GE(events[i].step, last) << "steps go back at event " << i;
    last = events[i].step;
  }
  fs::remove_all(dir);
}

TEST(TbWriter, OffWritesNoEventFile) {
  const auto dir = fresh_dir("off");
  auto c = tiny();
  c.train.epochs = 1;
  c.train.tensorboard = false;
  ssmlab::experiments::train_run(c, dir);
  EXPECT_TRUE(event_files(dir).empty());
  EXPECT_TRUE(fs::exists(dir / "metrics.jsonl"));
  fs::remove_all(dir);
}

}  // namespace

}  // namespace train_test_tb_writer
