// Explicit, seeded randomness. Every random draw in ssmlab goes through an Rng that comes from the
// config seed, so the same seed gives the same run. State round-trips through a string (checkpoints).
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace ssmlab {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : engine_(seed) {}

  uint64_t next_u64() { return engine_(); }
  // Uniform in [0, 1).
  double uniform();
  // Uniform integer in [lo, hi).
  int64_t randint(int64_t lo, int64_t hi);
  double normal(double mean = 0.0, double stddev = 1.0);
  // A fresh child seed (for per-segment or per-worker streams).
  uint64_t fork_seed() { return engine_(); }

  std::string state() const;
  void set_state(const std::string& s);

 private:
  std::mt19937_64 engine_;
};

// A 64-bit FNV-1a hash (run ids, data fingerprints).
uint64_t fnv1a64(const std::string& s, uint64_t h = 1469598103934665603ull);

}  // namespace ssmlab
