// TensorBoard event files, read back by a reader written here against the format (TFRecord framing with masked
// CRC32C, Event / Summary / Summary.Value protobuf fields, the hparams plugin's HParamsPluginData, SessionStartInfo,
// SessionEndInfo and Experiment from tensorboard/plugins/hparams/{plugin_data,api}.proto), not with the writer's
// code: the first event is the file version, the others recover exactly the grouped tags, steps and values logged
// and the hparams sessions; a flipped byte is caught. A tiny training run's event file mirrors its metrics.jsonl,
// also after a halt and resume (earlier points keep their wall times); train.tensorboard = false writes none. A
// sweep killed at its last step and run again is decoded here and, where SSMLAB_TB_PYTHON names a Python that
// imports tensorboard (the ctest tb.readback, tests/train/tb.cmake), read back by TensorBoard's own reader
// (tests/train/tb_readback.py).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "ssmlab/core/io.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/train/tb_writer.h"
#include "test_util.h"

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

// A Summary.Value of the hparams plugin: its tag and metadata.
struct PluginValue {
  std::string tag, plugin_name, content;
  uint64_t data_class = 0;
  uint64_t tensor_dtype = 0;
  int tensor_dims = -1;  // dims of the tensor's shape (-1: no tensor)
};

struct Event {
  double wall_time = NAN;
  int64_t step = 0;
  std::string file_version;
  std::vector<std::pair<std::string, float>> values;
  std::vector<PluginValue> plugin_values;
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

// Summary.Value: tag = 1, simple_value = 2, tensor = 8 (TensorProto: dtype = 1, tensor_shape = 2 {dim = 2}),
// metadata = 9 (SummaryMetadata: plugin_data = 1 {plugin_name = 1, content = 2}, data_class = 4).
void parse_value(const std::string& bytes, Event& e) {
  Reader r(bytes);
  std::string tag;
  float simple = NAN;
  bool is_simple = false;
  PluginValue pv;
  while (!r.done()) {
    const uint64_t key = r.varint();
    if (key == (1 << 3 | 2)) tag = r.take(r.varint());
    else if (key == (2 << 3 | 5)) simple = r.fixed<float>(), is_simple = true;
    else if (key == (8 << 3 | 2)) {
      Reader t(r.take(r.varint()));
      pv.tensor_dims = 0;
      while (!t.done()) {
        const uint64_t k = t.varint();
        if (k == (1 << 3 | 0)) pv.tensor_dtype = t.varint();
        else if (k == (2 << 3 | 2)) {
          Reader shape(t.take(t.varint()));
          while (!shape.done()) {
            if (shape.varint() != (2 << 3 | 2)) throw std::runtime_error("unexpected TensorShapeProto field");
            shape.take(shape.varint());
            ++pv.tensor_dims;
          }
        } else throw std::runtime_error("unexpected TensorProto field " + std::to_string(k >> 3));
      }
    } else if (key == (9 << 3 | 2)) {
      Reader m(r.take(r.varint()));
      while (!m.done()) {
        const uint64_t k = m.varint();
        if (k == (4 << 3 | 0)) pv.data_class = m.varint();
        else if (k == (1 << 3 | 2)) {
          Reader pd(m.take(m.varint()));
          while (!pd.done()) {
            const uint64_t pk = pd.varint();
            if (pk == (1 << 3 | 2)) pv.plugin_name = pd.take(pd.varint());
            else if (pk == (2 << 3 | 2)) pv.content = pd.take(pd.varint());
            else throw std::runtime_error("unexpected PluginData field");
          }
        } else throw std::runtime_error("unexpected SummaryMetadata field " + std::to_string(k >> 3));
      }
    } else throw std::runtime_error("unexpected Summary.Value field " + std::to_string(key >> 3));
  }
  if (is_simple) e.values.emplace_back(tag, simple);
  else {
    pv.tag = tag;
    e.plugin_values.push_back(pv);
  }
}

// ---- tensorboard.hparams messages ----
// google.protobuf.Value as text: "n:<number>", "s:<text>", "b:true".
std::string value_text(const std::string& bytes) {
  Reader r(bytes);
  std::string out;
  while (!r.done()) {
    const uint64_t k = r.varint();
    if (k == (2 << 3 | 1)) {
      std::ostringstream os;
      os << r.fixed<double>();
      out = "n:" + os.str();
    } else if (k == (3 << 3 | 2)) out = "s:" + r.take(r.varint());
    else if (k == (4 << 3 | 0)) out = r.varint() ? "b:true" : "b:false";
    else throw std::runtime_error("unexpected Value field " + std::to_string(k >> 3));
  }
  return out;
}

struct HParamsData {
  uint64_t version = 0;
  std::string which;  // "experiment", "session_start_info", "session_end_info"
  // SessionStartInfo: hparams = 1 (map entries: key = 1, value = 2), model_uri = 2, group_name = 4,
  // start_time_secs = 5.
  std::map<std::string, std::string> hparams;
  std::vector<std::string> hparam_order;
  std::string model_uri, group_name;
  double start_time = NAN;
  // SessionEndInfo: status = 1, end_time_secs = 2.
  uint64_t status = 0;
  double end_time = NAN;
  // Experiment: description = 1, time_created_secs = 3, hparam_infos = 4 (name = 1, type = 4, domain_discrete = 5
  // (ListValue: values = 1), differs = 7), metric_infos = 5 (name = 1 (group = 1, tag = 2), dataset_type = 5), name = 6.
  std::string name, description;
  struct Info {
    std::string name;
    uint64_t type = 0;
    std::vector<std::string> domain;
    bool differs = false;
  };
  std::vector<Info> infos;
  std::vector<std::pair<std::string, uint64_t>> metrics;  // "group|tag", dataset type
};

HParamsData parse_hparams(const std::string& content) {
  HParamsData d;
  Reader r(content);
  while (!r.done()) {
    const uint64_t k = r.varint();
    if (k == (1 << 3 | 0)) {
      d.version = r.varint();
      continue;
    }
    if ((k & 7) != 2) throw std::runtime_error("unexpected HParamsPluginData field");
    Reader m(r.take(r.varint()));
    const uint64_t field = k >> 3;
    if (field == 3) {
      d.which = "session_start_info";
      while (!m.done()) {
        const uint64_t f = m.varint();
        if (f == (1 << 3 | 2)) {
          Reader entry(m.take(m.varint()));
          std::string key, value;
          while (!entry.done()) {
            const uint64_t ek = entry.varint();
            if (ek == (1 << 3 | 2)) key = entry.take(entry.varint());
            else if (ek == (2 << 3 | 2)) value = value_text(entry.take(entry.varint()));
            else throw std::runtime_error("unexpected map entry field");
          }
          d.hparams[key] = value;
          d.hparam_order.push_back(key);
        } else if (f == (2 << 3 | 2)) d.model_uri = m.take(m.varint());
        else if (f == (4 << 3 | 2)) d.group_name = m.take(m.varint());
        else if (f == (5 << 3 | 1)) d.start_time = m.fixed<double>();
        else throw std::runtime_error("unexpected SessionStartInfo field " + std::to_string(f >> 3));
      }
    } else if (field == 4) {
      d.which = "session_end_info";
      while (!m.done()) {
        const uint64_t f = m.varint();
        if (f == (1 << 3 | 0)) d.status = m.varint();
        else if (f == (2 << 3 | 1)) d.end_time = m.fixed<double>();
        else throw std::runtime_error("unexpected SessionEndInfo field");
      }
    } else if (field == 2) {
      d.which = "experiment";
      while (!m.done()) {
        const uint64_t f = m.varint();
        if (f == (1 << 3 | 2)) d.description = m.take(m.varint());
        else if (f == (6 << 3 | 2)) d.name = m.take(m.varint());
        else if (f == (3 << 3 | 1)) m.fixed<double>();
        else if (f == (4 << 3 | 2)) {
          Reader h(m.take(m.varint()));
          HParamsData::Info info;
          while (!h.done()) {
            const uint64_t hk = h.varint();
            if (hk == (1 << 3 | 2)) info.name = h.take(h.varint());
            else if (hk == (4 << 3 | 0)) info.type = h.varint();
            else if (hk == (7 << 3 | 0)) info.differs = h.varint() != 0;
            else if (hk == (5 << 3 | 2)) {
              Reader list(h.take(h.varint()));
              while (!list.done()) {
                if (list.varint() != (1 << 3 | 2)) throw std::runtime_error("unexpected ListValue field");
                info.domain.push_back(value_text(list.take(list.varint())));
              }
            } else throw std::runtime_error("unexpected HParamInfo field " + std::to_string(hk >> 3));
          }
          d.infos.push_back(info);
        } else if (f == (5 << 3 | 2)) {
          Reader mi(m.take(m.varint()));
          std::string group, tag;
          uint64_t dataset = 0;
          while (!mi.done()) {
            const uint64_t mk = mi.varint();
            if (mk == (1 << 3 | 2)) {
              Reader n(mi.take(mi.varint()));
              while (!n.done()) {
                const uint64_t nk = n.varint();
                if (nk == (1 << 3 | 2)) group = n.take(n.varint());
                else if (nk == (2 << 3 | 2)) tag = n.take(n.varint());
                else throw std::runtime_error("unexpected MetricName field");
              }
            } else if (mk == (5 << 3 | 0)) dataset = mi.varint();
            else throw std::runtime_error("unexpected MetricInfo field");
          }
          d.metrics.emplace_back(group + "|" + tag, dataset);
        } else throw std::runtime_error("unexpected Experiment field " + std::to_string(f >> 3));
      }
    } else throw std::runtime_error("unexpected HParamsPluginData field " + std::to_string(field));
  }
  return d;
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
          parse_value(s.take(s.varint()), e);
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

// The tag TensorBoard shows for a metrics.jsonl key: train records under train/ without the train_ prefix, eval
// records under eval/ without the test_ prefix.
std::string grouped(const std::string& kind, const std::string& key) {
  auto strip = [&](const std::string& prefix) { return key.rfind(prefix, 0) == 0 ? key.substr(prefix.size()) : key; };
  if (kind == "train") return "train/" + strip("train_");
  if (kind == "eval") return "eval/" + strip("test_");
  return key;
}

// (step, tag) -> value as the event file should hold it: every finite number of each record but step/epoch.
std::map<std::pair<int64_t, std::string>, float> expected_scalars(const std::vector<json>& records) {
  std::map<std::pair<int64_t, std::string>, float> out;
  for (const auto& r : records)
    for (const auto& [k, v] : r.items())
      if (k != "step" && k != "epoch" && v.is_number() && std::isfinite(v.get<double>()))
        out[{r["step"].get<int64_t>(), grouped(r.value("kind", ""), k)}] = static_cast<float>(v.get<double>());
  return out;
}

// The hparams summaries of a file with `tag`, decoded.
std::vector<HParamsData> hparams_with_tag(const std::vector<Event>& events, const std::string& tag) {
  std::vector<HParamsData> out;
  for (const auto& e : events)
    for (const auto& pv : e.plugin_values)
      if (pv.tag == tag) {
        EXPECT_EQ(pv.plugin_name, "hparams");
        EXPECT_EQ(pv.data_class, 2u) << "DATA_CLASS_TENSOR";
        EXPECT_EQ(pv.tensor_dtype, 1u) << "DT_FLOAT";
        EXPECT_EQ(pv.tensor_dims, 1) << "shape (0,)";
        out.push_back(parse_hparams(pv.content));
        EXPECT_EQ(out.back().version, 0u);
      }
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
  EXPECT_EQ(events[1].values, (std::vector<std::pair<std::string, float>>{{"train/loss", 3.5f}}));
  EXPECT_EQ(events[2].step, 2);
  EXPECT_EQ(events[2].values, (std::vector<std::pair<std::string, float>>{
                                  {"train/lr", 3e-4f}, {"train/tokens_per_s", 12345.6f}, {"train/loss", 1.25f}}));
  EXPECT_EQ(events[3].step, 300000);
  EXPECT_EQ(events[3].values,
            (std::vector<std::pair<std::string, float>>{{"eval/acc", 0.96875f}, {"eval/acc/L32_K4", 0.5f}}));
  EXPECT_TRUE(hparams_with_tag(events, "_hparams_/session_start_info").empty()) << "no hparams asked for";

  // A second writer on the folder at step 0 (a start from scratch) keeps only the version event, with its
  // original wall time: one file.
  ssmlab::train::TbWriter again(dir, {});
  ASSERT_EQ(event_files(dir).size(), 1u);
  const auto kept = read_events(again.path());
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0].wall_time, events[0].wall_time);
  fs::remove_all(dir);
}

