// Trace names (docs/GLOSSARY.md "Trace names"): the glossary's tables, parsed here so doc and code cannot drift,
// against what every registered mixer records through a Block: a keep-everything Trace records exactly the
// names marked `yes` (less the explicit-only ones) plus the mixer-specific names, in the documented ranks with
// (B, L) leading where documented; an explicit request for the `yes` names gets exactly those. Mamba-1's decay
// against exp(dt ⊗ A); keep_graph lets gradients reach the input.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "mixers/small_mixers.h"
#include "ssmlab/mixers/mamba1.h"
#include "ssmlab/models/block.h"
#include "tolerances.h"

namespace mixers_test_trace_names {

namespace {

using ssmlab::test::kMixerDim;
using Names = std::set<std::string>;

struct Table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
};

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" `"), b = s.find_last_not_of(" `");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

// The first markdown table after the line `heading` of docs/GLOSSARY.md.
Table glossary_table(const std::string& heading) {
  std::ifstream in(std::string(SSMLAB_SOURCE_DIR) + "/docs/GLOSSARY.md");
  EXPECT_TRUE(in.good()) << "cannot read docs/GLOSSARY.md under " << SSMLAB_SOURCE_DIR;
  Table t;
  bool found = false;
  for (std::string line; std::getline(in, line);) {
    if (!found) {
      found = line == heading;
      continue;
    }
    if (line.empty() || line[0] != '|') {
      if (t.header.empty()) continue;
      break;
    }
    std::vector<std::string> cells;
    std::stringstream ss(line.substr(1));
    for (std::string cell; std::getline(ss, cell, '|');) cells.push_back(trim(cell));
    if (t.header.empty()) {
      t.header = cells;
    } else if (cells.at(0).rfind("---", 0) != 0) {
      EXPECT_EQ(cells.size(), t.header.size()) << heading << ": " << line;
      t.rows.push_back(cells);
    }
  }
  EXPECT_TRUE(found && !t.rows.empty()) << "docs/GLOSSARY.md has no table under '" << heading << "'";
  return t;
}

// mixer -> name -> cell, from a table with one row per mixer and one column per name.
std::map<std::string, std::map<std::string, std::string>> by_mixer(const Table& t) {
  std::map<std::string, std::map<std::string, std::string>> out;
  for (const auto& row : t.rows)
    for (size_t c = 1; c < row.size(); ++c) out[row[0]][t.header[c]] = row[c];
  return out;
}

struct Glossary {
  std::map<std::string, std::map<std::string, std::string>> yes, shape;
  std::map<std::string, std::map<std::string, std::string>> extra_shape;  // mixer -> extra name -> shape
  std::map<std::string, Names> explicit_only;
};

const Glossary& glossary() {
  static const Glossary g = [] {
    Glossary g;
    g.yes = by_mixer(glossary_table("### Names per mixer"));
    g.shape = by_mixer(glossary_table("### Shapes per mixer"));
    for (const auto& row : glossary_table("### Mixer-specific names").rows) g.extra_shape[row.at(1)][row.at(0)] = row.at(2);
    for (const auto& row : glossary_table("### Explicit-only names").rows) g.explicit_only[row.at(0)].insert(row.at(1));
    return g;
  }();
  return g;
}

Names yes_names(const std::string& mixer) {
  Names out;
  for (const auto& [name, cell] : glossary().yes.at(mixer))
    if (cell == "yes") out.insert(name);
  return out;
}

std::string shape_of(const std::string& mixer, const std::string& name) {
  const auto& s = glossary().shape.at(mixer);
  if (s.count(name)) return s.at(name);
  return glossary().extra_shape.at(mixer).at(name);
}

ssmlab::models::Block block(const std::string& mixer, uint64_t seed) {
  return ssmlab::models::Block(ssmlab::test::make_small_mixer(mixer, seed), "rmsnorm", 1e-5, kMixerDim, 2, "gelu");
}

Names recorded(const ssmlab::Trace& trace, int64_t layer) {
  Names out;
  for (const auto& [key, value] : trace.values())
    if (key.second == layer) out.insert(key.first);
  return out;
}

// Rank from a shape cell such as "(B, L, E)"; (B, L) leading when the cell starts so, B for any "(B, ...".
void expect_shape(const std::string& mixer, const std::string& name, const at::Tensor& t, int64_t b, int64_t l) {
  const std::string cell = shape_of(mixer, name);
  ASSERT_TRUE(cell.size() > 2 && cell.front() == '(' && cell.back() == ')') << mixer << " " << name << ": " << cell;
  const int64_t rank = 1 + std::count(cell.begin(), cell.end(), ',');
  EXPECT_EQ(t.dim(), rank) << mixer << " " << name << " " << cell << " got " << t.sizes();
  if (cell.rfind("(B, L,", 0) == 0) {
    EXPECT_EQ(t.size(0), b) << mixer << " " << name;
    EXPECT_EQ(t.size(1), l) << mixer << " " << name;
  } else if (cell.rfind("(B,", 0) == 0) {
    EXPECT_EQ(t.size(0), b) << mixer << " " << name;
  }
}

