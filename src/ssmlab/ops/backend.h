// Backend selection for ops: "reference" (the oracle) or "auto" (the fastest kernel that supports the
// device). The table of which op has a fused kernel on which device lives in backend.cpp; `ssmlab list`
// prints it.
#pragma once
#include <string>
#include <vector>

#include <c10/core/Device.h>

namespace ssmlab::ops {

enum class Backend { reference, fused };

struct OpInfo {
  std::string name;
  std::string summary;
  std::vector<std::string> fused_devices;  // devices with a fast kernel; the reference runs everywhere
  // Whether `<op>_ref` (the oracle) is registered beside `<op>`. False for ops that are plain ATen on every
  // device (e.g. causal_conv1d_update): they have no fused kernel, so `<op>` is its own reference.
  bool has_ref = true;
};

// Every op ssmlab registers, for `ssmlab list` and the registration test.
const std::vector<OpInfo>& op_table();

// Parses `name` ("auto" | "reference") and picks the backend for `op` on `device`: "auto" gives
// Backend::fused when the op lists a fused kernel for the device and `fused_supported` (the caller's
// supports(...) predicate for these inputs) holds. Falling back from "auto" to the reference is logged once
// per (op, device, reason).
Backend resolve_backend(const std::string& name, const std::string& op, c10::Device device,
                        bool fused_supported = false);

// Validates a backend name (configs); throws ssmlab::Error naming the choices.
void check_backend_name(const std::string& name);

}  // namespace ssmlab::ops