TEST(TbWriter, TagsAreGroupedByRecordKind) {
  using ssmlab::train::tb_tag;
  EXPECT_EQ(tb_tag("train", "train_loss"), "train/loss");
  EXPECT_EQ(tb_tag("train", "lr"), "train/lr");
  EXPECT_EQ(tb_tag("eval", "test_acc/L1024_K64"), "eval/acc/L1024_K64");
  EXPECT_EQ(tb_tag("eval", "test_ppl"), "eval/ppl");
  EXPECT_EQ(tb_tag("", "test_loss"), "eval/loss");
  EXPECT_EQ(tb_tag("", "train_loss"), "train/loss");
  EXPECT_EQ(tb_tag("note", "other"), "other");
}

// The hparams messages decode (with the reader above, written from the .proto files) to what was encoded.
TEST(TbWriter, HparamsSummariesDecode) {
  using namespace ssmlab::train;
  const HParams hp = {{"model.mixer", std::string("mamba1")}, {"train.lr", 0.003}, {"train.tensorboard", true}};
  auto start = parse_hparams(session_start_plugin_data(hp, 1234.5, "/runs/x", "g"));
  EXPECT_EQ(start.which, "session_start_info");
  EXPECT_EQ(start.hparam_order, (std::vector<std::string>{"model.mixer", "train.lr", "train.tensorboard"}));
  EXPECT_EQ(start.hparams["model.mixer"], "s:mamba1");
  EXPECT_EQ(start.hparams["train.lr"], "n:0.003");
  EXPECT_EQ(start.hparams["train.tensorboard"], "b:true");
  EXPECT_EQ(start.start_time, 1234.5);
  EXPECT_EQ(start.model_uri, "/runs/x");
  EXPECT_EQ(start.group_name, "g");
  auto end = parse_hparams(session_end_plugin_data(SessionStatus::failure, 99.25));
  EXPECT_EQ(end.which, "session_end_info");
  EXPECT_EQ(end.status, 2u);
  EXPECT_EQ(end.end_time, 99.25);
  Experiment x;
  x.name = "sw";
  x.description = "d";
  x.hparams = {{"model.mixer", {std::string("a"), std::string("b")}, true},
               {"train.lr", {0.001, 0.01}, true},
               {"mixed", {1.0, std::string("x")}, true},
               {"flag", {false}, false}};
  x.metrics = {{"train/loss", "", DatasetType::training}, {"eval/acc", "sub", DatasetType::validation}};
  auto e = parse_hparams(experiment_plugin_data(x));
  EXPECT_EQ(e.which, "experiment");
  EXPECT_EQ(e.name, "sw");
  EXPECT_EQ(e.description, "d");
  ASSERT_EQ(e.infos.size(), 4u);
  EXPECT_EQ(e.infos[0].name, "model.mixer");
  EXPECT_EQ(e.infos[0].type, 1u);  // DATA_TYPE_STRING
  EXPECT_EQ(e.infos[0].domain, (std::vector<std::string>{"s:a", "s:b"}));
  EXPECT_TRUE(e.infos[0].differs);
  EXPECT_EQ(e.infos[1].type, 3u);  // DATA_TYPE_FLOAT64
  EXPECT_EQ(e.infos[1].domain, (std::vector<std::string>{"n:0.001", "n:0.01"}));
  EXPECT_EQ(e.infos[2].type, 1u);  // mixed: text, as TensorBoard reads it
  EXPECT_EQ(e.infos[2].domain, (std::vector<std::string>{"s:1", "s:x"}));
  EXPECT_EQ(e.infos[3].type, 2u);  // DATA_TYPE_BOOL
  EXPECT_FALSE(e.infos[3].differs);
  EXPECT_EQ(e.metrics, (std::vector<std::pair<std::string, uint64_t>>{{"|train/loss", 1}, {"sub|eval/acc", 2}}));
  // Wrapped in an event: the tag, the plugin name, a DATA_CLASS_TENSOR and hparams' empty float tensor.
  std::vector<Event> one = {parse_event(hparams_event(5.0, 7, kExperimentTag, experiment_plugin_data(x)))};
  EXPECT_EQ(one[0].step, 7);
  EXPECT_EQ(hparams_with_tag(one, "_hparams_/experiment").size(), 1u);
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
  EXPECT_TRUE(expected.count({32, "eval/acc"}));
  EXPECT_TRUE(expected.count({32, "train/loss"}));
  EXPECT_TRUE(expected.count({32, "eval/acc/L16_K2"}));
  // A run outside a sweep is an hparams session of its own: basics, started once, ended with success.
  auto starts = hparams_with_tag(events, "_hparams_/session_start_info");
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_EQ(starts[0].hparams["model.mixer"], "s:mamba1");
  EXPECT_EQ(starts[0].hparams["model.d_model"], "n:16");
  EXPECT_EQ(starts[0].hparams["train.lr"], "n:0.01");
  EXPECT_EQ(starts[0].hparams["task.name"], "s:mqar");
  EXPECT_EQ(fs::path(starts[0].model_uri), fs::absolute(dir).lexically_normal());
  const auto ends = hparams_with_tag(events, "_hparams_/session_end_info");
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_EQ(ends[0].status, 1u);  // STATUS_SUCCESS
  EXPECT_GE(ends[0].end_time, starts[0].start_time);
  fs::remove_all(dir);
}

