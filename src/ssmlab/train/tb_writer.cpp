#include "ssmlab/train/tb_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include <array>
#include <chrono>
#include <cmath>
#include <cstring>

#include "ssmlab/core/error.h"
#include "ssmlab/core/io.h"
#include "ssmlab/runfolder/layout.h"

namespace ssmlab::train {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kPrefix = runfolder::kEventsPrefix;

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
  std::string e;
  put_varint(e, 1 << 3 | 1);
  put_fixed<double>(e, wall_time);
  put_varint(e, 2 << 3 | 0);  // step: int64 (varint; two's complement for negatives)
  put_varint(e, static_cast<uint64_t>(step));
  put_bytes_field(e, 5, summary);  // summary
  return e;
}

std::vector<std::pair<std::string, float>> record_scalars(const nlohmann::json& record) {
  std::vector<std::pair<std::string, float>> out;
  if (!record.is_object()) return out;
  for (const auto& [key, value] : record.items()) {
    if (key == "step" || key == "epoch" || !value.is_number()) continue;
    const double v = value.get<double>();
    if (std::isfinite(v)) out.emplace_back(key, static_cast<float>(v));
  }
  return out;
}

TbWriter::TbWriter(const fs::path& dir, const std::vector<nlohmann::json>& replay) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().filename().string().starts_with(kPrefix)) fs::remove(e.path(), ec);
  path_ = dir / (std::string(kPrefix) + std::to_string(static_cast<int64_t>(now_seconds())) + "." + host_name());
  const double t = now_seconds();
  std::string bytes = tfrecord(file_version_event(t));
  for (const auto& r : replay) {
    const auto scalars = record_scalars(r);
    if (!scalars.empty()) bytes += tfrecord(scalars_event(t, r.value("step", int64_t{0}), scalars));
  }
  write_file_atomic(path_, bytes);
}

void TbWriter::write(const nlohmann::json& record) {
  const auto scalars = record_scalars(record);
  if (scalars.empty()) return;
  // One write call per event (append_line's guarantee), so a kill leaves at most a torn last record, which
  // TensorBoard's reader stops at.
  const std::string rec = tfrecord(scalars_event(now_seconds(), record.value("step", int64_t{0}), scalars));
  append_bytes(path_, rec);
}

}  // namespace ssmlab::train
