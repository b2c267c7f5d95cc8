// Precompiled header of ssmlab_tests: the library's (ATen, torch::nn, json) plus GoogleTest. The tests build at
// -O1 (tests/CMakeLists.txt), so they cannot reuse libssmlab's -O3 header: GCC refuses a PCH built at another -O.
#pragma once
#include "ssmlab/pch.h"

#include <gtest/gtest.h>