TEST(TbWriter, ResumedRunMirrorsMetricsJsonl) {
  const auto dir = fresh_dir("resume");
  auto c = tiny();
  c.train.halt_after_steps = 20;  // the newest checkpoint is at 16: steps 17-20 are logged, then re-done
  auto first = ssmlab::experiments::train_run(c, dir);
  ASSERT_TRUE(first.fit.halted);
  ASSERT_EQ(event_files(dir).size(), 1u);
  const auto before = read_events(event_files(dir)[0]);
  std::map<std::pair<int64_t, std::string>, double> wall_before;
  double last_wall = 0;
  for (const auto& e : before) {
    for (const auto& [tag, v] : e.values) wall_before[{e.step, tag}] = e.wall_time;
    last_wall = std::max(last_wall, e.wall_time);
  }
  ASSERT_TRUE(wall_before.count({20, "train/loss"})) << "steps after the checkpoint were logged before the halt";
  EXPECT_TRUE(hparams_with_tag(before, "_hparams_/session_end_info").empty()) << "a halted session has not ended";
  c.train.halt_after_steps = 0;
  ssmlab::experiments::train_run(c, dir);
  const auto files = event_files(dir);
  ASSERT_EQ(files.size(), 1u) << "the resumed run replaces the old event file";
  const auto events = read_events(files[0]);
  EXPECT_EQ(logged_scalars(events), expected_scalars(metrics(dir)));  // each (step, tag) once
  // Points up to the checkpoint keep their wall times; those redone after it are new.
  size_t kept = 0;
  for (const auto& e : events)
    for (const auto& [tag, v] : e.values) {
      if (e.step <= 16) {
        ASSERT_TRUE(wall_before.count({e.step, tag})) << e.step << " " << tag;
        EXPECT_EQ(e.wall_time, (wall_before[{e.step, tag}])) << "re-stamped: step " << e.step << " " << tag;
        ++kept;
      } else {
        EXPECT_GT(e.wall_time, last_wall) << "a point logged before the halt survived: step " << e.step << " " << tag;
      }
    }
  EXPECT_GT(kept, 5u);
  EXPECT_EQ(events[0].wall_time, before[0].wall_time);
  const auto starts = hparams_with_tag(events, "_hparams_/session_start_info");
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_EQ(starts[0].start_time, hparams_with_tag(before, "_hparams_/session_start_info").at(0).start_time);
  const auto ends = hparams_with_tag(events, "_hparams_/session_end_info");
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_EQ(ends[0].status, 1u);
  int64_t last = 0;
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_GE(events[i].step, last) << "steps go back at event " << i;
    last = events[i].step;
  }
  fs::remove_all(dir);
}

