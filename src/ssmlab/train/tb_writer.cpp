#include "ssmlab/train/tb_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "ssmlab/core/error.h"
#include "ssmlab/core/io.h"
#include "ssmlab/runfolder/layout.h"

namespace ssmlab::train {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kTbEventsPrefix = runfolder::kEventsPrefix;

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected Castagnoli polynomial
    t[i] = c;
  }
  return t;
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

template <class T>
void put_fixed(std::string& out, T v) {  // little endian (x86, ARM): protobuf fixed64/fixed32 and TFRecord
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

void put_bytes_field(std::string& out, int field, std::string_view bytes) {
  put_varint(out, static_cast<uint64_t>(field) << 3 | 2);  // wire type 2: length-delimited
  put_varint(out, bytes.size());
  out.append(bytes);
}

void put_key(std::string& out, int field, int wire) { put_varint(out, static_cast<uint64_t>(field) << 3 | wire); }

void put_double_field(std::string& out, int field, double v) {
  put_key(out, field, 1);  // wire type 1: fixed64
  put_fixed<double>(out, v);
}

void put_varint_field(std::string& out, int field, uint64_t v) {
  put_key(out, field, 0);
  put_varint(out, v);
}

std::string event_header(double wall_time, int64_t step) {
  std::string e;
  put_double_field(e, 1, wall_time);  // Event.wall_time
  if (step != 0) put_varint_field(e, 2, static_cast<uint64_t>(step));  // Event.step (int64; proto3 omits 0)
  return e;
}

// google.protobuf.Value: number_value = 2 (double), string_value = 3, bool_value = 4.
std::string value_message(const HParamValue& v) {
  std::string out;
  if (const auto* b = std::get_if<bool>(&v)) put_varint_field(out, 4, *b ? 1 : 0);
  else if (const auto* d = std::get_if<double>(&v)) put_double_field(out, 2, *d);
  else put_bytes_field(out, 3, std::get<std::string>(v));
  return out;
}

// A protobuf reader for what read_event_file needs; throws std::runtime_error on malformed input.
class WireReader {
 public:
  explicit WireReader(std::string_view b) : b_(b) {}
  bool done() const { return pos_ >= b_.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= b_.size()) throw std::runtime_error("truncated varint");
      const auto byte = static_cast<uint8_t>(b_[pos_++]);
      v |= uint64_t{byte & 0x7Fu} << shift;
      if (!(byte & 0x80)) return v;
    }
    throw std::runtime_error("varint too long");
  }
  std::string_view take(uint64_t n) {
    if (n > b_.size() - pos_) throw std::runtime_error("truncated field");
    const auto s = b_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  // Skips a field's payload of wire type `wire`.
  void skip(int wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1: take(8); break;
      case 2: take(varint()); break;
      case 5: take(4); break;
      default: throw std::runtime_error("unsupported wire type " + std::to_string(wire));
    }
  }

 private:
  std::string_view b_;
  size_t pos_ = 0;
};

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  std::string h = buf;
  for (char& c : h)
    if (c == '/') c = '_';
  return h;
}

// Appends `bytes` with one write call (retrying only short writes), creating nothing: the file exists.
void append_bytes(const fs::path& path, std::string_view bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) fail("cannot append to the TensorBoard event file '", path.string(), "': ", std::generic_category().message(errno));
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      fail("cannot append to the TensorBoard event file '", path.string(), "': ", std::generic_category().message(err));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  ::close(fd);
}

}  // namespace

