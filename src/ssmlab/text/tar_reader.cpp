// tar members (layout: POSIX.1-1988 ustar headers of 512 bytes, content padded to 512; GNU 'L' long names;
// pax 'x' headers' path records).
#include "ssmlab/text/tar_reader.h"

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/data/input_file.h"

namespace ssmlab::text {
namespace {

constexpr size_t kBlock = 512;

std::string_view field(const uint8_t* h, size_t offset, size_t size) {
  const char* p = reinterpret_cast<const char*>(h) + offset;
  size_t n = 0;
  while (n < size && p[n] != '\0') ++n;
  return {p, n};
}

// An octal number field (leading spaces, then digits, then NUL or spaces); -1 when malformed.
int64_t octal(std::string_view f) {
  size_t i = 0;
  while (i < f.size() && f[i] == ' ') ++i;
  int64_t v = 0;
  size_t digits = 0;
  for (; i < f.size() && f[i] >= '0' && f[i] <= '7'; ++i, ++digits) {
    if (v > (int64_t{1} << 55)) return -1;
    v = v * 8 + (f[i] - '0');
  }
  for (; i < f.size(); ++i)
    if (f[i] != ' ') return -1;
  return digits > 0 ? v : -1;
}

// The "path" record of a pax extended header ("<len> path=<value>\n" records), or "".
std::string pax_path(std::string_view body) {
  std::string path;
  while (!body.empty()) {
    const size_t sp = body.find(' ');
    if (sp == std::string_view::npos) break;
    size_t len = 0;
    for (char c : body.substr(0, sp)) {
      if (c < '0' || c > '9') return path;
      len = len * 10 + static_cast<size_t>(c - '0');
    }
    if (len <= sp + 1 || len > body.size()) break;
    const std::string_view record = body.substr(sp + 1, len - sp - 2);  // without the trailing '\n'
    if (record.starts_with("path=")) path = std::string(record.substr(5));
    body.remove_prefix(len);
  }
  return path;
}

}  // namespace

void for_each_tar_member(const std::filesystem::path& archive, int64_t max_bytes,
                         const std::function<void(const std::string&, std::string&&)>& fn) {
  const std::string name = archive.string();
  std::vector<uint8_t> data;
  try {
    data = data::read_all_bytes(archive, max_bytes);
  } catch (const DataError&) {
    throw;
  } catch (const Error& e) {
    fail_data(e.what());
  }
  if (data.empty()) fail_data(name, ": empty file; expected a tar archive");
  std::string long_name;
  for (size_t at = 0;;) {
    if (at == data.size()) break;  // no end-of-archive blocks: accept a clean end between members
    if (at + kBlock > data.size())
      fail_data(name, ": cut off inside a tar header at byte ", data::with_commas(static_cast<int64_t>(at)));
    const uint8_t* h = data.data() + at;
    if (std::all_of(h, h + kBlock, [](uint8_t b) { return b == 0; })) break;  // end of archive
    uint64_t sum = 0;
    for (size_t i = 0; i < kBlock; ++i) sum += (i >= 148 && i < 156) ? uint64_t{' '} : h[i];
    const int64_t stored = octal(field(h, 148, 8));
    if (stored < 0 || static_cast<uint64_t>(stored) != sum)
      fail_data(name, ": bad tar header checksum at byte ", data::with_commas(static_cast<int64_t>(at)),
                " (stored ", std::string(field(h, 148, 8)), ", computed ", sum, "): not a tar archive, or corrupt");
    const int64_t size = octal(field(h, 124, 12));
    if (size < 0)
      fail_data(name, ": tar member at byte ", data::with_commas(static_cast<int64_t>(at)),
                " has a size field that is not octal");
    const size_t begin = at + kBlock;
    if (static_cast<uint64_t>(size) > data.size() - begin)
      fail_data(name, ": cut off inside a tar member (it promises ", data::with_commas(size), " bytes, ",
                data::with_commas(static_cast<int64_t>(data.size() - begin)), " remain)");
    const auto usize = static_cast<size_t>(size);
    at = begin + (usize + kBlock - 1) / kBlock * kBlock;
    at = std::min(at, data.size());
    const char type = static_cast<char>(h[156]);
    const std::string_view body(reinterpret_cast<const char*>(data.data()) + begin, usize);
    if (type == 'L') {  // GNU: the next member's long name
      long_name = std::string(field(reinterpret_cast<const uint8_t*>(body.data()), 0, body.size()));
      continue;
    }
    if (type == 'x') {  // pax: the next member's attributes
      long_name = pax_path(body);
      continue;
    }
    std::string member = long_name;
    long_name.clear();
    if (member.empty()) {
      member = std::string(field(h, 0, 100));
      const std::string_view prefix = field(h, 345, 155);
      if (field(h, 257, 5) == "ustar" && !prefix.empty()) member = std::string(prefix) + "/" + member;
    }
    if (type == '0' || type == '\0' || type == '7') fn(member, std::string(body));
  }
}

}  // namespace ssmlab::text
