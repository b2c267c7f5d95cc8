// Device and dtype helpers shared by every layer.
#pragma once
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace ssmlab {

// "cpu", "cuda", "cuda:1", or "auto" (cuda when available, else cpu). Errors name the bad string.
c10::Device parse_device(const std::string& name);
bool cuda_available();
// "fp32" | "bf16" | "fp16" | "fp64".
c10::ScalarType parse_precision(const std::string& name);
// The dtype a recurrence state is kept in for inputs of `dtype`: fp64 stays fp64, all else fp32.
inline c10::ScalarType state_dtype(c10::ScalarType dtype) {
  return dtype == c10::kDouble ? c10::kDouble : c10::kFloat;
}

}  // namespace ssmlab
