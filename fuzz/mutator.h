// A small deterministic mutator for the fuzz loop that runs where libFuzzer does not (gcc builds, the normal
// test suite): byte flips, bytes that matter to our formats, inserted runs (deep brackets, long dotted keys,
// huge numbers), deletions, duplications and splices of two seeds. Fixed seed, so a failure reproduces.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace ssmlab::fuzz {

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  std::string mutate(std::string s, const std::vector<std::string>& seeds) {
    const int n = 1 + static_cast<int>(below(4));
    for (int i = 0; i < n; ++i) step(s, seeds);
    if (s.size() > kMaxBytes) s.resize(kMaxBytes);
    return s;
  }

 private:
  static constexpr size_t kMaxBytes = 1 << 16;

  uint64_t below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  std::string token() {
    static const char* tokens[] = {"[", "]", "{", "}", "\"", "'", "'''", "\"\"\"", ".", "=", ",", "\n", "#", "\\",
                                   "-", "0", "1e308", "-1", "nan", "inf", "18446744073709551616", "9223372036854775807",
                                   "null", "true", "[[", "]]", "\x01", "\xff", "\xc3\x28", "step", "kind", "eval",
                                   "train.threads=", "model.d_model=", "dtype", "shape", "data_offsets", "F32", "BOOL"};
    return tokens[below(sizeof(tokens) / sizeof(tokens[0]))];
  }

  void step(std::string& s, const std::vector<std::string>& seeds) {
    const size_t pos = below(s.size() + 1);
    switch (below(9)) {
      case 0:
        if (!s.empty()) s[below(s.size())] ^= static_cast<char>(1u << below(8));
        break;
      case 1:
        if (!s.empty()) s[below(s.size())] = static_cast<char>(below(256));
        break;
      case 2:
        s.insert(pos, token());
        break;
      case 3: {  // a deep or long run: brackets, dotted parts, digits
        static const char* units[] = {"[", "{", "a.", "9", "{a=", "[[", "\"x\":[", "a", "."};
        const std::string unit = units[below(sizeof(units) / sizeof(units[0]))];
        std::string run;
        for (uint64_t k = 0, reps = 1 + below(3000); k < reps && run.size() < 20000; ++k) run += unit;
        s.insert(pos, run);
        break;
      }
      case 4:
        if (!s.empty()) s.erase(below(s.size()), 1 + below(16));
        break;
      case 5:
        if (!s.empty()) {
          const size_t from = below(s.size());
          s.insert(pos, s.substr(from, 1 + below(64)));
        }
        break;
      case 6:
        if (!seeds.empty()) {
          const std::string& other = seeds[below(seeds.size())];
          s = s.substr(0, pos) + other.substr(std::min<size_t>(below(other.size() + 1), other.size()));
        }
        break;
      case 7:
        s.resize(below(s.size() + 1));  // truncation, as a kill leaves a file
        break;
      default:
        if (s.size() >= 8 && below(2)) {  // safetensors' header length: a nearby or huge value
          uint64_t n = 0;
          for (int b = 7; b >= 0; --b) n = (n << 8) | static_cast<uint8_t>(s[b]);
          n = below(2) ? n + below(17) - 8 : rng_();
          for (int b = 0; b < 8; ++b) s[b] = static_cast<char>((n >> (8 * b)) & 0xff);
        } else {
          s.insert(pos, token());
        }
    }
  }

  std::mt19937_64 rng_;
};

}  // namespace ssmlab::fuzz
