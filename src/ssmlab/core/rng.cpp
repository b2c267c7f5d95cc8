#include "ssmlab/core/rng.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "ssmlab/core/error.h"

namespace ssmlab {

double Rng::uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

int64_t Rng::randint(int64_t lo, int64_t hi) {
  SSMLAB_CHECK(hi > lo, "Rng::randint: empty range [", lo, ", ", hi, ")");
  const uint64_t span = static_cast<uint64_t>(hi - lo);
  // Rejection sampling: unbiased for any span.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % span;
  uint64_t r;
  do r = engine_(); while (r >= limit);
  return lo + static_cast<int64_t>(r % span);
}

double Rng::normal(double mean, double stddev) {
  // Box-Muller on our own uniforms (std::normal_distribution is implementation-defined).
  double u1;
  do u1 = uniform(); while (u1 <= 0.0);
  const double u2 = uniform();
  return mean + stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

std::vector<int64_t> Rng::sample_distinct(int64_t lo, int64_t hi, int64_t k) {
  const int64_t n = hi - lo;
  SSMLAB_CHECK(k >= 0 && k <= n, "Rng::sample_distinct: cannot draw ", k, " distinct values from [", lo, ", ", hi,
               ")");
  std::vector<int64_t> out;
  out.reserve(k);
  if (k * 4 < n) {  // sparse: rejection
    std::vector<int64_t> seen;
    while (static_cast<int64_t>(out.size()) < k) {
      int64_t v = randint(lo, hi);
      if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    }
    return out;
  }
  std::vector<int64_t> pool(n);
  std::iota(pool.begin(), pool.end(), lo);
  for (int64_t i = 0; i < k; ++i) {  // partial Fisher-Yates
    int64_t j = randint(i, n);
    std::swap(pool[i], pool[j]);
    out.push_back(pool[i]);
  }
  return out;
}

std::vector<int64_t> Rng::weighted_sample_without_replacement(const std::vector<double>& weights, int64_t k) {
  const int64_t n = static_cast<int64_t>(weights.size());
  SSMLAB_CHECK(k >= 0 && k <= n, "Rng::weighted_sample_without_replacement: k = ", k, " > ", n, " items");
  std::vector<double> w(weights);
  double total = std::accumulate(w.begin(), w.end(), 0.0);
  std::vector<int64_t> out;
  out.reserve(k);
  for (int64_t draw = 0; draw < k; ++draw) {
    SSMLAB_CHECK(total > 0.0, "Rng::weighted_sample_without_replacement: fewer than ", k, " items with weight > 0");
    double r = uniform() * total, acc = 0.0;
    int64_t pick = -1;
    for (int64_t i = 0; i < n; ++i) {
      if (w[i] <= 0.0) continue;
      acc += w[i];
      pick = i;
      if (r < acc) break;
    }
    out.push_back(pick);
    total -= w[pick];
    w[pick] = 0.0;
    if (draw % 64 == 63) total = std::accumulate(w.begin(), w.end(), 0.0);  // limit drift
  }
  return out;
}

std::string Rng::state() const {
  std::ostringstream os;
  os << engine_;
  return os.str();
}

void Rng::set_state(const std::string& s) {
  std::istringstream is(s);
  is >> engine_;
  SSMLAB_CHECK(!is.fail(), "Rng::set_state: not a valid generator state");
}

uint64_t fnv1a64(const std::string& s, uint64_t h) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace ssmlab
