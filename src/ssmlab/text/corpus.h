// Text corpora: where documents come from, each one whole (long sequences must exist). Kinds:
//   files       a text file (one document) or a folder: every regular file below it, recursively, in sorted
//               order of the path relative to the folder (byte order), each file one document
//   brown       the Brown corpus as NLTK ships it (brown-corpus.tar.gz, or that archive unpacked): the 500
//               texts ca01..cr09, each one document, with the /tag of every word/tag token removed
//   linux_docs  Debian's linux-doc-6.1 reStructuredText sources (/usr/share/doc/linux-doc-6.1/html/_sources,
//               installed by scripts/setup.sh), read as `files`
// Files are read through zlib (data/input_file.h), so "x.gz" works as "x". Empty documents are skipped (counted).
// Malformed input (a corrupt archive, a folder without documents) is a DataError naming the file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "ssmlab/core/fields.h"

namespace ssmlab::text {

inline constexpr const char* kDefaultBrownPath = "../shared/data/brown/brown-corpus.tar.gz";
inline constexpr const char* kDefaultLinuxDocsPath = "/usr/share/doc/linux-doc-6.1/html/_sources";

struct CorpusOptions {
  std::string kind = "brown";
  std::string path;

  template <class V>
  void visit(V& v) {
    v("corpus", kind,
      "brown: the Brown corpus, tags stripped; linux_docs: Debian linux-doc-6.1's .rst sources; files: a text "
      "file or a folder of them (each file one document)",
      Check::one_of({"brown", "linux_docs", "files"}));
    v("path", path,
      "corpus file or folder; empty = the kind's default (brown: ../shared/data/brown/brown-corpus.tar.gz; "
      "linux_docs: /usr/share/doc/linux-doc-6.1/html/_sources; files: required)");
  }
};

// The path the options name (path, else the kind's default); files without a path is a ConfigError.
std::filesystem::path corpus_path(const CorpusOptions& opts);

struct Document {
  std::string name;  // path relative to the corpus root (or the archive member's name)
  std::string text;
};

// Calls `fn` for each non-empty document, in corpus order; returns how many empty ones were skipped.
int64_t for_each_document(const CorpusOptions& opts, const std::function<void(Document&&)>& fn);

// What identifies the corpus's content cheaply: SHA-256 over every source file's relative path, size and
// modification time (the files, or the archive). A changed corpus gives another fingerprint.
std::string corpus_fingerprint(const CorpusOptions& opts);

// One Brown text without its tags: each line's whitespace-separated "word/tag" tokens become "word" (cut at
// the last '/'; a token without '/' stays whole), joined by one space; one non-empty line a sentence, each
// ending with "\n"; blank lines dropped.
std::string strip_brown_tags(std::string_view tagged);

// Whether an archive member or file name is one of Brown's 500 texts: c, a genre letter a..r, two digits.
bool is_brown_text_name(std::string_view file_name);

}  // namespace ssmlab::text