// Training that throws (here: the loss diverges) ends its hparams session with STATUS_FAILURE, once.
TEST(TbWriter, DivergedRunEndsItsSessionWithFailure) {
  auto c = tiny();
  c.train.lr = 1e30;
  c.train.grad_clip = 0.0;
  c.train.max_steps = 30;
  const auto dir = fresh_dir("diverged");
  EXPECT_THROW(ssmlab::experiments::train_run(c, dir), ssmlab::Error);
  const auto files = event_files(dir);
  ASSERT_EQ(files.size(), 1u);
  const auto events = read_events(files[0]);
  ASSERT_EQ(hparams_with_tag(events, "_hparams_/session_start_info").size(), 1u);
  const auto ends = hparams_with_tag(events, "_hparams_/session_end_info");
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_EQ(ends[0].status, 2u);  // STATUS_FAILURE
  EXPECT_EQ(events.back().plugin_values.size(), 1u) << "the session end is the last event";
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

// ---- A sweep killed at its last step, run again, then read back (TensorBoard's own reader where importable) ----

const fs::path kSsmlab = fs::path(SSMLAB_BINARY_DIR) / "ssmlab";

std::string sweep_text(const fs::path& out) {
  return R"([sweep]
out_dir = ")" + out.string() + R"("
zip = { "model.mixer" = ["mamba1", "attention"], "train.lr" = [0.01, 0.003] }
[run]
name = "tiny"
[model]
d_model = 16
n_layers = 1
[model.mixers.mamba1]
d_state = 4
[task]
batch_size = 4
test_batch_size = 16
[task.mqar]
vocab_size = 32
seed = 7
[[task.mqar.train]]
seq_len = 16
num_kv_pairs = 2
count = 400
[[task.mqar.test]]
seq_len = 16
num_kv_pairs = 2
count = 16
[train]
max_steps = 20
eval_every = 8
checkpoint_every = 8
log_every = 4
early_stop_acc = 0.0
threads = 1
)";
}

