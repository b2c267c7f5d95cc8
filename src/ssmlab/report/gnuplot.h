// Draws a FigureSpec with gnuplot: <stem>.dat (the data) and <stem>.gp (the script) are kept beside
// <stem>.png and <stem>.svg, so `gnuplot <stem>.gp` in that folder redraws both by hand.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "ssmlab/report/figure.h"

namespace ssmlab::report {

// The gnuplot program: $SSMLAB_GNUPLOT if set, else `gnuplot` on PATH. Throws ReportError saying how to install
// it when neither is an executable file (a report never skips its figures silently).
std::filesystem::path find_gnuplot();

// "#1f77b4": the colour of a series' group (Series::group, point_groups). A report draws run i in group i, so a run
// has one colour in every figure and the results table shows the same colour beside it. Twenty colours, then again
// (those lines told apart by dash).
std::string group_color(int group);

// A tick of a log axis: at each decade a labelled major tick ("0.01", "1", "10⁵"; every k-th decade when the
// axis spans more than a dozen); the other multiples 2..9 of each decade as unlabelled minor ticks (up to ten
// decades). Over fewer than 2.5 decades 2x and 5x are labelled too, within one decade every multiple.
struct AxisTick {
  double value;
  std::string label;  // "" for a minor tick
  bool minor;
};
// The ticks of a log axis over [lo, hi] in increasing order; none unless 0 < lo < hi (finite).
std::vector<AxisTick> log_ticks(double lo, double hi);

struct RenderedFigure {
  std::filesystem::path png, svg, script, data;  // all inside the output folder
};

// The gnuplot script for `spec` reading `data_name`; its outputs default to <stem>.png and <stem>.svg and
// are overridden by the variables png_out and svg_out (gnuplot -e).
std::string gnuplot_script(const FigureSpec& spec, const std::string& stem, const std::string& data_name);
// The data file `gnuplot_script` reads.
std::string gnuplot_data(const FigureSpec& spec);

// Validates `spec`, writes <dir>/<stem>.{dat,gp} and runs gnuplot there; PNG and SVG are written to temp names
// and renamed into place once both exist. Throws ReportError with gnuplot's own message on failure.
RenderedFigure render_figure(const FigureSpec& spec, const std::filesystem::path& dir, const std::string& stem);

}  // namespace ssmlab::report
