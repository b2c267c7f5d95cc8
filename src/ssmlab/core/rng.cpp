#include "ssmlab/core/rng.h"

#include <cmath>
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