struct SweepRunTb {
  std::string name, mixer, lr;  // TensorBoard run name, its swept values
  fs::path run_dir;
};

TEST(TbReadBack, KilledSweepResumedAsTensorBoardReadsIt) {
  ssmlab::test::TempDir tmp;
  const fs::path out = tmp.path / "sw", file = tmp.path / "sw.toml", log = tmp.path / "sweep.log";
  ssmlab::write_file_atomic(file, sweep_text(out));
  const std::string sweep = "'" + kSsmlab.string() + "' sweep '" + file.string() + "' > '" + log.string() + "' 2>&1";
  // Every run is killed (SIGKILL) at step 20, after logging it and before its checkpoint: the newest is step 16.
  EXPECT_NE(ssmlab::test::shell_status("SSMLAB_FAULT_AT=before_final_checkpoint " + sweep), 0) << ssmlab::read_file(log);
  const auto manifest = json::parse(ssmlab::read_file(out / "sweep.json"));
  std::vector<SweepRunTb> runs;
  for (const auto& r : manifest["runs"])
    runs.push_back({"tiny,mixer=" + r["values"]["model.mixer"].get<std::string>() +
                        ",lr=" + (r["values"]["train.lr"].get<double>() == 0.01 ? "0.01" : "0.003"),
                    r["values"]["model.mixer"].get<std::string>(), r["values"]["train.lr"].dump(),
                    out / r["folder"].get<std::string>()});
  ASSERT_EQ(runs.size(), 2u);
  std::map<std::string, std::map<std::pair<int64_t, std::string>, double>> wall_before;
  std::map<std::string, double> last_wall;
  for (const auto& r : runs) {
    const fs::path tb = out / "tb" / r.name;
    ASSERT_EQ(event_files(tb).size(), 1u) << tb << "\n" << ssmlab::read_file(log);
    for (const auto& e : read_events(event_files(tb)[0])) {
      for (const auto& [tag, v] : e.values) wall_before[r.name][{e.step, tag}] = e.wall_time;
      last_wall[r.name] = std::max(last_wall[r.name], e.wall_time);
    }
    ASSERT_TRUE(wall_before[r.name].count({20, "train/loss"})) << r.name << ": step 20 was logged before the kill";
    EXPECT_FALSE(fs::exists(r.run_dir / "DONE"));
  }

  ASSERT_EQ(ssmlab::test::shell_status(sweep), 0) << ssmlab::read_file(log);

  // ---- the files, decoded here ----
  std::map<std::string, std::map<std::pair<int64_t, std::string>, std::pair<double, float>>> decoded;  // wall, value
  for (const auto& r : runs) {
    SCOPED_TRACE(r.name);
    EXPECT_TRUE(fs::exists(r.run_dir / "DONE"));
    EXPECT_TRUE(event_files(r.run_dir).empty()) << "a sweep run's events live in <sweep>/tb/<name>/ only";
    const auto files = event_files(out / "tb" / r.name);
    ASSERT_EQ(files.size(), 1u);
    const auto events = read_events(files[0]);
    EXPECT_EQ(logged_scalars(events), expected_scalars(metrics(r.run_dir)));  // each point once
    for (const auto& e : events)
      for (const auto& [tag, v] : e.values) {
        decoded[r.name][{e.step, tag}] = {e.wall_time, v};
        if (e.step <= 16) EXPECT_EQ(e.wall_time, (wall_before[r.name][{e.step, tag}])) << e.step << " " << tag;
        else EXPECT_GT(e.wall_time, last_wall[r.name]) << e.step << " " << tag;
      }
    const auto starts = hparams_with_tag(events, "_hparams_/session_start_info");
    ASSERT_EQ(starts.size(), 1u);
    auto hp = starts[0].hparams;
    EXPECT_EQ(starts[0].hparam_order.at(0), "model.mixer");  // swept keys first
    EXPECT_EQ(starts[0].hparam_order.at(1), "train.lr");
    EXPECT_EQ(hp["model.mixer"], "s:" + r.mixer);
    EXPECT_EQ(hp["train.lr"], "n:" + r.lr);
    EXPECT_EQ(hp["model.d_model"], "n:16");
    EXPECT_EQ(fs::path(starts[0].model_uri), fs::absolute(r.run_dir).lexically_normal());
    const auto ends = hparams_with_tag(events, "_hparams_/session_end_info");
    ASSERT_EQ(ends.size(), 1u) << "the killed attempt never ended its session; the resumed one did, once";
    EXPECT_EQ(ends[0].status, 1u);
  }
  const auto exp_files = event_files(out / "tb");
  ASSERT_EQ(exp_files.size(), 1u);
  const auto exps = hparams_with_tag(read_events(exp_files[0]), "_hparams_/experiment");
  ASSERT_EQ(exps.size(), 1u);
  std::map<std::string, HParamsData::Info> infos;
  for (const auto& i : exps[0].infos) infos[i.name] = i;
  EXPECT_EQ(infos["model.mixer"].domain, (std::vector<std::string>{"s:mamba1", "s:attention"}));
  EXPECT_TRUE(infos["model.mixer"].differs);
  EXPECT_EQ(infos["train.lr"].domain, (std::vector<std::string>{"n:0.003", "n:0.01"}));
  EXPECT_EQ(infos["model.d_model"].domain, (std::vector<std::string>{"n:16"}));
  EXPECT_FALSE(infos["model.d_model"].differs);
  EXPECT_EQ(exps[0].metrics, (std::vector<std::pair<std::string, uint64_t>>{
                                 {"|train/loss", 1}, {"|eval/acc", 2}, {"|eval/loss", 2}, {"|eval/acc/L16_K2", 2}}));

  // ---- TensorBoard's own reader ----
  // Only where SSMLAB_TB_PYTHON names a Python that imports tensorboard: the ctest tb.readback (tests/train/tb.cmake)
  // runs this test so, registered when configure found one. There a Python without tensorboard is a failure.
  const char* env = std::getenv("SSMLAB_TB_PYTHON");
  if (!env || !*env) {
    RecordProperty("tensorboard_readback", "not in this run: SSMLAB_TB_PYTHON unset (ctest tb.readback sets it)");
    return;
  }
  const std::string python = env;
  ASSERT_EQ(ssmlab::test::shell_status("'" + python + "' -c 'import tensorboard' > /dev/null 2>&1"), 0)
      << "SSMLAB_TB_PYTHON='" << python << "' cannot import tensorboard (scripts/setup.sh installs it into "
      << ".venv-tensorboard)";
  const fs::path seen = tmp.path / "seen.json";
  const std::string script = (fs::path(SSMLAB_SOURCE_DIR) / "tests/train/tb_readback.py").string();
  ASSERT_EQ(ssmlab::test::shell_status("'" + python + "' '" + script + "' '" + (out / "tb").string() + "' > '" + seen.string() + "' 2>&1"), 0)
      << ssmlab::read_file(seen);
  const json tb = json::parse(ssmlab::read_file(seen));
  RecordProperty("tensorboard_readback", tb["tensorboard"].get<std::string>());
  for (const auto& r : runs) {
    SCOPED_TRACE(r.name);
    ASSERT_TRUE(tb["runs"].contains(r.name));
    std::map<std::pair<int64_t, std::string>, std::pair<double, float>> read;
    for (const auto& [tag, points] : tb["runs"][r.name].items())
      for (const auto& p : points) {
        const std::pair<int64_t, std::string> key{p[0].get<int64_t>(), tag};
        EXPECT_FALSE(read.count(key)) << "TensorBoard sees step " << key.first << " of " << tag << " twice";
        read[key] = {p[1].get<double>(), static_cast<float>(p[2].get<double>())};
      }
    EXPECT_EQ(read, decoded[r.name]) << "TensorBoard's scalars (step, wall time, value) differ from the file's";
  }
  for (const auto& [name, v] : tb["runs"].items())
    EXPECT_TRUE(decoded.count(name)) << "unexpected TensorBoard run with scalars: " << name;
  std::vector<std::string> metric_tags;
  for (const auto& m : tb["experiment"]["metrics"]) metric_tags.push_back(m["tag"]);
  EXPECT_EQ(metric_tags, (std::vector<std::string>{"train/loss", "eval/acc", "eval/loss", "eval/acc/L16_K2"}));
  std::set<std::string> hparam_names;
  for (const auto& h : tb["experiment"]["hparams"]) hparam_names.insert(h["name"]);
  EXPECT_TRUE(hparam_names.count("model.mixer") && hparam_names.count("train.lr") && hparam_names.count("run.seed"));
  ASSERT_EQ(tb["session_groups"].size(), 2u);
  for (const auto& g : tb["session_groups"]) {
    const std::string name = g["name"];
    const auto it = std::find_if(runs.begin(), runs.end(), [&](const SweepRunTb& r) { return r.name == name; });
    ASSERT_NE(it, runs.end()) << name;
    EXPECT_EQ(g["hparams"]["model.mixer"], it->mixer);
    EXPECT_EQ(g["hparams"]["train.lr"].dump(), it->lr);
    ASSERT_EQ(g["sessions"].size(), 1u);
    EXPECT_EQ(g["sessions"][0]["status"], "STATUS_SUCCESS");
    EXPECT_EQ(g["sessions"][0]["name"], name);
    EXPECT_EQ(fs::path(g["sessions"][0]["model_uri"].get<std::string>()), fs::absolute(it->run_dir).lexically_normal());
    // Every hparam of the session as the file's SessionStartInfo holds it.
    auto events = read_events(event_files(out / "tb" / name).at(0));
    auto start = hparams_with_tag(events, "_hparams_/session_start_info").at(0);
    EXPECT_EQ(g["hparams"].size(), start.hparams.size());
    for (const auto& [k, v] : g["hparams"].items()) {
      std::ostringstream os;
      if (v.is_boolean()) os << "b:" << (v.get<bool>() ? "true" : "false");
      else if (v.is_number()) os << "n:" << v.get<double>();
      else os << "s:" << v.get<std::string>();
      EXPECT_EQ(os.str(), start.hparams[k]) << k;
    }
    // The final metrics: each metric of the experiment, as the run's last eval / train record has it.
    const json results = json::parse(ssmlab::read_file(it->run_dir / "results.json"));
    double last_train_loss = NAN;
    for (const auto& rec : metrics(it->run_dir))
      if (rec["kind"] == "train") last_train_loss = rec["train_loss"].get<double>();
    ASSERT_EQ(g["metrics"].size(), metric_tags.size());
    for (const auto& tag : metric_tags) {
      ASSERT_TRUE(g["metrics"].contains(tag)) << tag;
      const double want = tag == "train/loss" ? last_train_loss : results.at("test_" + tag.substr(5)).get<double>();
      EXPECT_EQ(static_cast<float>(g["metrics"][tag].get<double>()), static_cast<float>(want)) << tag;
    }
  }
  if (!HasFailure())
    std::cout << "[  NOTE    ] TensorBoard read-back checked: TensorBoard " << tb["tensorboard"].get<std::string>()
              << " (" << python << "), " << tb["session_groups"].size() << " sessions\n";
}

}  // namespace

}  // namespace train_test_tb_writer
