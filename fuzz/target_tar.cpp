// The tar reader (text/tar_reader.h) behind the Brown corpus: 512-byte ustar headers, octal fields, a checksum,
// GNU long names and pax path records, contents padded to 512 bytes.
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "input_file.h"
#include "ssmlab/core/error.h"
#include "ssmlab/text/tar_reader.h"
#include "targets.h"

namespace ssmlab::fuzz {
namespace {

std::string member(const std::string& name, const std::string& body, char type) {
  char h[512] = {};
  std::memcpy(h, name.data(), name.size());
  std::snprintf(h + 100, 8, "%07o", 0644);
  std::snprintf(h + 124, 12, "%011o", static_cast<unsigned>(body.size()));
  h[156] = type;
  std::memcpy(h + 257, "ustar", 5);
  std::memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (char c : h) sum += static_cast<unsigned char>(c);
  std::snprintf(h + 148, 8, "%06o", sum);
  std::string out(h, sizeof h);
  out += body;
  out.append((512 - body.size() % 512) % 512, '\0');
  return out;
}

}  // namespace

void run_tar(std::string_view input) {
  const auto path = scratch_file(input, "fuzz.tar");
  try {
    text::for_each_tar_member(path, int64_t{1} << 24, [](const std::string&, std::string&&) {});
  } catch (const Error&) {
  }
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

std::vector<std::string> seeds_tar() {
  const std::string plain = member("brown/ca01", "The/at jury/nn ./.\n", '0') + std::string(1024, '\0');
  const std::string gnu = member("././@LongLink", std::string(120, 'n') + '\0', 'L') + member("x", "body", '0');
  const std::string pax = member("pax", "16 path=a/b/cd1\n", 'x') + member("x", "text", '0') + std::string(1024, '\0');
  return {plain, gnu, pax};
}

}  // namespace ssmlab::fuzz
