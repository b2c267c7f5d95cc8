// Corpora: folder order and documents, gzip, Brown's tag stripping and archive reading, and their errors.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "data/data_test_files.h"
#include "ssmlab/text/corpus.h"
#include "ssmlab/text/tar_reader.h"
#include "test_util.h"
#include "text/text_test_util.h"

namespace text_test_corpus {

namespace {

namespace fs = std::filesystem;
using ssmlab::text::CorpusOptions;
using ssmlab::text::Document;

std::vector<Document> read_all(const CorpusOptions& o, int64_t* skipped = nullptr) {
  std::vector<Document> docs;
  const int64_t s = ssmlab::text::for_each_document(o, [&](Document&& d) { docs.push_back(std::move(d)); });
  if (skipped) *skipped = s;
  return docs;
}

TEST(TextCorpus, FolderIsEveryFileRecursivelyInSortedOrder) {
  ssmlab::test::TempDir dir;
  ssmlab::test::write_text(dir.path / "b.txt", "second");
  ssmlab::test::write_text(dir.path / "a" / "z.txt", "first");
  ssmlab::test::write_text(dir.path / "c" / "d" / "e.rst", "third\n");
  ssmlab::test::write_text(dir.path / "empty.txt", "");
  ssmlab::test::write_gzip(dir.path / "f.txt.gz", {'g', 'z', 'i', 'p'});
  CorpusOptions o{"files", dir.path.string()};
  int64_t skipped = -1;
  const auto docs = read_all(o, &skipped);
  ASSERT_EQ(docs.size(), 4u);
  EXPECT_EQ(docs[0].name, "a/z.txt");
  EXPECT_EQ(docs[0].text, "first");
  EXPECT_EQ(docs[1].name, "b.txt");
  EXPECT_EQ(docs[2].name, "c/d/e.rst");
  EXPECT_EQ(docs[2].text, "third\n");
  EXPECT_EQ(docs[3].text, "gzip") << "a .gz file is read inflated";
  EXPECT_EQ(skipped, 1);
  // One file is one document.
  o.path = (dir.path / "b.txt").string();
  const auto one = read_all(o);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].text, "second");
  // The fingerprint follows the files.
  o.path = dir.path.string();
  const std::string fp = ssmlab::text::corpus_fingerprint(o);
  EXPECT_EQ(ssmlab::text::corpus_fingerprint(o), fp);
  ssmlab::test::write_text(dir.path / "b.txt", "second, longer");
  EXPECT_NE(ssmlab::text::corpus_fingerprint(o), fp);
}

TEST(TextCorpus, MissingOrEmptyFolderIsADataError) {
  ssmlab::test::TempDir dir;
  const fs::path none = dir.path / "none";
  ssmlab::test::expect_data_error([&] { read_all({"files", none.string()}); }, {none.string(), "no such file"});
  ssmlab::test::expect_data_error([&] { read_all({"files", dir.path.string()}); }, {dir.path.string(), "no files"});
  ssmlab::test::expect_data_error([&] { read_all({"brown", dir.path.string()}); }, {dir.path.string(), "Brown"});
  ssmlab::test::expect_error([&] { ssmlab::text::corpus_path({"files", ""}); }, {"needs a path"});
}

TEST(TextCorpus, BrownTagsAreStripped) {
  const std::string tagged =
      "\n\n\tThe/at Fulton/np-tl jury/nn said/vbd ``/`` 1/2/cd ''/'' ./.\n\n\n\tIt's/pps+bez over/rp ./.\n";
  EXPECT_EQ(ssmlab::text::strip_brown_tags(tagged), "The Fulton jury said `` 1/2 '' .\nIt's over .\n");
  EXPECT_TRUE(ssmlab::text::is_brown_text_name("ca01"));
  EXPECT_TRUE(ssmlab::text::is_brown_text_name("cr09"));
  EXPECT_FALSE(ssmlab::text::is_brown_text_name("cs01"));
  EXPECT_FALSE(ssmlab::text::is_brown_text_name("cats.txt"));
  EXPECT_FALSE(ssmlab::text::is_brown_text_name("README"));
}

