#include <gtest/gtest.h>

#include "ssmlab/core/error.h"
#include "ssmlab/core/rng.h"

namespace core_test_rng {

TEST(Rng, SameSeedSameStream) {
  ssmlab::Rng a(7), b(7);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.next_u64(), b.next_u64());
}

TEST(Rng, RandintInRangeAndStateRoundTrips) {
  ssmlab::Rng a(11);
  for (int i = 0; i < 1000; ++i) {
    const int64_t v = a.randint(-3, 4);
    EXPECT_GE(v, -3);
    EXPECT_LT(v, 4);
  }
  const std::string s = a.state();
  const double u1 = a.uniform(), n1 = a.normal();
  ssmlab::Rng b(0);
  b.set_state(s);
  EXPECT_EQ(b.uniform(), u1);
  EXPECT_EQ(b.normal(), n1);
  EXPECT_THROW(b.set_state("not a state"), ssmlab::Error);
  EXPECT_THROW(a.randint(2, 2), ssmlab::Error);
}

TEST(Rng, UniformMeanAndNormalMoments) {
  ssmlab::Rng r(5);
  double su = 0, sn = 0, sn2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    su += r.uniform();
    const double z = r.normal();
    sn += z;
    sn2 += z * z;
  }
  EXPECT_NEAR(su / n, 0.5, 0.005);
  EXPECT_NEAR(sn / n, 0.0, 0.01);
  EXPECT_NEAR(sn2 / n, 1.0, 0.02);
}

}  // namespace core_test_rng
