// Token files: building, reuse, and the memory-mapped reader (layout and rules: token_file.h).
#include "ssmlab/text/token_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include <nlohmann/json.hpp>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/core/json_limits.h"
#include "ssmlab/core/log.h"
#include "ssmlab/core/rng.h"
#include "ssmlab/core/sha256.h"
#include "ssmlab/data/input_file.h"

namespace ssmlab::text {
namespace fs = std::filesystem;
using nlohmann::json;

static_assert(std::endian::native == std::endian::little, "token files are little-endian; mapped as is");

namespace {

constexpr const char* kFormat = "ssmlab-token-file";
constexpr int64_t kMaxManifestBytes = int64_t{1} << 30;

// What defines a token file's content besides the corpus files themselves.
std::string identity_of(const TokenFileOptions& opts, const Tokenizer& tok) {
  json id = {{"version", kTokenFileVersion},
             {"tokenizer", tok.fingerprint()},
             {"corpus", opts.corpus.kind},
             {"path", fs::absolute(corpus_path(opts.corpus)).lexically_normal().string()},
             {"validation_fraction", opts.validation_fraction},
             {"split_seed", opts.split_seed}};
  return id.dump();
}

std::string hex16(uint64_t v) {
  static const char* digits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<size_t>(i)] = digits[v & 15];
  return s;
}

// An exclusive flock held for the object's life.
class FileLock {
 public:
  explicit FileLock(const fs::path& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(path.string(), ": cannot open the lock file (", std::strerror(errno), ")");
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd_);
      fail(path.string(), ": cannot lock (", std::strerror(err), ")");
    }
  }
  ~FileLock() { ::close(fd_); }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

template <class T>
T field(const json& j, const char* key, const fs::path& file) {
  const auto it = j.find(key);
  if (it == j.end()) fail_data(file.string(), ": lacks \"", key, "\"");
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail_data(file.string(), ": \"", key, "\" has the wrong type (", it->type_name(), ")");
  }
}

}  // namespace

std::vector<int64_t> validation_documents(int64_t n, double fraction, int64_t seed) {
  SSMLAB_CHECK(fraction >= 0.0 && fraction < 1.0, "validation fraction must be in [0, 1); got ", fraction);
  if (fraction == 0.0 || n == 0) return {};
  if (n < 2) fail_data("the corpus holds one document; a validation split needs at least two");
  const auto want = static_cast<int64_t>(std::llround(fraction * static_cast<double>(n)));
  const int64_t n_val = std::clamp<int64_t>(want, 1, n - 1);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  Rng rng(static_cast<uint64_t>(seed));
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(rng.randint(0, i + 1))]);
  std::vector<int64_t> val(perm.begin(), perm.begin() + n_val);
  std::sort(val.begin(), val.end());
  return val;
}

