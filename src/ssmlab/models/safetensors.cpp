#include "ssmlab/models/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/core/json_limits.h"

namespace ssmlab::models {
namespace {

// The format stores little-endian data and so do we, byte for byte.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

using json = nlohmann::json;

// Every problem of a safetensors file is in the data (exit code of core/exit_codes.h); this shadows
// ssmlab::fail for the calls below.
template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw DataError(str(args...));
}

constexpr const char* kMetadataKey = "__metadata__";
// The reference implementation refuses headers above 100 MB; so do we (a corrupt length is more likely).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeName {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

const char* dtype_name(at::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  return nullptr;
}

std::string known_dtypes() {
  std::string s;
  for (const auto& d : kDtypes) s += std::string(s.empty() ? "" : " ") + d.name;
  return s;
}

struct Entry {
  std::string name;
  at::ScalarType type;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

// A JSON value for a message: at most 80 characters, invalid UTF-8 replaced (a corrupt header may hold either).
std::string brief(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

// Tensors of ours have at most 5 dimensions; more is a corrupt header (and at::empty would accept thousands).
constexpr size_t kMaxRank = 64;

std::string where(const std::string& name) { return str("safetensors file '", name, "': "); }

// Reads one tensor entry of the header, checking types and that the byte count matches the shape.
Entry parse_entry(const std::string& file, const std::string& key, const json& v) {
  auto bad = [&](const auto&... what) { fail(where(file), "tensor '", key, "': ", what...); };
  if (!v.is_object()) bad("header entry is not a JSON object: ", brief(v));
  for (const auto& [k, _] : v.items())
    if (k != "dtype" && k != "shape" && k != "data_offsets") bad("unexpected key '", k, "' in header entry");
  Entry e;
  e.name = key;
  if (!v.contains("dtype") || !v["dtype"].is_string()) bad("missing or non-string \"dtype\"");
  const std::string dt = v["dtype"].get<std::string>();
  const DtypeName* found = nullptr;
  for (const auto& d : kDtypes)
    if (dt == d.name) found = &d;
  if (!found) bad("unknown dtype \"", dt, "\" (known: ", known_dtypes(), ")");
  e.type = found->type;

  if (!v.contains("shape") || !v["shape"].is_array()) bad("missing or non-array \"shape\"");
  if (v["shape"].size() > kMaxRank) bad("shape has ", v["shape"].size(), " dimensions, above the limit of ", kMaxRank);
  unsigned __int128 numel = 1;
  for (const auto& d : v["shape"]) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      bad("shape must hold non-negative integers, found ", brief(v["shape"]));
    e.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
    numel *= d.get<uint64_t>();
    if (numel > std::numeric_limits<uint64_t>::max()) bad("shape ", brief(v["shape"]), " is too large");
  }

  const json* off = v.contains("data_offsets") ? &v["data_offsets"] : nullptr;
  if (!off || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    bad("\"data_offsets\" must be two non-negative integers [begin, end], found ", off ? brief(*off) : "nothing");
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  if (e.end < e.begin) bad("data_offsets ", brief(*off), " end before begin");
  const unsigned __int128 want = numel * at::elementSize(e.type);
  if (want != e.end - e.begin)
    bad("shape/offset size mismatch: ", dt, " shape ", shape_str(e.shape), " needs ", uint64_t(want),
        " bytes but data_offsets ", brief(*off), " span ", e.end - e.begin);
  return e;
}

}  // namespace

std::string serialize_safetensors(const std::map<std::string, at::Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata, const std::string& name) {
  // Validate and convert everything first, so that nothing is written for a bad input.
  std::vector<std::pair<std::string, at::Tensor>> cpu;
  cpu.reserve(tensors.size());
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [key, t] : tensors) {  // std::map: name order
    if (key == kMetadataKey) fail(where(name), "a tensor may not be named \"", kMetadataKey, "\"");
    if (!t.defined()) fail(where(name), "tensor '", key, "' is undefined");
    if (t.layout() != at::kStrided) fail(where(name), "tensor '", key, "' is not a dense (strided) tensor");
    const char* dt = dtype_name(t.scalar_type());
    if (!dt)
      fail(where(name), "tensor '", key, "' has unsupported dtype ", c10::toString(t.scalar_type()), " (supported: ", known_dtypes(),
           ")");
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t n = c.nbytes();
    header[key] = {{"dtype", dt}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
    cpu.emplace_back(key, std::move(c));
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;

  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    fail(where(name), "cannot encode the header (names and metadata must be valid UTF-8): ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned

  std::string out;
  out.reserve(8 + text.size() + offset);
  const uint64_t n = text.size();
  out.append(reinterpret_cast<const char*>(&n), 8);
  out += text;
  for (const auto& [key, c] : cpu)
    if (c.nbytes() > 0) out.append(static_cast<const char*>(c.const_data_ptr()), c.nbytes());
  return out;
}

TensorFile parse_safetensors(std::string_view bytes, const std::string& name) {
  if (bytes.size() < 8)
    fail(where(name), "file too short (", bytes.size(), " bytes; it must start with an 8-byte header length)");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  if (n > bytes.size() - 8)
    fail(where(name), "header length ", n, " goes beyond the end of the file (", bytes.size(), " bytes)");
  if (n > kMaxHeaderBytes) fail(where(name), "header length ", n, " is above the limit of ", kMaxHeaderBytes);
  // Our headers nest 3 levels; a deep one would make the printing of entries in messages recurse.
  if (json_limits::depth(bytes.substr(8, n)) > json_limits::kMaxDepth)
    fail(where(name), "JSON header nested deeper than the limit of ", json_limits::kMaxDepth, " levels");

  json header;
  try {
    const std::string_view text = bytes.substr(8, n);
    header = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(where(name), "bad JSON header: ", e.what());
  }
  if (!header.is_object()) fail(where(name), "bad JSON header: expected an object, found ", header.type_name());

  TensorFile out;
  std::vector<Entry> entries;
  for (const auto& [key, v] : header.items()) {
    if (key == kMetadataKey) {
      if (!v.is_object()) fail(where(name), "\"", kMetadataKey, "\" must be an object of strings");
      for (const auto& [mk, mv] : v.items()) {
        if (!mv.is_string())
          fail(where(name), "metadata value of '", mk, "' must be a string, found ", brief(mv));
        out.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(name, key, v));
  }

  // The data must be covered exactly: sorted by offset, each tensor starts where the last ended.
  const uint64_t data_size = bytes.size() - 8 - n;
  std::vector<const Entry*> order;
  for (const auto& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : order) {
    if (e->end > data_size)
      fail(where(name), "tensor '", e->name, "': data_offsets [", e->begin, ", ", e->end,
           "] out of range (the data section has ", data_size, " bytes)");
    if (e->begin < pos)
      fail(where(name), "tensor '", e->name, "': data_offsets [", e->begin, ", ", e->end, "] overlap tensor '",
           prev->name, "' [", prev->begin, ", ", prev->end, "]");
    if (e->begin > pos)
      fail(where(name), "tensor '", e->name, "': data_offsets [", e->begin, ", ", e->end, "] leave a gap of ",
           e->begin - pos, " bytes after offset ", pos);
    pos = e->end;
    prev = e;
  }
  if (pos != data_size)
    fail(where(name), data_size - pos, " trailing bytes after the last tensor (data section has ", data_size,
         " bytes, tensors cover ", pos, ")");

  const char* data = bytes.data() + 8 + n;
  for (const auto& e : entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.type));
    if (e.end > e.begin) std::memcpy(t.mutable_data_ptr(), data + e.begin, e.end - e.begin);
    if (e.type == at::kBool) {
      for (uint64_t i = e.begin; i < e.end; ++i)
        if (static_cast<uint8_t>(data[i]) > 1)
          fail(where(name), "tensor '", e.name, "': BOOL byte ", i - e.begin, " is ",
               int(static_cast<uint8_t>(data[i])), " (must be 0 or 1)");
    }
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

void save_safetensors(const std::filesystem::path& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, serialize_safetensors(tensors, metadata, path.string()));
}

namespace {

// A read-only private mapping of a whole file, unmapped when it goes out of scope.
class MappedSafetensors {
 public:
  explicit MappedSafetensors(const std::filesystem::path& path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) fail(where(path.string()), "cannot open: ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      fail(where(path.string()), "not a regular file");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (p == MAP_FAILED) {
        ::close(fd_);
        fail(where(path.string()), "cannot map: ", std::strerror(errno));
      }
      data_ = static_cast<const char*>(p);
    }
  }
  ~MappedSafetensors() {
    if (data_) ::munmap(const_cast<char*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }
  MappedSafetensors(const MappedSafetensors&) = delete;
  MappedSafetensors& operator=(const MappedSafetensors&) = delete;
  std::string_view bytes() const { return data_ ? std::string_view(data_, size_) : std::string_view(); }

 private:
  int fd_ = -1;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace

TensorFile load_safetensors(const std::filesystem::path& path) {
  // Mapped, not read: a large checkpoint costs its tensors' memory once, not twice.
  const MappedSafetensors file(path);
  return parse_safetensors(file.bytes(), path.string());
}

TensorFile load_safetensors_index(const std::filesystem::path& index_json) {
  const std::string name = index_json.string();
  const std::string text = read_file(index_json);
  if (json_limits::depth(text) > json_limits::kMaxDepth)
    fail(name, ": nested deeper than ", json_limits::kMaxDepth, " levels; expected a safetensors index");
  json index;
  try {
    index = json::parse(text);
  } catch (const json::exception& e) {
    fail(name, ": not valid JSON (", e.what(), ")");
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail(name, ": expected {\"weight_map\": {\"tensor\": \"shard file\", ...}} (a safetensors index)");
  std::map<std::string, std::vector<std::string>> by_shard;  // shard file -> its tensors per the index
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string()) fail(name, ": weight_map entry '", tensor, "' is not a file name: ", brief(file));
    const std::string f = file.get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f.find('\\') != std::string::npos || f == "." || f == "..")
      fail(name, ": weight_map entry '", tensor, "' names '", f, "'; shards must be plain file names beside the index");
    by_shard[f].push_back(tensor);
  }
  if (by_shard.empty()) fail(name, ": weight_map is empty");
  TensorFile out;
  for (const auto& [f, listed] : by_shard) {
    const auto shard_path = index_json.parent_path() / f;
    if (!std::filesystem::is_regular_file(shard_path)) fail(name, ": shard '", f, "' is missing (", shard_path.string(), ")");
    TensorFile shard = load_safetensors(shard_path);
    for (const auto& t : listed)
      if (!shard.tensors.count(t)) fail(name, ": tensor '", t, "' is listed in shard '", f, "', which lacks it");
    for (auto& [t, v] : shard.tensors) {
      const auto it = index["weight_map"].find(t);
      if (it == index["weight_map"].end() || it->get<std::string>() != f)
        fail(shard_path.string(), ": tensor '", t, "' is not listed for this shard in ", name);
      out.tensors.emplace(t, std::move(v));
    }
    for (auto& [k, v] : shard.metadata) out.metadata.emplace(k, v);
  }
  return out;
}

}  // namespace ssmlab::models
