// Figure specs and their gnuplot rendering: every kind draws a valid PNG (of the asked size) and SVG, keeps its
// script and data beside them, and the script redraws them by hand; specs round-trip through JSON and CSV;
// bad specs and a missing or failing gnuplot are errors that say so.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "report/report_test_util.h"
#include "ssmlab/report/figure.h"
#include "ssmlab/report/gnuplot.h"
#include "ssmlab/report/io.h"

namespace report_test_figure {

namespace {

using namespace ssmlab::report;
using namespace ssmlab::report::testing;

FigureSpec line_spec() {
  FigureSpec s;
  s.kind = FigureKind::line;
  s.title = "loss_vs_length";  // an underscore: would be a subscript if enhanced text were on
  s.xlabel = "sequence length";
  s.ylabel = "loss";
  s.logx = s.logy = true;
  s.series = {{"mamba", {64, 128, 256, 512, 1024}, {2.0, 1.0, 0.5, 0.3, 0.2}, {}},
              {"attention's", {64, 128, 256, 512, 1024}, {1.5, 0.9, 0.0 /*dropped on log y*/, NAN, 0.1}, {}}};
  return s;
}

FigureSpec heatmap_spec() {
  FigureSpec s;
  s.kind = FigureKind::heatmap;
  s.title = "accuracy by length and depth";
  s.xlabel = "length";
  s.ylabel = "layers";
  s.zlabel = "accuracy";
  s.columns = {"256", "512", "1024"};
  s.rows = {"1", "2"};
  s.z = {{0.91, 0.52, 0.13}, {0.99, 0.87, NAN}};
  return s;
}

FigureSpec bars_spec() {
  FigureSpec s;
  s.kind = FigureKind::bars;
  s.title = "attack success";
  s.ylabel = "success rate";
  s.categories = {"first 10%", "middle", "last \"10%\""};
  s.series = {{"mamba", {}, {0.9, 0.4, 0.1}, {}}, {"polarized", {}, {0.3, 0.2, 0.1}, {}}};
  return s;
}

FigureSpec layers_spec() {
  FigureSpec s;
  s.kind = FigureKind::layers;
  s.title = "influence vs distance per layer";
  s.xlabel = "distance";
  s.ylabel = "influence";
  s.logx = s.logy = true;
  for (int l = 0; l < 4; ++l) {
    Series ser{"layer " + std::to_string(l), {}, {}, {}};
    for (int d = 1; d <= 512; d *= 2) {
      ser.x.push_back(d);
      ser.y.push_back(std::exp(-d / (8.0 * (l + 1))) + 1e-6);
    }
    s.series.push_back(ser);
  }
  return s;
}

FigureSpec samples_spec(FigureKind kind) {
  FigureSpec s;
  s.kind = kind;
  s.title = kind == FigureKind::cdf ? "decay CDF" : "decay histogram";
  s.xlabel = "decay";
  s.logx = true;
  Series a{"layer 0", {}, {}, {}}, b{"layer 1", {}, {}, {}};
  for (int i = 1; i <= 500; ++i) {
    a.values.push_back(std::pow(10.0, -3.0 + 3.0 * i / 500.0));
    b.values.push_back(std::pow(10.0, -1.0 + 1.0 * (i % 50) / 50.0));
  }
  a.values.push_back(-1.0);  // not drawable on a log axis: dropped
  s.series = {a, b};
  s.bins = 20;
  return s;
}

void expect_rendered(const FigureSpec& spec, const std::string& stem, const std::string& must_contain) {
  const auto dir = fresh_dir("figure_" + stem);
  const auto r = render_figure(spec, dir, stem);
  EXPECT_TRUE(is_png(r.png, spec.width, spec.height));
  EXPECT_TRUE(is_svg(r.svg));
  EXPECT_TRUE(fs::exists(r.script));
  EXPECT_TRUE(fs::exists(r.data));
  const std::string svg = slurp(r.svg);
  EXPECT_NE(svg.find(spec.title), std::string::npos) << "the title is not in the SVG";
  EXPECT_NE(svg.find(must_contain), std::string::npos) << "'" << must_contain << "' is not in the SVG";
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "temp file left: " << e.path();
  fs::remove_all(dir);
}

TEST(ReportFigure, LineWithLogAxesRenders) { expect_rendered(line_spec(), "line", "attention's"); }
TEST(ReportFigure, HeatmapRendersWithValuesPrinted) { expect_rendered(heatmap_spec(), "heat", "0.87"); }
TEST(ReportFigure, GroupedBarsRender) { expect_rendered(bars_spec(), "bars", "polarized"); }
TEST(ReportFigure, PerLayerCurvesRender) { expect_rendered(layers_spec(), "layers", "layer 3"); }
TEST(ReportFigure, HistogramRenders) { expect_rendered(samples_spec(FigureKind::histogram), "hist", "layer 1"); }
TEST(ReportFigure, CdfRenders) { expect_rendered(samples_spec(FigureKind::cdf), "cdf", "layer 1"); }

// Labels and values of a list of ticks, majors and minors apart.
struct TickSplit {
  std::vector<std::string> labels;
  std::vector<double> majors, minors;
};
TickSplit split(const std::vector<AxisTick>& ticks) {
  TickSplit t;
  for (const auto& k : ticks) {
    if (k.minor) {
      EXPECT_TRUE(k.label.empty()) << "a minor tick has no label: " << k.label;
      t.minors.push_back(k.value);
    } else {
      t.labels.push_back(k.label);
      t.majors.push_back(k.value);
    }
  }
  return t;
}

TEST(ReportFigure, LogAxisTicksAtDecadesWithMinorTicksBetween) {
  // Five decades: a labelled tick at each, unlabelled ones at 2..9 times each (but not past the range).
  const auto t = split(log_ticks(1e-5, 1.0));
  EXPECT_EQ(t.labels, (std::vector<std::string>{"10⁻⁵", "10⁻⁴", "0.001", "0.01", "0.1", "1"}));
  ASSERT_EQ(t.majors.size(), 6u);
  for (size_t i = 0; i < t.majors.size(); ++i) EXPECT_NEAR(std::log10(t.majors[i]), -5.0 + i, 1e-12);
  ASSERT_EQ(t.minors.size(), 5u * 8u);
  EXPECT_NEAR(t.minors.front(), 2e-5, 1e-17);
  EXPECT_NEAR(t.minors.back(), 0.9, 1e-12);
  const auto all = log_ticks(1e-5, 1.0);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_LT(all[i - 1].value, all[i].value) << "ticks in increasing order";

  // A range that does not start or end on a decade: no tick outside it.
  const auto u = split(log_ticks(3e-3, 4e2));
  EXPECT_EQ(u.labels, (std::vector<std::string>{"0.01", "0.1", "1", "10", "100"}));
  EXPECT_NEAR(u.minors.front(), 3e-3, 1e-15);
  EXPECT_NEAR(u.minors.back(), 400, 1e-9);

  // Under 2.5 decades 2x and 5x are labelled too; within one decade every multiple.
  EXPECT_EQ(split(log_ticks(0.15, 12)).labels, (std::vector<std::string>{"0.2", "0.5", "1", "2", "5", "10"}));
  EXPECT_EQ(split(log_ticks(2.5, 9.5)).labels, (std::vector<std::string>{"3", "4", "5", "6", "7", "8", "9"}));
  // Large exponents: powers of ten and m×10ⁿ.
  EXPECT_EQ(split(log_ticks(1.5e5, 1.1e6)).labels, (std::vector<std::string>{"2×10⁵", "3×10⁵", "4×10⁵", "5×10⁵",
                                                                            "6×10⁵", "7×10⁵", "8×10⁵", "9×10⁵", "10⁶"}));

  // Twenty decades: every other decade labelled, no minor ticks (they would be a smear).
  const auto wide = split(log_ticks(1e-20, 1.0));
  EXPECT_EQ(wide.majors.size(), 11u);
  EXPECT_TRUE(wide.minors.empty());
  EXPECT_EQ(wide.labels.front(), "10⁻²⁰");

  // No ticks for a range a log axis cannot show.
  EXPECT_TRUE(log_ticks(0.0, 1.0).empty());
  EXPECT_TRUE(log_ticks(-1.0, 1.0).empty());
  EXPECT_TRUE(log_ticks(5.0, 5.0).empty());
  EXPECT_TRUE(log_ticks(1.0, INFINITY).empty());
}

TEST(ReportFigure, LogAxesGetExplicitTicksInTheScript) {
  const FigureSpec s = line_spec();  // x 64..1024, y 0.1..2, both log
  const std::string gp = gnuplot_script(s, "line", "line.dat");
  const auto xt = gp.find("set xtics ("), yt = gp.find("set ytics (");
  ASSERT_NE(xt, std::string::npos) << gp;
  ASSERT_NE(yt, std::string::npos) << gp;
  const std::string xline = gp.substr(xt, gp.find('\n', xt) - xt), yline = gp.substr(yt, gp.find('\n', yt) - yt);
  EXPECT_NE(xline.find("'100' 100,"), std::string::npos) << xline;
  EXPECT_NE(xline.find("'1000' 1000"), std::string::npos) << xline;
  EXPECT_NE(xline.find("'' 700 1,"), std::string::npos) << "a minor tick: " << xline;
  EXPECT_NE(yline.find("'0.1' 0.1,"), std::string::npos) << yline;
  EXPECT_NE(yline.find("'1' 1,"), std::string::npos) << yline;
  // The range hugs the data (not whole decades: 64..1024 is not drawn from 10 to 10000).
  EXPECT_EQ(gp.find("set xrange [10:"), std::string::npos) << gp;
}

TEST(ReportFigure, PerLayerCurvesTakeSequentialColours) {
  const std::string gp = gnuplot_script(layers_spec(), "layers", "layers.dat");
  EXPECT_NE(gp.find("lc rgb '#440154'"), std::string::npos) << "first layer: the dark end of viridis\n" << gp;
  EXPECT_NE(gp.find("lc rgb '#fde725'"), std::string::npos) << "last layer: the light end of viridis\n" << gp;
}

TEST(ReportFigure, ScriptRedrawsByHand) {
  const auto dir = fresh_dir("by_hand");
  const auto r = render_figure(heatmap_spec(), dir, "heat");
  fs::remove(r.png);
  fs::remove(r.svg);
  const std::string cmd = "cd '" + dir.string() + "' && '" + find_gnuplot().string() + "' heat.gp 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_TRUE(is_png(r.png, 800, 500));
  EXPECT_TRUE(is_svg(r.svg));
  fs::remove_all(dir);
}

TEST(ReportFigure, CdfDataEndsAtOneAndIsMonotone) {
  FigureSpec s;
  s.kind = FigureKind::cdf;
  s.series = {{"x", {}, {}, {3, 1, 2, 2, NAN}}};
  const std::string data = gnuplot_data(s);
  // Sorted, ties jump once: (1, 0) start, (1, 1/4), (2, 3/4), (3, 1).
  EXPECT_NE(data.find("1 0\n1 0.25\n2 0.75\n3 1\n"), std::string::npos) << data;
}

TEST(ReportFigure, HistogramCountsEverySample) {
  FigureSpec s;
  s.kind = FigureKind::histogram;
  s.bins = 4;
  s.series = {{"x", {}, {}, {0, 1, 1, 2, 3, 4, 4, 4}}};
  std::istringstream in(gnuplot_data(s));
  std::string line;
  double total = 0;
  int bins = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    double lo, count, hi;
    std::istringstream(line) >> lo >> count >> hi;
    total += count;
    ++bins;
  }
  EXPECT_EQ(bins, 4);
  EXPECT_EQ(total, 8);
}

TEST(ReportFigure, JsonRoundTrip) {
  for (const auto& spec : {line_spec(), heatmap_spec(), bars_spec(), layers_spec(), samples_spec(FigureKind::cdf)}) {
    const auto j = figure_to_json(spec);
    const auto back = figure_from_json(nlohmann::json::parse(j.dump()), ".", "roundtrip");
    EXPECT_EQ(figure_to_json(back), j) << j.dump();
  }
}

TEST(ReportFigure, BadSpecsAreErrorsThatNameTheProblem) {
  auto expect_error = [](const std::string& text, const std::string& fragment) {
    try {
      figure_from_json(nlohmann::json::parse(text), ".", "spec.json");
      ADD_FAILURE() << "no error for " << text;
    } catch (const ReportError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("spec.json"), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"kind": "pie"})", "unknown figure kind 'pie'");
  expect_error(R"({"kind": "line", "titel": "x", "series": []})", "unknown key 'titel'");
  expect_error(R"({"kind": "line", "series": [{"x": [1, 2], "y": [1]}]})", "2 x values but 1 y values");
  expect_error(R"({"kind": "line", "series": [{"y": [null]}]})", "no finite y value");
  expect_error(R"({"kind": "bars", "categories": ["a", "b"], "series": [{"y": [1]}]})", "1 values for 2 categories");
  expect_error(R"({"kind": "heatmap", "z": [[1, 2], [3]]})", "z row 1 has 1 values");
  expect_error(R"({"kind": "heatmap", "z": [[1, 2]], "columns": ["a"]})", "1 column labels for 2 columns");
  expect_error(R"({"kind": "histogram", "series": [{"values": []}]})", "no finite sample");
  expect_error(R"({"kind": "line", "logy": "yes", "series": [{"y": [1]}]})", "'logy' must be true or false");
  expect_error(R"({"kind": "line", "ymin": 2, "ymax": 1, "series": [{"y": [1]}]})", "ymin 2 is not below ymax 1");
}

TEST(ReportFigure, CsvFillsEachKind) {
  const auto dir = fresh_dir("csv");
  write_file_atomic(dir / "line.csv", "# a comment\nsteps,a,b\n1,0.5,0.4\n2,,0.3\n4,0.1,nan\n");
  FigureSpec line;
  fill_from_csv(line, dir / "line.csv");
  ASSERT_EQ(line.series.size(), 2u);
  EXPECT_EQ(line.xlabel, "steps");
  EXPECT_EQ(line.series[1].name, "b");
  EXPECT_EQ(line.series[0].x, (std::vector<double>{1, 2, 4}));
  EXPECT_TRUE(std::isnan(line.series[0].y[1]));

  write_file_atomic(dir / "heat.csv", "layers \\ length,256,512\n1,0.9,0.5\n2,1.0,0.8\n");
  FigureSpec heat;
  heat.kind = FigureKind::heatmap;
  fill_from_csv(heat, dir / "heat.csv");
  EXPECT_EQ(heat.columns, (std::vector<std::string>{"256", "512"}));
  EXPECT_EQ(heat.rows, (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(heat.z[1][1], 0.8);

  write_file_atomic(dir / "bars.csv", "region,\"mamba, 2 layers\",s4\nfirst,0.9,0.5\nlast,0.1,0.2\n");
  FigureSpec bars;
  bars.kind = FigureKind::bars;
  fill_from_csv(bars, dir / "bars.csv");
  EXPECT_EQ(bars.categories, (std::vector<std::string>{"first", "last"}));
  EXPECT_EQ(bars.series[0].name, "mamba, 2 layers");

  write_file_atomic(dir / "hist.csv", "a,b\n1,2\n3,\n");
  FigureSpec hist;
  hist.kind = FigureKind::histogram;
  fill_from_csv(hist, dir / "hist.csv");
  EXPECT_EQ(hist.series[0].values, (std::vector<double>{1, 3}));
  EXPECT_EQ(hist.series[1].values, (std::vector<double>{2}));

  write_file_atomic(dir / "bad.csv", "x,y\n1,2\n3,oops\n");
  FigureSpec bad;
  try {
    fill_from_csv(bad, dir / "bad.csv");
    ADD_FAILURE() << "no error for a non-number cell";
  } catch (const ReportError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.csv:3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'oops'"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(ReportFigure, MissingGnuplotIsAClearError) {
  const auto dir = fresh_dir("no_gnuplot");
  {
    ScopedEnv no_override("SSMLAB_GNUPLOT", std::nullopt);
    ScopedEnv empty_path("PATH", dir.string());
    try {
      render_figure(line_spec(), dir, "line");
      ADD_FAILURE() << "rendering without gnuplot did not fail";
    } catch (const ReportError& e) {
      EXPECT_NE(std::string(e.what()).find("gnuplot was not found on PATH"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("gnuplot-nox"), std::string::npos) << e.what();
    }
  }
  {
    ScopedEnv bad("SSMLAB_GNUPLOT", (dir / "nope").string());
    EXPECT_THROW(find_gnuplot(), ReportError);
  }
  EXPECT_FALSE(fs::exists(dir / "line.png"));
  fs::remove_all(dir);
}

TEST(ReportFigure, GnuplotFailureCarriesItsMessage) {
  const auto dir = fresh_dir("failing_gnuplot");
  const fs::path fake = dir / "fake-gnuplot";
  write_file_atomic(fake, "#!/bin/sh\necho 'line 7: undefined variable: boom' >&2\nexit 1\n");
  fs::permissions(fake, fs::perms::owner_all);
  ScopedEnv env("SSMLAB_GNUPLOT", fake.string());
  try {
    render_figure(line_spec(), dir, "line");
    ADD_FAILURE() << "a failing gnuplot did not fail the figure";
  } catch (const ReportError& e) {
    EXPECT_NE(std::string(e.what()).find("undefined variable: boom"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("line.gp"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "line.png"));
  fs::remove_all(dir);
}

}  // namespace

}  // namespace report_test_figure
