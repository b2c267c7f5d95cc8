// SoftSort (Prillo & Eisenschlos, ICML 2020), as the token-reordering seed uses it (spec §4.3, TD
// utils/softsort.py with pow = 1): a differentiable relaxation of the permutation matrix that sorts `v` in
// descending order,
//   v_sorted = sort(v, descending),   Π[k, l] = softmax_l( -|v_l - v_sorted_k| / τ ),
// so row k is a distribution over the positions l concentrated on the k-th largest entry; (Π x)_k ≈ x of the
// k-th largest. Rows sum to 1 for every τ; as τ -> 0 (distinct entries) Π tends to the permutation matrix.
// hard: the exact permutation matrix of the sort (one 1 per row and column, ties broken by sort order) in the
// forward pass, with Π's gradient (straight-through: Π_hard + (Π - stop_grad(Π)), exactly Π_hard in value).
// Plain ATen, (B, L) -> (B, L, L), differentiable with respect to v; O(L^2) memory per sequence.
#pragma once
#include <ATen/core/Tensor.h>

namespace ssmlab::mixers {

at::Tensor softsort(const at::Tensor& v, double tau, bool hard);

}  // namespace ssmlab::mixers