TokenFile::TokenFile(const fs::path& manifest) : manifest_(manifest) {
  const std::string name = manifest.string();
  std::string text;
  try {
    const auto bytes = data::read_all_bytes(manifest, kMaxManifestBytes);
    text.assign(bytes.begin(), bytes.end());
  } catch (const DataError&) {
    throw;
  } catch (const Error& e) {
    fail_data(e.what());
  }
  if (json_limits::depth(text) > json_limits::kMaxDepth)
    fail_data(name, ": nested deeper than ", json_limits::kMaxDepth, " levels; not a token file manifest");
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail_data(name, ": not valid JSON, so not a token file manifest (", e.what(), ")");
  }
  if (!j.is_object() || j.value("format", "") != kFormat)
    fail_data(name, ": not a token file manifest (expected \"format\": \"", kFormat, "\")");
  const auto version = field<int64_t>(j, "version", manifest);
  if (version != kTokenFileVersion)
    fail_data(name, ": token file version ", version, "; this ssmlab reads version ", kTokenFileVersion);
  identity_ = field<std::string>(j, "identity", manifest);
  const auto dtype = field<std::string>(j, "dtype", manifest);
  if (dtype != "uint16le" && dtype != "uint32le")
    fail_data(name, ": dtype '", dtype, "'; expected uint16le or uint32le");
  width_ = dtype == "uint16le" ? 2 : 4;
  num_tokens_ = field<int64_t>(j, "num_tokens", manifest);
  const json tok = field<json>(j, "tokenizer", manifest);
  vocab_size_ = field<int64_t>(tok, "vocab_size", manifest);
  tokenizer_fingerprint_ = field<std::string>(tok, "fingerprint", manifest);
  if (tok.contains("end_of_text") && !tok["end_of_text"].is_null())
    end_of_text_ = field<uint32_t>(tok, "end_of_text", manifest);
  if (vocab_size_ < 1 || (width_ == 2 && vocab_size_ > 65536))
    fail_data(name, ": vocabulary size ", vocab_size_, " does not fit dtype ", dtype);
  const json corpus = field<json>(j, "corpus", manifest);
  corpus_fingerprint_ = field<std::string>(corpus, "fingerprint", manifest);
  const json docs = field<json>(j, "documents", manifest);
  offsets_ = field<std::vector<int64_t>>(docs, "offsets", manifest);
  names_ = field<std::vector<std::string>>(docs, "names", manifest);
  if (offsets_.size() != names_.size() + 1 || offsets_.front() != 0 || offsets_.back() != num_tokens_)
    fail_data(name, ": document offsets do not run from 0 to num_tokens ", num_tokens_, " over ", names_.size(),
              " documents");
  for (size_t d = 0; d + 1 < offsets_.size(); ++d)
    if (offsets_[d + 1] < offsets_[d]) fail_data(name, ": document offsets decrease at document ", d);
  const json split = field<json>(j, "split", manifest);
  train_documents_ = field<int64_t>(split, "train_documents", manifest);
  if (train_documents_ < 0 || train_documents_ > num_documents())
    fail_data(name, ": train_documents ", train_documents_, " outside [0, ", num_documents(), "]");

  tokens_ = manifest.parent_path() / field<std::string>(j, "tokens_file", manifest);
  const int fd = ::open(tokens_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    fail_data(tokens_.string(), ": cannot open the token file named by ", name, " (", std::strerror(errno), ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail_data(tokens_.string(), ": not a regular file");
  }
  map_bytes_ = static_cast<int64_t>(st.st_size);
  if (map_bytes_ != num_tokens_ * width_) {
    ::close(fd);
    fail_data(tokens_.string(), ": holds ", data::with_commas(map_bytes_), " bytes; ", name, " promises ",
              data::with_commas(num_tokens_), " tokens of ", width_, " bytes");
  }
  if (map_bytes_ > 0) {
    map_ = ::mmap(nullptr, static_cast<size_t>(map_bytes_), PROT_READ, MAP_SHARED, fd, 0);
    if (map_ == MAP_FAILED) {
      map_ = nullptr;
      const int err = errno;
      ::close(fd);
      fail(tokens_.string(), ": cannot be memory-mapped (", std::strerror(err), ")");
    }
  }
  ::close(fd);
}

TokenFile::~TokenFile() {
  if (map_) ::munmap(map_, static_cast<size_t>(map_bytes_));
}

void TokenFile::read(int64_t begin, int64_t count, int64_t* out) const {
  SSMLAB_CHECK(begin >= 0 && count >= 0 && begin + count <= num_tokens_, tokens_.string(), ": tokens [", begin, ", ",
               begin + count, ") outside the file's ", num_tokens_);
  for (int64_t i = 0; i < count; ++i) {
    const uint32_t id = (*this)[begin + i];
    if (id >= vocab_size_)
      fail_data(tokens_.string(), ": token ", id, " at position ", begin + i, " is outside the vocabulary of ",
                vocab_size_);
    out[i] = id;
  }
}

std::vector<uint32_t> TokenFile::tokens(int64_t begin, int64_t count) const {
  std::vector<int64_t> wide(static_cast<size_t>(count));
  read(begin, count, wide.data());
  return {wide.begin(), wide.end()};
}

DocumentSpan TokenFile::document(int64_t d) const {
  SSMLAB_CHECK(d >= 0 && d < num_documents(), "document ", d, " outside [0, ", num_documents(), ") of ",
               manifest_.string());
  const int64_t begin = offset(d), end = offset(d + 1);
  const int64_t sep = end_of_text_ && end > begin ? 1 : 0;
  return {begin, end - begin - sep};
}

