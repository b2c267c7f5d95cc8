// Heatmap colour options of figure specs (report/figure.h): `palette` rdylgn (the passkey heatmap's red-yellow-green,
// spec §3.4) and a fixed colour range zmin/zmax reach the gnuplot script and survive the JSON round trip; viridis
// stays the default; an unknown palette or an empty range is a ReportError naming it.
#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "ssmlab/report/figure.h"
#include "ssmlab/report/gnuplot.h"
#include "ssmlab/report/io.h"

namespace report_test_heatmap_palette {

namespace {

using namespace ssmlab::report;
using nlohmann::json;

json heat(const std::string& palette) {
  json j = {{"kind", "heatmap"}, {"columns", {"128", "256"}}, {"rows", {"0.0-0.5", "0.5-1.0"}},
            {"z", {{1.0, 0.5}, {0.0, 0.25}}}};
  if (!palette.empty()) j["palette"] = palette;
  return j;
}

TEST(HeatmapPalette, RdYlGnAndAFixedRangeReachTheScript) {
  json j = heat("rdylgn");
  j["zmin"] = 0.0;
  j["zmax"] = 1.0;
  const FigureSpec s = figure_from_json(j, ".", "passkey.json");
  EXPECT_EQ(s.palette, "rdylgn");
  const std::string gp = gnuplot_script(s, "passkey", "passkey.dat");
  EXPECT_NE(gp.find("'#d73027'"), std::string::npos) << gp;  // red at 0
  EXPECT_NE(gp.find("'#1a9850'"), std::string::npos) << gp;  // green at 1
  EXPECT_NE(gp.find("set cbrange [0:1]"), std::string::npos) << gp;
  const json back = figure_to_json(s);
  EXPECT_EQ(back["palette"], "rdylgn");
  EXPECT_EQ(back["zmin"], 0.0);
  EXPECT_EQ(back["zmax"], 1.0);

  const FigureSpec v = figure_from_json(heat(""), ".", "x.json");
  EXPECT_EQ(v.palette, "viridis");
  const std::string gv = gnuplot_script(v, "x", "x.dat");
  EXPECT_EQ(gv.find("'#d73027'"), std::string::npos);
  EXPECT_EQ(gv.find("set cbrange"), std::string::npos);
}

TEST(HeatmapPalette, UnknownPaletteOrEmptyRangeIsAnError) {
  try {
    figure_from_json(heat("jet"), ".", "bad.json");
    ADD_FAILURE() << "palette jet accepted";
  } catch (const ReportError& e) {
    EXPECT_NE(std::string(e.what()).find("palette 'jet'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
  }
  json j = heat("rdylgn");
  j["zmin"] = 1.0;
  j["zmax"] = 1.0;
  EXPECT_THROW(figure_from_json(j, ".", "range.json"), ReportError);
}

}  // namespace

}  // namespace report_test_heatmap_palette
