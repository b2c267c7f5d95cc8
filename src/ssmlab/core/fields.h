// One definition per option: every options struct lists its fields once, in a template member
//   template <class V> void visit(V& v) { v("d_state", d_state, "SSM state size N", Check::at_least(1)); ... }
// and the visitors in experiments/ (TOML load, --set overrides, printing, --help, run-id hashing)
// walk it. Field types: bool, int64_t, double, std::string, a nested struct with visit(), or a
// std::vector of such structs (a TOML array of tables). `Check` is the constraint a loader enforces.
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ssmlab {

struct Check {
  std::optional<double> min, max;  // inclusive bounds unless *_open
  bool min_open = false, max_open = false;
  std::vector<std::string> choices;  // for strings: the allowed values (empty: any)

  static Check range(double lo, double hi) { return Check{lo, hi}; }
  static Check at_least(double lo) { return Check{lo, std::nullopt}; }
  static Check positive() { return Check{0.0, std::nullopt, /*min_open=*/true}; }
  static Check unit() { return Check{0.0, 1.0}; }
  static Check one_of(std::vector<std::string> values) {
    Check c;
    c.choices = std::move(values);
    return c;
  }
};

// Accepts every field; used to detect options structs.
struct NullVisitor {
  template <class T>
  void operator()(const char*, T&, const char*, const Check& = {}) {}
};

template <class T>
concept Visitable = requires(T& t, NullVisitor& v) { t.visit(v); };

}  // namespace ssmlab
