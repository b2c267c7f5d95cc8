// Writers of small data files in the official formats (CIFAR-10 binary records, IDX, gzip), written by hand
// here so that the readers are tested against the format, not against themselves.
#pragma once
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace ssmlab::test {

using Bytes = std::vector<uint8_t>;

inline void write_bytes(const std::filesystem::path& p, const Bytes& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

inline void write_gzip(const std::filesystem::path& p, const Bytes& b) {
  gzFile gz = gzopen(p.c_str(), "wb");
  gzwrite(gz, b.data(), static_cast<unsigned>(b.size()));
  gzclose(gz);
}

// One CIFAR-10 record: label, then R, G, B planes; pixel (c, row, col) = pixel(c, row, col).
template <class F>
void append_cifar_record(Bytes& out, uint8_t label, F pixel) {
  out.push_back(label);
  for (int c = 0; c < 3; ++c)
    for (int row = 0; row < 32; ++row)
      for (int col = 0; col < 32; ++col) out.push_back(static_cast<uint8_t>(pixel(c, row, col)));
}

inline void append_be32(Bytes& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(v >> s));
}

// An IDX images file (magic 0x803): n x h x w bytes from pixel(i, row, col).
template <class F>
Bytes idx_images(uint32_t n, uint32_t h, uint32_t w, F pixel) {
  Bytes out;
  append_be32(out, 0x00000803);
  append_be32(out, n);
  append_be32(out, h);
  append_be32(out, w);
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t r = 0; r < h; ++r)
      for (uint32_t c = 0; c < w; ++c) out.push_back(static_cast<uint8_t>(pixel(i, r, c)));
  return out;
}

// An IDX labels file (magic 0x801).
inline Bytes idx_labels(const std::vector<uint8_t>& labels) {
  Bytes out;
  append_be32(out, 0x00000801);
  append_be32(out, static_cast<uint32_t>(labels.size()));
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

}  // namespace ssmlab::test
