#include "ssmlab/core/device.h"

#include <ATen/Context.h>

#include "ssmlab/core/error_kinds.h"

namespace ssmlab {

bool cuda_available() { return at::hasCUDA() && at::getNumGPUs() > 0; }

c10::Device parse_device(const std::string& name) {
  if (name == "auto") return cuda_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  try {
    c10::Device d(name);
    if (d.is_cuda()) SSMLAB_CHECK(cuda_available(), "device '", name, "' asked for, but no CUDA device is usable here");
    return d;
  } catch (const c10::Error&) {
    fail_config("unknown device '", name, "': expected cpu, cuda, cuda:N or auto");  // a config value (exit code 2)
  }
}

c10::ScalarType parse_precision(const std::string& name) {
  if (name == "fp32") return c10::kFloat;
  if (name == "bf16") return c10::kBFloat16;
  if (name == "fp16") return c10::kHalf;
  if (name == "fp64") return c10::kDouble;
  fail("unknown precision '", name, "': expected fp32, bf16, fp16 or fp64");
}

}  // namespace ssmlab
