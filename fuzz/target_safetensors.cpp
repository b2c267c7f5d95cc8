// models::parse_safetensors: the header length, the JSON header, offsets and the data section.
#include <ATen/ATen.h>

#include "ssmlab/core/error.h"
#include "ssmlab/models/safetensors.h"
#include "targets.h"

namespace ssmlab::fuzz {

void run_safetensors(std::string_view input) {
  try {
    models::parse_safetensors(input, "fuzz.safetensors");
  } catch (const Error&) {
  }
}

std::vector<std::string> seeds_safetensors() {
  const auto f = at::arange(6, at::kFloat).reshape({2, 3});
  const auto b = at::arange(3, at::kLong).remainder(2).to(at::kBool);
  const auto l = at::tensor({7}, at::kLong);
  return {models::serialize_safetensors({{"w", f}}, {}, "seed"),
          models::serialize_safetensors({{"a", f}, {"b", b}, {"c", l}}, {{"format", "pt"}}, "seed"),
          models::serialize_safetensors({}, {}, "seed")};
}

}  // namespace ssmlab::fuzz
