#include <gtest/gtest.h>

#include "ssmlab/core/rng.h"

TEST(Rng, SameSeedSameStream) {
  ssmlab::Rng a(7), b(7);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.next_u64(), b.next_u64());
}