TEST(TextCorpus, BrownFromASmallArchiveOrItsFolder) {
  ssmlab::test::TempDir dir;
  const std::vector<std::pair<std::string, std::string>> files = {
      {"brown/README", "not a text"},
      {"brown/cb02", "\tSecond/od text/nn ./.\n"},
      {"brown/ca01", "\tFirst/od text/nn ./.\n"},
      {"brown/cats.txt", "ca01 news\n"}};
  const std::string tar = ssmlab::test::tar_archive(files);
  ssmlab::test::write_gzip(dir.path / "b.tar.gz", ssmlab::test::Bytes(tar.begin(), tar.end()));
  auto docs = read_all({"brown", (dir.path / "b.tar.gz").string()});
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].name, "brown/ca01");
  EXPECT_EQ(docs[0].text, "First text .\n");
  EXPECT_EQ(docs[1].text, "Second text .\n");
  for (const auto& [name, body] : files) ssmlab::test::write_text(dir.path / "unpacked" / name, body);
  docs = read_all({"brown", (dir.path / "unpacked").string()});
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].name, "brown/ca01");
  EXPECT_EQ(docs[1].text, "Second text .\n");
}

TEST(TextCorpus, CorruptArchivesAreDataErrorsNamingTheFile) {
  ssmlab::test::TempDir dir;
  const std::string tar = ssmlab::test::tar_archive({{"ca01", std::string(700, 'x')}});
  const fs::path p = dir.path / "a.tar";
  const auto members = [&] {
    int n = 0;
    ssmlab::text::for_each_tar_member(p, 1 << 20, [&](const std::string&, std::string&&) { ++n; });
    return n;
  };
  ssmlab::test::write_text(p, tar);
  EXPECT_EQ(members(), 1);
  std::string bad = tar;
  bad[10] ^= 1;  // a name byte: the checksum no longer holds
  ssmlab::test::write_text(p, bad);
  ssmlab::test::expect_data_error(members, {p.string(), "checksum"});
  ssmlab::test::write_text(p, tar.substr(0, 512 + 300));  // cut inside the member
  ssmlab::test::expect_data_error(members, {p.string(), "cut off inside a tar member"});
  ssmlab::test::write_text(p, tar.substr(0, 200));
  ssmlab::test::expect_data_error(members, {p.string(), "cut off inside a tar header"});
  ssmlab::test::write_text(p, "plain text, not an archive at all");
  ssmlab::test::expect_data_error(members, {p.string()});
  ssmlab::test::write_text(p, "");
  ssmlab::test::expect_data_error(members, {p.string(), "empty"});
}

TEST(TextCorpus, TheRealBrownCorpusHas500TaggedTexts) {
  if (!fs::exists(ssmlab::test::brown_archive())) GTEST_SKIP() << "no " << ssmlab::test::brown_archive();
  const auto docs = read_all({"brown", ssmlab::test::brown_archive().string()});
  ASSERT_EQ(docs.size(), 500u);
  EXPECT_EQ(docs.front().name, "ca01");
  EXPECT_EQ(docs.back().name, "cr09");
  EXPECT_TRUE(docs.front().text.starts_with(
      "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced "
      "`` no evidence '' that any irregularities took place .\n"))
      << docs.front().text.substr(0, 200);
  for (const auto& d : docs) EXPECT_EQ(d.text.find("/nn"), std::string::npos) << d.name << " keeps a tag";
}

TEST(TextCorpus, LinuxDocsAreTheDebianRstSources) {
  if (!fs::exists(ssmlab::text::kDefaultLinuxDocsPath))
    GTEST_SKIP() << "Debian's linux-doc-6.1 is not installed (scripts/setup.sh installs it)";
  const CorpusOptions o{"linux_docs", ""};
  int64_t n = 0, bytes = 0;
  ssmlab::text::for_each_document(o, [&](Document&& d) {
    ++n;
    bytes += static_cast<int64_t>(d.text.size());
  });
  EXPECT_GT(n, 1000);
  EXPECT_GT(bytes, int64_t{10} << 20);
}

}  // namespace

}  // namespace text_test_corpus
