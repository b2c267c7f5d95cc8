// Corpora (kinds and rules: corpus.h).
#include "ssmlab/text/corpus.h"

#include <algorithm>
#include <system_error>
#include <utility>
#include <vector>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/sha256.h"
#include "ssmlab/data/input_file.h"
#include "ssmlab/text/tar_reader.h"

namespace ssmlab::text {
namespace fs = std::filesystem;
namespace {

constexpr int64_t kMaxDocumentBytes = int64_t{1} << 30;     // one document
constexpr int64_t kMaxArchiveBytes = int64_t{4} << 30;  // an inflated archive

std::string read_document(const fs::path& path) {
  std::vector<uint8_t> bytes;
  try {
    bytes = data::read_all_bytes(path, kMaxDocumentBytes);
  } catch (const DataError&) {
    throw;
  } catch (const Error& e) {
    fail_data(e.what());
  }
  return std::string(bytes.begin(), bytes.end());
}

struct Source {
  std::string name;  // relative path, generic form
  fs::path path;
};

// The files of a folder (recursively), sorted by relative path; `keep` filters by file name.
std::vector<Source> folder_files(const fs::path& root, bool (*keep)(std::string_view)) {
  std::vector<Source> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    if (keep && !keep(it->path().filename().string())) continue;
    out.push_back({it->path().lexically_relative(root).generic_string(), it->path()});
  }
  if (ec) fail_data(root.string(), ": cannot list the folder (", ec.message(), ")");
  std::sort(out.begin(), out.end(), [](const Source& a, const Source& b) { return a.name < b.name; });
  return out;
}

// The source files behind the corpus: one file (a document or an archive), or a folder's documents.
std::vector<Source> source_files(const CorpusOptions& opts) {
  const fs::path root = corpus_path(opts);
  std::error_code ec;
  const auto st = fs::status(root, ec);
  if (!fs::exists(st)) fail_data(root.string(), ": no such file or folder (the ", opts.kind, " corpus)");
  if (!fs::is_directory(st)) return {{root.filename().string(), root}};
  std::vector<Source> files = folder_files(root, opts.kind == "brown" ? &is_brown_text_name : nullptr);
  if (files.empty())
    fail_data(root.string(), opts.kind == "brown" ? ": holds none of the Brown texts ca01..cr09"
                                                  : ": holds no files; expected text documents");
  return files;
}

std::string base_name(const std::string& member) {
  const size_t slash = member.find_last_of('/');
  return slash == std::string::npos ? member : member.substr(slash + 1);
}

}  // namespace

fs::path corpus_path(const CorpusOptions& opts) {
  if (!opts.path.empty()) return opts.path;
  if (opts.kind == "brown") return kDefaultBrownPath;
  if (opts.kind == "linux_docs") return kDefaultLinuxDocsPath;
  fail_config("corpus '", opts.kind, "' needs a path (a text file or a folder of them)");
}

bool is_brown_text_name(std::string_view n) {
  return n.size() == 4 && n[0] == 'c' && n[1] >= 'a' && n[1] <= 'r' && n[2] >= '0' && n[2] <= '9' && n[3] >= '0' &&
         n[3] <= '9';
}

std::string strip_brown_tags(std::string_view tagged) {
  std::string out;
  size_t pos = 0;
  while (pos < tagged.size()) {
    size_t end = tagged.find('\n', pos);
    if (end == std::string_view::npos) end = tagged.size();
    const std::string_view line = tagged.substr(pos, end - pos);
    pos = end + 1;
    bool any = false;
    for (size_t i = 0; i < line.size();) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
      size_t j = i;
      while (j < line.size() && line[j] != ' ' && line[j] != '\t' && line[j] != '\r') ++j;
      if (j == i) break;
      std::string_view token = line.substr(i, j - i);
      const size_t slash = token.find_last_of('/');
      if (slash != std::string_view::npos) token = token.substr(0, slash);
      i = j;
      if (token.empty()) continue;
      if (any) out += ' ';
      out += token;
      any = true;
    }
    if (any) out += '\n';
  }
  return out;
}

int64_t for_each_document(const CorpusOptions& opts, const std::function<void(Document&&)>& fn) {
  int64_t empty = 0;
  const auto emit = [&](std::string name, std::string text) {
    if (text.empty()) {
      ++empty;
      return;
    }
    fn(Document{std::move(name), std::move(text)});
  };
  const std::vector<Source> sources = source_files(opts);
  const bool archive = opts.kind == "brown" && sources.size() == 1 && !fs::is_directory(corpus_path(opts));
  if (archive) {  // brown-corpus.tar.gz: its c?NN members, sorted by name
    std::vector<Document> docs;
    for_each_tar_member(sources[0].path, kMaxArchiveBytes, [&](const std::string& member, std::string&& body) {
      if (is_brown_text_name(base_name(member))) docs.push_back({member, std::move(body)});
    });
    if (docs.empty()) fail_data(sources[0].path.string(), ": the archive holds none of the Brown texts ca01..cr09");
    std::sort(docs.begin(), docs.end(), [](const Document& a, const Document& b) { return a.name < b.name; });
    for (Document& d : docs) emit(std::move(d.name), strip_brown_tags(d.text));
    return empty;
  }
  for (const Source& s : sources) {
    std::string text = read_document(s.path);
    emit(s.name, opts.kind == "brown" ? strip_brown_tags(text) : std::move(text));
  }
  return empty;
}

std::string corpus_fingerprint(const CorpusOptions& opts) {
  std::string listing = opts.kind + "\n";
  for (const Source& s : source_files(opts)) {
    std::error_code ec;
    const auto size = fs::file_size(s.path, ec);
    if (ec) fail_data(s.path.string(), ": cannot read its size (", ec.message(), ")");
    const auto mtime = fs::last_write_time(s.path, ec);
    if (ec) fail_data(s.path.string(), ": cannot read its modification time (", ec.message(), ")");
    listing += str(s.name, '\t', size, '\t', mtime.time_since_epoch().count(), '\n');
  }
  return sha256_hex(listing);
}

}  // namespace ssmlab::text
