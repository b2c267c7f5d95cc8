// Split-tf32 tensor-core products shared by the CUDA kernels (ops/ssd_scan's chunked kernels, ops/delta_rule's
// state pass): an fp32 operand x is held as hi = tf32(x) and lo = tf32(x - hi), and a product is summed from
// hi·hi + hi·lo + lo·hi, about fp32 accurate on the tensor cores (wmma m16n16k8 tf32).
#pragma once
#include <mma.h>

namespace ssmlab::ops::wmma_tf32 {

// Splits the fp32 values loaded into `hi` into their tf32 high part (left in hi) and the tf32 rest (into lo).
template <typename Frag>
__device__ __forceinline__ void split(Frag& hi, Frag& lo) {
#pragma unroll
  for (int e = 0; e < hi.num_elements; ++e) {
    const float v = hi.x[e];
    const float h = nvcuda::wmma::__float_to_tf32(v);
    hi.x[e] = h;
    lo.x[e] = nvcuda::wmma::__float_to_tf32(v - h);
  }
}

}  // namespace ssmlab::ops::wmma_tf32