fs::path ensure_token_file(const TokenFileOptions& opts, const Tokenizer& tok, bool* built) {
  if (built) *built = false;
  const std::string identity = identity_of(opts, tok);
  const std::string stem = opts.corpus.kind + "-" + tok.kind() + "-" + hex16(fnv1a64(identity));
  const fs::path dir = opts.cache_dir;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir.string(), ": cannot create the token cache folder (", ec.message(), ")");
  const fs::path manifest = dir / (stem + ".json"), tokens = dir / (stem + ".tokens");
  FileLock lock(dir / (stem + ".lock"));
  const std::string corpus_fp = corpus_fingerprint(opts.corpus);
  if (fs::exists(manifest)) {
    try {
      TokenFile existing(manifest);
      if (existing.identity() == identity && existing.corpus_fingerprint() == corpus_fp) return manifest;
      log::info(str(manifest.string(), ": the corpus files changed since it was built; rebuilding"));
    } catch (const Error& e) {
      log::warn(str("rebuilding the token file: ", e.what()));
    }
  }

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> names;
  std::vector<std::vector<uint32_t>> ids;
  const int64_t skipped = for_each_document(opts.corpus, [&](Document&& d) {
    names.push_back(std::move(d.name));
    ids.emplace_back();
    tok.encode_append(d.text, ids.back());
    if (tok.end_of_text()) ids.back().push_back(*tok.end_of_text());
  });
  const auto n = static_cast<int64_t>(names.size());
  if (n == 0) fail_data(corpus_path(opts.corpus).string(), ": the corpus holds no non-empty document");
  const std::vector<int64_t> val = validation_documents(n, opts.validation_fraction, opts.split_seed);
  std::vector<bool> is_val(static_cast<size_t>(n), false);
  for (int64_t d : val) is_val[static_cast<size_t>(d)] = true;
  std::vector<int64_t> order;
  for (int pass = 0; pass < 2; ++pass)
    for (int64_t d = 0; d < n; ++d)
      if (is_val[static_cast<size_t>(d)] == (pass == 1)) order.push_back(d);

  const int width = tok.vocab_size() <= 65536 ? 2 : 4;
  int64_t total = 0;
  for (const auto& v : ids) total += static_cast<int64_t>(v.size());
  std::string bytes(static_cast<size_t>(total * width), '\0');
  json offsets = json::array(), doc_names = json::array(), source = json::array();
  int64_t at = 0;
  for (int64_t d : order) {
    const auto& v = ids[static_cast<size_t>(d)];
    offsets.push_back(at);
    doc_names.push_back(names[static_cast<size_t>(d)]);
    source.push_back(d);
    for (uint32_t id : v) {
      if (width == 2) {
        const auto x = static_cast<uint16_t>(id);
        std::memcpy(bytes.data() + at * 2, &x, 2);
      } else {
        std::memcpy(bytes.data() + at * 4, &id, 4);
      }
      ++at;
    }
  }
  offsets.push_back(at);
  json m = {{"format", kFormat},
            {"version", kTokenFileVersion},
            {"identity", identity},
            {"tokens_file", tokens.filename().string()},
            {"dtype", width == 2 ? "uint16le" : "uint32le"},
            {"num_tokens", total},
            {"tokens_sha256", sha256_hex(bytes)},
            {"tokenizer",
             {{"kind", tok.kind()},
              {"fingerprint", tok.fingerprint()},
              {"vocab_size", tok.vocab_size()},
              {"end_of_text", tok.end_of_text() ? json(*tok.end_of_text()) : json(nullptr)}}},
            {"corpus",
             {{"kind", opts.corpus.kind},
              {"path", fs::absolute(corpus_path(opts.corpus)).lexically_normal().string()},
              {"fingerprint", corpus_fp},
              {"empty_documents_skipped", skipped}}},
            {"split",
             {{"validation_fraction", opts.validation_fraction},
              {"seed", opts.split_seed},
              {"train_documents", n - static_cast<int64_t>(val.size())},
              {"validation_documents", static_cast<int64_t>(val.size())}}},
            {"documents", {{"names", doc_names}, {"source_index", source}, {"offsets", offsets}}}};
  write_file_atomic(tokens, bytes);
  write_file_atomic(manifest, m.dump(1) + "\n");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log::info(str("tokenised ", n, " documents of ", corpus_path(opts.corpus).string(), " (", tok.kind(), "): ",
                data::with_commas(total), " tokens in ", secs, " s -> ", tokens.string()));
  if (built) *built = true;
  return manifest;
}

}  // namespace ssmlab::text