uint32_t crc32c(std::string_view bytes) {
  static const auto table = make_crc_table();
  uint32_t c = 0xFFFFFFFFu;
  for (char ch : bytes) c = table[(c ^ static_cast<uint8_t>(ch)) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(std::string_view bytes) {
  const uint32_t c = crc32c(bytes);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tfrecord(std::string_view data) {
  std::string len;
  put_fixed<uint64_t>(len, data.size());
  std::string out = len;
  put_fixed<uint32_t>(out, masked_crc32c(len));
  out.append(data);
  put_fixed<uint32_t>(out, masked_crc32c(data));
  return out;
}

std::string file_version_event(double wall_time) {
  std::string e;
  put_varint(e, 1 << 3 | 1);  // wall_time: double (fixed64)
  put_fixed<double>(e, wall_time);
  put_bytes_field(e, 3, "brain.Event:2");  // file_version
  return e;
}

std::string scalars_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, float>>& values) {
  std::string summary;
  for (const auto& [tag, value] : values) {
    std::string v;
    put_bytes_field(v, 1, tag);  // Summary.Value.tag
    put_varint(v, 2 << 3 | 5);   // Summary.Value.simple_value: float (fixed32)
    put_fixed<float>(v, value);
    put_bytes_field(summary, 1, v);  // Summary.value (repeated)
  }
  std::string e = event_header(wall_time, step);
  put_bytes_field(e, 5, summary);  // Event.summary
  return e;
}


std::string hparams_event(double wall_time, int64_t step, std::string_view tag, std::string_view plugin_data) {
  std::string plugin;  // SummaryMetadata.PluginData
  put_bytes_field(plugin, 1, "hparams");   // plugin_name
  put_bytes_field(plugin, 2, plugin_data);  // content
  std::string meta;  // SummaryMetadata
  put_bytes_field(meta, 1, plugin);
  put_varint_field(meta, 4, 2);  // data_class: DATA_CLASS_TENSOR
  std::string shape;             // TensorShapeProto {dim {size: 0}} (size 0 is proto3's default: an empty Dim)
  put_bytes_field(shape, 2, "");
  std::string tensor;  // TensorProto: an empty float tensor, hparams' NULL_TENSOR
  put_varint_field(tensor, 1, 1);  // dtype: DT_FLOAT
  put_bytes_field(tensor, 2, shape);
  std::string value;  // Summary.Value
  put_bytes_field(value, 1, tag);
  put_bytes_field(value, 8, tensor);  // tensor
  put_bytes_field(value, 9, meta);    // metadata
  std::string summary;
  put_bytes_field(summary, 1, value);
  std::string e = event_header(wall_time, step);
  put_bytes_field(e, 5, summary);
  return e;
}

std::string tb_tag(std::string_view kind, std::string_view key) {
  const bool train_key = key.starts_with("train_"), test_key = key.starts_with("test_");
  if (kind == "train" || (kind != "eval" && train_key))
    return "train/" + std::string(train_key ? key.substr(6) : key);
  if (kind == "eval" || test_key) return "eval/" + std::string(test_key ? key.substr(5) : key);
  return std::string(key);
}

std::vector<std::pair<std::string, float>> record_scalars(const nlohmann::json& record) {
  std::vector<std::pair<std::string, float>> out;
  if (!record.is_object()) return out;
  const auto kind_it = record.find("kind");
  const std::string kind = kind_it != record.end() && kind_it->is_string() ? kind_it->get<std::string>() : "";
  for (const auto& [key, value] : record.items()) {
    if (key == "step" || key == "epoch" || !value.is_number()) continue;
    const double v = value.get<double>();
    if (std::isfinite(v)) out.emplace_back(tb_tag(kind, key), static_cast<float>(v));
  }
  return out;
}

// HParamsPluginData: version = 1 (0, proto3's default, so not written, as TensorBoard's own writer does),
// experiment = 2, session_start_info = 3, session_end_info = 4.
std::string session_start_plugin_data(const HParams& hparams, double start_time_secs, std::string_view model_uri,
                                      std::string_view group_name) {
  std::string info;  // SessionStartInfo
  for (const auto& [name, value] : hparams) {
    std::string entry;  // map<string, Value> entry: key = 1, value = 2
    put_bytes_field(entry, 1, name);
    put_bytes_field(entry, 2, value_message(value));
    put_bytes_field(info, 1, entry);  // hparams
  }
  if (!model_uri.empty()) put_bytes_field(info, 2, model_uri);
  if (!group_name.empty()) put_bytes_field(info, 4, group_name);
  put_double_field(info, 5, start_time_secs);
  std::string data;
  put_bytes_field(data, 3, info);
  return data;
}

std::string session_end_plugin_data(SessionStatus status, double end_time_secs) {
  std::string info;  // SessionEndInfo: status = 1, end_time_secs = 2
  put_varint_field(info, 1, static_cast<uint64_t>(status));
  put_double_field(info, 2, end_time_secs);
  std::string data;
  put_bytes_field(data, 4, info);
  return data;
}

std::string experiment_plugin_data(const Experiment& e) {
  std::string x;  // Experiment: description = 1, time_created_secs = 3, hparam_infos = 4, metric_infos = 5, name = 6
  if (!e.description.empty()) put_bytes_field(x, 1, e.description);
  if (e.time_created_secs != 0) put_double_field(x, 3, e.time_created_secs);
  for (const auto& h : e.hparams) {
    // HParamInfo: name = 1, type = 4 (DataType: STRING 1, BOOL 2, FLOAT64 3), domain_discrete = 5 (ListValue:
    // values = 1), differs = 7. Mixed value types are text, as TensorBoard reads them.
    int type = 0;
    for (const auto& v : h.domain) {
      const int t = std::holds_alternative<bool>(v) ? 2 : std::holds_alternative<double>(v) ? 3 : 1;
      type = type == 0 || type == t ? t : 1;
    }
    std::string list;
    for (const auto& v : h.domain) {
      HParamValue shown = v;
      if (type == 1 && !std::holds_alternative<std::string>(v))
        shown = std::holds_alternative<bool>(v) ? std::string(std::get<bool>(v) ? "true" : "false")
                                                : str(std::get<double>(v));
      put_bytes_field(list, 1, value_message(shown));
    }
    std::string info;
    put_bytes_field(info, 1, h.name);
    if (type != 0) put_varint_field(info, 4, static_cast<uint64_t>(type));
    if (!h.domain.empty()) put_bytes_field(info, 5, list);
    if (h.differs) put_varint_field(info, 7, 1);
    put_bytes_field(x, 4, info);
  }
  for (const auto& m : e.metrics) {
    std::string name;  // MetricName: group = 1, tag = 2
    if (!m.group.empty()) put_bytes_field(name, 1, m.group);
    put_bytes_field(name, 2, m.tag);
    std::string info;  // MetricInfo: name = 1, dataset_type = 5
    put_bytes_field(info, 1, name);
    if (m.dataset != DatasetType::unknown) put_varint_field(info, 5, static_cast<uint64_t>(m.dataset));
    put_bytes_field(x, 5, info);
  }
  if (!e.name.empty()) put_bytes_field(x, 6, e.name);
  std::string data;
  put_bytes_field(data, 2, x);
  return data;
}

std::vector<StoredEvent> read_event_file(const fs::path& file) {
  std::vector<StoredEvent> out;
  const std::string bytes = read_file(file);
  std::string_view rest = bytes;
  while (rest.size() >= 12) {
    const std::string_view len_bytes = rest.substr(0, 8);
    uint64_t len = 0;
    uint32_t len_crc = 0, data_crc = 0;
    std::memcpy(&len, len_bytes.data(), 8);
    std::memcpy(&len_crc, rest.data() + 8, 4);
    if (len_crc != masked_crc32c(len_bytes) || len > rest.size() - 12 || rest.size() - 12 - len < 4) break;
    const std::string_view data = rest.substr(12, len);
    std::memcpy(&data_crc, rest.data() + 12 + len, 4);
    if (data_crc != masked_crc32c(data)) break;
    rest.remove_prefix(12 + len + 4);
    StoredEvent ev;
    ev.bytes = std::string(data);
    try {
      WireReader r(data);
      while (!r.done()) {
        const uint64_t key = r.varint();
        const int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
        if (field == 1 && wire == 1) std::memcpy(&ev.wall_time, r.take(8).data(), 8);
        else if (field == 2 && wire == 0) ev.step = static_cast<int64_t>(r.varint());
        else if (field == 3 && wire == 2) ev.file_version = std::string(r.take(r.varint()));
        else if (field == 5 && wire == 2) {
          WireReader summary(r.take(r.varint()));
          while (!summary.done()) {
            const uint64_t k = summary.varint();
            if (k != (1 << 3 | 2)) {
              summary.skip(static_cast<int>(k & 7));
              continue;
            }
            WireReader value(summary.take(summary.varint()));
            while (!value.done()) {
              const uint64_t vk = value.varint();
              if (vk == (1 << 3 | 2)) ev.tags.emplace_back(value.take(value.varint()));
              else value.skip(static_cast<int>(vk & 7));
            }
          }
        } else r.skip(wire);
      }
    } catch (const std::runtime_error&) {
      break;  // a record with a valid CRC that does not parse: not ours; stop as at a torn record
    }
    out.push_back(std::move(ev));
  }
  return out;
}

namespace {

bool is_event_file(const fs::path& p) { return p.filename().string().starts_with(kTbEventsPrefix); }

// The event files of `dir`, in name order (their names start with the creation time).
std::vector<fs::path> event_files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file(ec) && is_event_file(e.path())) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

bool has_tag(const StoredEvent& e, std::string_view tag) {
  return std::find(e.tags.begin(), e.tags.end(), tag) != e.tags.end();
}

}  // namespace

TbWriter::TbWriter(const TbSession& session, int64_t resume_step, const std::vector<nlohmann::json>& replay) {
  fs::create_directories(session.dir);
  std::vector<fs::path> old_files = event_files_in(session.dir);
  for (const auto& d : session.old_dirs)
    if (fs::exists(d) && !fs::equivalent(d, session.dir))
      for (auto& f : event_files_in(d)) old_files.push_back(std::move(f));

  const double t = now_seconds();
  std::string bytes;
  bool version = false, carried_any = false;
  for (const auto& f : old_files) {
    const auto events = read_event_file(f);
    // A file written before tags were grouped (train_loss rather than train/loss) is not carried over: its points
    // come again from metrics.jsonl.
    const bool flat = std::any_of(events.begin(), events.end(), [](const StoredEvent& e) {
      return std::any_of(e.tags.begin(), e.tags.end(), [](const std::string& tag) {
        return tag.find('/') == std::string::npos;
      });
    });
    if (flat) continue;
    carried_any = true;
    for (const auto& e : events) {
      if (e.step > resume_step || has_tag(e, kSessionEndTag)) continue;  // redone after the resume / ended again
      if (!e.file_version.empty()) {
        if (version) continue;  // one version event, the first file's
      } else if (!version) {
        bytes += tfrecord(file_version_event(e.wall_time));
      }
      version = true;
      if (has_tag(e, kSessionStartTag)) has_session_ = true;
      bytes += tfrecord(e.bytes);
    }
  }
  if (!version) bytes += tfrecord(file_version_event(t));
  if (!session.hparams.empty() && !has_session_) {
    // After the version event, so that TensorBoard finds the session before any scalar.
    bytes += tfrecord(hparams_event(t, 0, kSessionStartTag, session_start_plugin_data(session.hparams, t, session.model_uri)));
    has_session_ = true;
  }
  if (!carried_any)
    for (const auto& r : replay) {
      const auto scalars = record_scalars(r);
      if (!scalars.empty()) bytes += tfrecord(scalars_event(t, r.value("step", int64_t{0}), scalars));
    }
  path_ = session.dir / (std::string(kTbEventsPrefix) + std::to_string(static_cast<int64_t>(t)) + "." + host_name());
  write_file_atomic(path_, bytes);
  std::error_code ec;
  for (const auto& f : old_files)
    if (f != path_) fs::remove(f, ec);
}

TbWriter::TbWriter(const fs::path& dir, const std::vector<nlohmann::json>& replay)
    : TbWriter(TbSession{dir, {}, {}, {}}, 0, replay) {}

void TbWriter::write(const nlohmann::json& record) {
  const auto scalars = record_scalars(record);
  if (scalars.empty()) return;
  // One write call per event (append_line's guarantee), so a kill leaves at most a torn last record, which
  // TensorBoard's reader (and read_event_file) stops at.
  const std::string rec = tfrecord(scalars_event(now_seconds(), record.value("step", int64_t{0}), scalars));
  append_bytes(path_, rec);
}

void TbWriter::end_session(SessionStatus status, int64_t step) {
  if (!has_session_) return;
  const double t = now_seconds();
  append_bytes(path_, tfrecord(hparams_event(t, step, kSessionEndTag, session_end_plugin_data(status, t))));
}

}  // namespace ssmlab::train