TEST(TraceNames, GlossaryTablesCoverTheRegistryAndAgree) {
  const auto& g = glossary();
  Names rows, registry;
  for (const auto& [m, cells] : g.yes) rows.insert(m);
  for (const auto& n : ssmlab::mixers::mixer_names()) registry.insert(n);
  EXPECT_EQ(rows, registry) << "one row per registered mixer in 'Names per mixer'";
  const Names columns = {"mixer_in", "mixer_out", "block_out", "dt", "decay", "B", "C", "state"};
  for (const auto& [m, cells] : g.yes) {
    Names cols;
    for (const auto& [name, cell] : cells) {
      cols.insert(name);
      EXPECT_TRUE(cell == "yes" || cell == "—") << m << " " << name << ": '" << cell << "'";
      ASSERT_TRUE(g.shape.count(m) && g.shape.at(m).count(name)) << m << " " << name << " has no shape";
      EXPECT_EQ(cell == "yes", g.shape.at(m).at(name) != "—") << m << " " << name << ": yes iff a shape is given";
    }
    EXPECT_EQ(cols, columns) << m;
  }
  for (const auto& [m, names] : g.explicit_only)
    for (const auto& n : names) EXPECT_TRUE(yes_names(m).count(n)) << m << " " << n << " explicit-only but not yes";
}

class TraceNames : public ::testing::TestWithParam<std::string> {};

TEST_P(TraceNames, KeepEverythingRecordsTheGlossaryNames) {
  const std::string m = GetParam();
  auto b = block(m, 1);
  ssmlab::Trace trace;
  trace.layer = 2;
  const int64_t B = 2, L = 7;
  b->forward(at::randn({B, L, kMixerDim}), &trace);
  Names expected = yes_names(m);
  if (glossary().explicit_only.count(m))
    for (const auto& n : glossary().explicit_only.at(m)) expected.erase(n);
  if (glossary().extra_shape.count(m))
    for (const auto& [n, shape] : glossary().extra_shape.at(m)) expected.insert(n);
  EXPECT_EQ(recorded(trace, 2), expected);
  for (const auto& n : recorded(trace, 2)) expect_shape(m, n, trace.get(n, 2), B, L);
}

TEST_P(TraceNames, ExplicitRequestGetsExactlyTheYesNames) {
  const std::string m = GetParam();
  auto b = block(m, 2);
  ssmlab::Trace trace(yes_names(m));
  const int64_t B = 3, L = 5;
  const at::Tensor x = at::randn({B, L, kMixerDim});
  const at::Tensor y = b->forward(x, &trace);
  EXPECT_EQ(recorded(trace, 0), yes_names(m));
  for (const auto& n : recorded(trace, 0)) expect_shape(m, n, trace.get(n, 0), B, L);
  EXPECT_TRUE(at::equal(trace.get("block_out", 0), y));
  EXPECT_TRUE(at::equal(trace.get("mixer_in", 0), b->norm1(x)));
  EXPECT_TRUE(at::equal(trace.get("mixer_out", 0), b->mixer->forward(b->norm1(x))));
}

INSTANTIATE_TEST_SUITE_P(EveryMixer, TraceNames, ::testing::ValuesIn(ssmlab::mixers::mixer_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(TraceNamesMamba1, DecayOnlyWhenNamedAndEqualsExpDtA) {
  auto b = block("mamba1", 3);
  b->to(at::kDouble);
  const at::Tensor x = at::randn({2, 9, kMixerDim}, at::kDouble);
  ssmlab::Trace all, named({"dt", "decay"});
  b->forward(x, &all);
  EXPECT_FALSE(all.has("decay", 0)) << "a keep-everything Trace must not build (B, L, E, N)";
  b->forward(x, &named);
  auto* m = dynamic_cast<ssmlab::mixers::Mamba1Impl*>(b->mixer.get());
  ASSERT_NE(m, nullptr);
  const at::Tensor dt = named.get("dt", 0), decay = named.get("decay", 0);  // (B, L, E), (B, L, E, N)
  EXPECT_EQ(decay.sizes(), (at::IntArrayRef{2, 9, m->d_inner(), m->state_dim()}));
  const at::Tensor A = m->transition->A().detach();                        // (E, N)
  EXPECT_TRUE(ssmlab::test::all_close(decay, at::exp(dt.unsqueeze(-1) * A), ssmlab::test::kFp64Forward, "decay"));
  EXPECT_TRUE(at::equal(dt, all.get("dt", 0)));
}

TEST(TraceOptions, KeepGraphLetsGradientsFlow) {
  for (const std::string m : {"mamba1", "hgrn2"}) {
    auto b = block(m, 4);
    const at::Tensor x = at::randn({2, 6, kMixerDim}).requires_grad_(true);
    ssmlab::Trace detached;
    b->forward(x, &detached);
    EXPECT_FALSE(detached.get("state", 0).requires_grad()) << m << ": default records are detached copies";
    ssmlab::Trace trace({"state", "mixer_in"});
    trace.keep_graph = true;
    b->forward(x, &trace);
    ASSERT_TRUE(trace.get("state", 0).requires_grad()) << m;
    const auto g = torch::autograd::grad({trace.get("state", 0).sum()}, {trace.get("mixer_in", 0)},
                                         /*grad_outputs=*/{}, /*retain_graph=*/true);
    EXPECT_GT(g.at(0).abs().sum().item<double>(), 0.0) << m << ": d state / d mixer_in";
    trace.get("state", 0).pow(2).sum().backward();
    ASSERT_TRUE(x.grad().defined()) << m;
    EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0) << m;
  }
}

}  // namespace

}  // namespace mixers_test_trace_names
