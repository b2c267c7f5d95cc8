#include "ssmlab/report/gnuplot.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <system_error>

#include "ssmlab/report/io.h"

namespace ssmlab::report {
namespace {

namespace fs = std::filesystem;

// tab10 then ten darker or stronger hues: distinct colours for series and runs (gnuplot's default palette repeats
// quickly and is hard to tell apart). A report gives run i colour i in every figure (group_color).
constexpr const char* kLineColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                                       "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#b8860b", "#637939", "#843c39",
                                       "#7b4173", "#00a087", "#000000", "#6b6ecf", "#e7969c", "#ff1493"};
constexpr size_t kColors = std::size(kLineColors);
// Open and filled point shapes of gnuplot's cairo terminals: circle, square, triangle up and down, diamond, pentagon.
constexpr int kOpenPoints[] = {6, 4, 8, 10, 12, 14};
constexpr int kFilledPoints[] = {7, 5, 9, 11, 13, 15};
constexpr const char* kGreyLine = "#8c8c8c";
// Viridis stops: the heatmap palette and the per-layer colours (dark = first layer, yellow = last).
constexpr double kViridis[][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};

std::string viridis(double t) {
  t = std::clamp(t, 0.0, 1.0) * 4.0;
  const int i = std::min(3, static_cast<int>(t));
  const double f = t - i;
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", static_cast<int>(std::lround(kViridis[i][0] * (1 - f) + kViridis[i + 1][0] * f)),
                static_cast<int>(std::lround(kViridis[i][1] * (1 - f) + kViridis[i + 1][1] * f)),
                static_cast<int>(std::lround(kViridis[i][2] * (1 - f) + kViridis[i + 1][2] * f)));
  return buf;
}

// A gnuplot single-quoted string literal (no escapes inside but '' for a quote).
std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "''";
    else if (c == '\n' || c == '\r' || c == '\t') out += ' ';
    else out += c;
  }
  return out + "'";
}

// A double-quoted field of the data file (bar categories); quotes inside become single quotes.
std::string data_label(const std::string& s) {
  std::string out = "\"";
  for (char c : s) out += (c == '"' || c == '\n' || c == '\r') ? '\'' : c;
  return out + "\"";
}

std::string num(double v) {
  if (!std::isfinite(v)) return "NaN";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

bool usable(double v, bool log_axis) { return std::isfinite(v) && (!log_axis || v > 0); }

std::string range(const std::optional<double>& lo, const std::optional<double>& hi) {
  std::string out = "[";
  out += lo ? num(*lo) : "*";
  out += ':';
  out += hi ? num(*hi) : "*";
  out += ']';
  return out;
}

// The series of a line/layers/histogram/cdf figure that still hold data once non-finite values and values a log
// axis cannot show are dropped, with the points to write for each.
struct Block {
  std::string name;
  std::vector<std::pair<double, double>> xy;
  std::vector<double> extra;  // histogram: the bins' right edges (xy holds (left edge, count))
  int group = -1;             // line, layers: the series' group (its colour) and its place in it (its dash)
  int member = 0;
  std::vector<int> point_groups;  // line: each point's colour, written as a third column (0xRRGGBB)
};

std::vector<Block> line_blocks(const FigureSpec& s) {
  std::vector<Block> out;
  std::map<int, int> members;  // group -> series seen so far
  for (const auto& ser : s.series) {
    Block b{ser.name, {}, {}, ser.group, ser.group >= 0 ? members[ser.group]++ : 0, {}};
    for (size_t i = 0; i < ser.y.size(); ++i) {
      const double x = ser.x.empty() ? static_cast<double>(i) : ser.x[i];
      if (!usable(x, s.logx) || !usable(ser.y[i], s.logy)) continue;
      b.xy.emplace_back(x, ser.y[i]);
      if (!ser.point_groups.empty()) b.point_groups.push_back(ser.point_groups[i]);
    }
    if (!b.xy.empty()) out.push_back(std::move(b));
  }
  return out;
}

std::vector<double> usable_values(const std::vector<double>& v, bool log_axis) {
  std::vector<double> out;
  for (double d : v)
    if (usable(d, log_axis)) out.push_back(d);
  return out;
}

std::vector<Block> cdf_blocks(const FigureSpec& s) {
  constexpr size_t kMaxPoints = 2000;  // quantiles beyond this add nothing visible
  std::vector<Block> out;
  for (const auto& ser : s.series) {
    std::vector<double> v = usable_values(ser.values, s.logx);
    if (v.empty()) continue;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    std::vector<std::pair<double, double>> steps;  // (value, fraction of samples <= value)
    for (size_t i = 0; i < n;) {
      size_t k = i;
      while (k + 1 < n && v[k + 1] == v[i]) ++k;  // ties jump once, to their last rank
      steps.emplace_back(v[i], static_cast<double>(k + 1) / static_cast<double>(n));
      i = k + 1;
    }
    Block b{ser.name, {{v[0], 0.0}}, {}};
    const size_t stride = std::max<size_t>(1, steps.size() / kMaxPoints);
    for (size_t i = 0; i < steps.size(); i += stride) b.xy.push_back(steps[i]);
    if ((steps.size() - 1) % stride != 0) b.xy.push_back(steps.back());
    out.push_back(std::move(b));
  }
  return out;
}

std::vector<Block> histogram_blocks(const FigureSpec& s, double* min_height) {
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& ser : s.series)
    for (double v : usable_values(ser.values, s.logx)) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  if (s.xmin) lo = std::max(lo, *s.xmin);
  if (s.xmax) hi = std::min(hi, *s.xmax);
  if (!(lo <= hi)) return {};
  if (lo == hi) {  // one distinct value: a bin of unit (or one-decade) width around it
    lo = s.logx ? lo / std::sqrt(10.0) : lo - 0.5;
    hi = s.logx ? hi * std::sqrt(10.0) : hi + 0.5;
  }
  const int nb = s.bins;
  auto edge = [&](int i) {
    const double t = static_cast<double>(i) / nb;
    return s.logx ? std::exp(std::log(lo) + t * (std::log(hi) - std::log(lo))) : lo + t * (hi - lo);
  };
  std::vector<Block> out;
  *min_height = INFINITY;
  for (const auto& ser : s.series) {
    const auto v = usable_values(ser.values, s.logx);
    if (v.empty()) continue;
    std::vector<double> counts(nb, 0.0);
    for (double d : v) {
      if (d < lo || d > hi) continue;
      const double t = s.logx ? (std::log(d) - std::log(lo)) / (std::log(hi) - std::log(lo)) : (d - lo) / (hi - lo);
      counts[std::clamp(static_cast<int>(t * nb), 0, nb - 1)] += 1.0;
    }
    Block b{ser.name, {}, {}};
    for (int i = 0; i < nb; ++i) {
      const double c = s.normalize ? counts[i] / static_cast<double>(v.size()) : counts[i];
      if (c > 0) *min_height = std::min(*min_height, c);
      b.xy.emplace_back(edge(i), c);
      b.extra.push_back(edge(i + 1));
    }
    out.push_back(std::move(b));
  }
  return out;
}

void write_blocks(std::ostringstream& os, const std::vector<Block>& blocks) {
  for (size_t k = 0; k < blocks.size(); ++k) {
    if (k > 0) os << "\n\n";
    os << "# " << blocks[k].name << "\n";
    for (size_t i = 0; i < blocks[k].xy.size(); ++i) {
      os << num(blocks[k].xy[i].first) << ' ' << num(blocks[k].xy[i].second);
      if (!blocks[k].extra.empty()) os << ' ' << num(blocks[k].extra[i]);
      if (!blocks[k].point_groups.empty())
        os << ' ' << std::stol(group_color(blocks[k].point_groups[i]).substr(1), nullptr, 16);
      os << '\n';
    }
  }
}

std::string heat_mid(const FigureSpec& s) {
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& row : s.z)
    for (double v : row)
      if (usable(v, s.logz)) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
  return num(s.logz ? std::sqrt(lo * hi) : 0.5 * (lo + hi));
}

std::string tics(const std::vector<std::string>& labels, size_t n) {
  std::string out = "(";
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) out += ", ";
    out += quote(i < labels.size() ? labels[i] : std::to_string(i)) + " " + std::to_string(i);
  }
  return out + ")";
}

// "10⁻⁵": the exponent in Unicode superscripts (the terminals run noenhanced, so labels print as written).
std::string power_of_ten(int e) {
  static const char* const kSup[] = {"⁰", "¹", "²", "³", "⁴", "⁵", "⁶", "⁷", "⁸", "⁹"};
  std::string digits = std::to_string(std::abs(e)), out = "10";
  if (e < 0) out += "⁻";
  for (char c : digits) out += kSup[c - '0'];
  return out;
}

// The label of m x 10^e on a log axis: plain between 0.001 and 1000, else with a power of ten.
std::string log_label(int m, int e) {
  if (e >= -3 && e <= 3) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", m * std::pow(10.0, e));
    return buf;
  }
  return m == 1 ? power_of_ten(e) : std::to_string(m) + "×" + power_of_ten(e);
}

// gnuplot's explicit tics (log_ticks) of a log axis over [lo, hi]; "" when fewer than two would be labelled (a
// narrow range within one decade: gnuplot's own tics then).
std::string log_tics(double lo, double hi) {
  const auto ticks = log_ticks(lo, hi);
  size_t labelled = 0;
  for (const auto& t : ticks) labelled += t.minor ? 0 : 1;
  if (labelled < 2) return "";
  std::string out = "(";
  for (const auto& t : ticks)
    out += (out.size() > 1 ? ", " : "") + quote(t.label) + " " + num(t.value) + (t.minor ? " 1" : "");
  return out + ")";
}

// The range and tics of a log axis ("x", "y"): the spec's bounds, else the data's extent [dlo, dhi] widened by 4% of
// its span in log terms (not gnuplot's whole decades, which can leave most of a plot empty).
void log_axis(std::ostringstream& g, const char* axis, const std::optional<double>& smin,
              const std::optional<double>& smax, double dlo, double dhi) {
  double lo = smin ? *smin : dlo, hi = smax ? *smax : dhi;
  if (!(lo > 0) || !std::isfinite(lo) || !std::isfinite(hi)) {
    g << "set " << axis << "range " << range(smin, smax) << "\n";
    return;
  }
  if (!(hi > lo)) {  // one value: a decade around it
    if (!smin) lo /= std::sqrt(10.0);
    if (!smax) hi = std::max(hi, lo) * (smin ? 10.0 : std::sqrt(10.0));
    if (!(hi > lo)) hi = lo * 10;
  }
  const double pad = std::pow(hi / lo, 0.04);
  if (!smin) lo /= pad;
  if (!smax) hi *= pad;
  g << "set " << axis << "range [" << num(lo) << ":" << num(hi) << "]\n";
  if (const std::string t = log_tics(lo, hi); !t.empty()) g << "set " << axis << "tics " << t << "\n";
}

// The smallest and largest x and y of blocks (x of histogram blocks: their bins' edges).
struct Extent {
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
};
Extent extent(const std::vector<Block>& blocks) {
  Extent e;
  for (const auto& b : blocks) {
    for (size_t i = 0; i < b.xy.size(); ++i) {
      const auto [x, y] = b.xy[i];
      e.xlo = std::min(e.xlo, x);
      e.xhi = std::max(e.xhi, i < b.extra.size() ? b.extra[i] : x);
      if (y > 0) {  // what a log y axis can show
        e.ylo = std::min(e.ylo, y);
        e.yhi = std::max(e.yhi, y);
      }
    }
  }
  return e;
}

}  // namespace

std::vector<AxisTick> log_ticks(double lo, double hi) {
  std::vector<AxisTick> out;
  if (!(lo > 0) || !(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) return out;
  const double span = std::log10(hi / lo);
  const int e0 = static_cast<int>(std::floor(std::log10(lo))), e1 = static_cast<int>(std::ceil(std::log10(hi)));
  const int every = std::max(1, (e1 - e0 + 11) / 12);
  for (int e = e0; e <= e1; ++e) {
    for (int m = 1; m <= 9; ++m) {
      const double v = m * std::pow(10.0, e);
      if (v < lo * (1 - 1e-9) || v > hi * (1 + 1e-9)) continue;
      const bool major = m == 1 ? (e % every == 0) : (span < 1.0 || (span < 2.5 && (m == 2 || m == 5)));
      if (major) out.push_back({v, log_label(m, e), false});
      else if (e1 - e0 <= 10) out.push_back({v, "", true});
    }
  }
  return out;
}

std::string group_color(int group) { return kLineColors[static_cast<size_t>(std::max(group, 0)) % kColors]; }

fs::path find_gnuplot() {
  auto executable = [](const fs::path& p) { return ::access(p.c_str(), X_OK) == 0 && !fs::is_directory(p); };
  if (const char* env = std::getenv("SSMLAB_GNUPLOT"); env && *env) {
    if (!executable(env))
      report_fail("SSMLAB_GNUPLOT is '", env, "', which is not an executable file; reports draw their figures with "
                  "gnuplot (scripts/setup.sh installs gnuplot-nox)");
    return env;
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = dirs.find(':', start);
    const std::string dir = dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!dir.empty() && executable(fs::path(dir) / "gnuplot")) return fs::path(dir) / "gnuplot";
    if (end == std::string::npos) break;
    start = end + 1;
  }
  report_fail("gnuplot was not found on PATH: ssmlab report draws its figures with gnuplot and will not skip "
              "them. Install it (scripts/setup.sh does: apt-get install gnuplot-nox) or point SSMLAB_GNUPLOT at it");
}

std::string gnuplot_data(const FigureSpec& s) {
  std::ostringstream os;
  os << "# data of the ssmlab figure '" << s.title << "' (" << kind_name(s.kind) << ")\n";
  switch (s.kind) {
    case FigureKind::line:
    case FigureKind::layers: write_blocks(os, line_blocks(s)); break;
    case FigureKind::cdf: write_blocks(os, cdf_blocks(s)); break;
    case FigureKind::histogram: {
      double min_height = 0;
      os << "# left edge, count" << (s.normalize ? " (fraction)" : "") << ", right edge\n";
      write_blocks(os, histogram_blocks(s, &min_height));
      break;
    }
    case FigureKind::bars:
      os << "# category";
      for (const auto& ser : s.series) os << " | " << ser.name;
      os << "\n";
      for (size_t c = 0; c < s.categories.size(); ++c) {
        os << data_label(s.categories[c]);
        for (const auto& ser : s.series) os << ' ' << (usable(ser.y[c], s.logy) ? num(ser.y[c]) : "NaN");
        os << '\n';
      }
      break;
    case FigureKind::heatmap:
      os << "# column row value drawn(1/0: a missing cell gets no text)\n";
      for (size_t r = 0; r < s.z.size(); ++r) {
        for (size_t c = 0; c < s.z[r].size(); ++c) {
          const bool ok = usable(s.z[r][c], s.logz);
          os << c << ' ' << r << ' ' << (ok ? num(s.z[r][c]) : "NaN") << ' ' << (ok ? 1 : 0) << '\n';
        }
        os << '\n';
      }
      break;
  }
  return os.str();
}

std::string gnuplot_script(const FigureSpec& s, const std::string& stem, const std::string& data_name) {
  std::ostringstream g;
  g << "# ssmlab figure (" << kind_name(s.kind) << "): " << s.title << "\n"
    << "# Redraw by hand in this folder: gnuplot " << stem << ".gp  (writes " << stem << ".png and " << stem
    << ".svg)\n"
    << "if (!exists('png_out')) png_out = " << quote(stem + ".png") << "\n"
    << "if (!exists('svg_out')) svg_out = " << quote(stem + ".svg") << "\n"
    << "data = " << quote(data_name) << "\n"
    << "set encoding utf8\n"
    << "set title " << quote(s.title) << "\n"
    << "set xlabel " << quote(s.xlabel) << "\n"
    << "set ylabel " << quote(s.ylabel) << "\n"
    << "set border 3\nset tics nomirror\n"
    << "set style line 100 lc rgb '#e4e4e4' lw 1 dt 1\nset grid xtics ytics ls 100\n";
  for (size_t i = 0; i < kColors; ++i)
    g << "set linetype " << i + 1 << " lc rgb '" << kLineColors[i] << "' lw 2 pt 7 ps 0.6\n";
  g << "set linetype cycle " << kColors << "\n";
  if (s.logx) g << "set logscale x 10\n";
  if (s.logy) g << "set logscale y 10\n";
  // The key: inside for one series, right of the plot for a few short names, else below it, the canvas growing by
  // its rows so the plot keeps its height. Names are cut to kMaxKeyName characters.
  constexpr size_t kMaxKeyName = 72;
  const size_t n_series = s.series.size();
  size_t longest_name = 0;
  for (const auto& ser : s.series) longest_name = std::max(longest_name, std::min(ser.name.size(), kMaxKeyName));
  int height = s.height;
  if (n_series <= 1) {
    g << "set key top right opaque noautotitle\n";
  } else if (longest_name > 24 || n_series > 12) {
    const size_t column = longest_name * 7 + 60, columns = std::max<size_t>(1, (s.width - 40) / column);
    const size_t rows = (n_series + columns - 1) / columns;
    height += static_cast<int>(rows * 17 + 8);
    g << "set key below left Left reverse maxcols " << columns << " noautotitle\n";
  } else {
    g << "set key outside right top noautotitle\n";
  }
  auto key_name = [&](const std::string& name) {
    if (name.size() <= kMaxKeyName) return quote(name);
    size_t cut = kMaxKeyName - 3;
    while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 character
    return quote(name.substr(0, cut) + "...");
  };
  std::string yr = range(s.ymin, s.ymax);
  std::ostringstream plot;
  switch (s.kind) {
    case FigureKind::line:
    case FigureKind::layers: {
      const auto blocks = line_blocks(s);
      if (blocks.empty()) report_fail("figure '", s.title, "': no point can be drawn (all are non-finite or not "
                                      "positive on a log axis)");
      size_t points = 0;
      for (const auto& b : blocks) points = std::max(points, b.xy.size());
      const std::string style = !s.style.empty() ? s.style : (points <= 60 ? "linespoints" : "lines");
      const Extent e = extent(blocks);
      if (s.logx) log_axis(g, "x", s.xmin, s.xmax, e.xlo, e.xhi);
      else g << "set xrange " << range(s.xmin, s.xmax) << "\n";
      if (s.logy) log_axis(g, "y", s.ymin, s.ymax, e.ylo, e.yhi);
      else g << "set yrange " << yr << "\n";
      plot << "plot ";
      for (size_t k = 0; k < blocks.size(); ++k) {
        const Block& b = blocks[k];
        plot << (k ? ", \\\n     '' " : "data ") << "index " << k << " using 1:2 with ";
        if (!b.point_groups.empty()) {  // a grey line with a shape of its own, its points in their groups' colours
          plot << "linespoints lc rgb '" << kGreyLine << "' lw 1.5 dt " << k % 5 + 1 << " pt "
               << kOpenPoints[k % std::size(kOpenPoints)] << " ps 1.9 title " << key_name(b.name)
               << ", \\\n     '' index " << k << " using 1:2:3 with points pt "
               << kFilledPoints[k % std::size(kFilledPoints)] << " ps 1.2 lc rgb variable notitle";
          continue;
        }
        plot << style;
        if (b.group >= 0)  // a group's colour; its members (and groups past the palette) by dash
          plot << " lc rgb '" << group_color(b.group) << "' dt "
               << (b.member + static_cast<int>(static_cast<size_t>(b.group) / kColors)) % 5 + 1;
        else if (s.kind == FigureKind::layers)
          plot << " lc rgb '" << viridis(blocks.size() > 1 ? static_cast<double>(k) / (blocks.size() - 1) : 0.0) << "'";
        plot << " title " << key_name(b.name);
      }
      break;
    }
    case FigureKind::cdf: {
      const auto blocks = cdf_blocks(s);
      if (blocks.empty()) report_fail("figure '", s.title, "': no sample can be drawn");
      const Extent e = extent(blocks);
      if (s.logx) log_axis(g, "x", s.xmin, s.xmax, e.xlo, e.xhi);
      else g << "set xrange " << range(s.xmin, s.xmax) << "\n";
      if (!s.ymin && !s.ymax && !s.logy) yr = "[0:1.02]";
      if (s.logy) log_axis(g, "y", s.ymin, s.ymax, e.ylo, e.yhi);
      else g << "set yrange " << yr << "\n";
      plot << "plot ";
      for (size_t k = 0; k < blocks.size(); ++k)
        plot << (k ? ", \\\n     '' " : "data ") << "index " << k << " using 1:2 with steps title "
             << key_name(blocks[k].name);
      break;
    }
    case FigureKind::histogram: {
      double min_height = 1.0;
      const auto blocks = histogram_blocks(s, &min_height);
      if (blocks.empty()) report_fail("figure '", s.title, "': no sample can be drawn");
      const std::string base = s.logy ? num(std::isfinite(min_height) ? min_height / 2 : 0.5) : "0";
      const Extent e = extent(blocks);
      if (s.logx) log_axis(g, "x", s.xmin, s.xmax, e.xlo, e.xhi);
      else g << "set xrange " << range(s.xmin, s.xmax) << "\n";
      if (!s.ymin && !s.logy) yr = "[0:" + (s.ymax ? num(*s.ymax) : std::string("*")) + "]";
      if (s.logy) log_axis(g, "y", s.ymin ? s.ymin : std::optional<double>(std::stod(base)), s.ymax, e.ylo, e.yhi);
      else g << "set yrange " << yr << "\n";
      g << "set style fill transparent solid 0.45 border\n";
      plot << "plot ";
      for (size_t k = 0; k < blocks.size(); ++k)
        plot << (k ? ", \\\n     '' " : "data ") << "index " << k << " using (($1+$3)/2):2:1:3:(" << base
             << "):($2 > 0 ? $2 : " << base << ") with boxxyerror title " << key_name(blocks[k].name);
      break;
    }
    case FigureKind::bars: {
      bool negative = false;
      size_t longest = 0;
      for (const auto& ser : s.series)
        for (double v : ser.y) negative = negative || v < 0;
      for (const auto& c : s.categories) longest = std::max(longest, c.size());
      if (!s.ymin && !s.logy && !negative) yr = "[0:" + (s.ymax ? num(*s.ymax) : std::string("*")) + "]";
      if (s.logy) {
        double lo = INFINITY, hi = -INFINITY;
        for (const auto& ser : s.series)
          for (double v : ser.y)
            if (usable(v, true)) lo = std::min(lo, v), hi = std::max(hi, v);
        log_axis(g, "y", s.ymin, s.ymax, lo, hi);
      } else {
        g << "set yrange " << yr << "\n";
      }
      g << "set style data histograms\nset style histogram clustered gap 1\n"
        << "set style fill solid 0.85 border -1\nset boxwidth 0.9\nset xtics scale 0\n";
      if (s.categories.size() * longest > 60) g << "set xtics rotate by -30\n";
      g << "set grid noxtics\n";
      plot << "plot ";
      for (size_t k = 0; k < s.series.size(); ++k)
        plot << (k ? ", \\\n     '' " : "data ") << "using " << k + 2 << (k == 0 ? ":xtic(1)" : "") << " title "
             << key_name(s.series[k].name);
      break;
    }
    case FigureKind::heatmap: {
      const size_t nr = s.z.size(), nc = s.z[0].size();
      g << "set xrange [-0.5:" << nc - 0.5 << "]\nset yrange [-0.5:" << nr - 0.5 << "]\n"
        << "set xtics " << tics(s.columns, nc) << "\nset ytics " << tics(s.rows, nr) << "\n"
        << "set tics scale 0\nunset grid\nset border 15\n"
        << "set cblabel " << quote(s.zlabel) << "\n"
        << "unset key\n";
      if (s.palette == "rdylgn")  // ColorBrewer RdYlGn: red (low) through yellow to green (high)
        g << "set palette defined (0 '#d73027', 1 '#fc8d59', 2 '#fee08b', 3 '#d9ef8b', 4 '#91cf60', 5 '#1a9850')\n";
      else
        g << "set palette defined (0 '" << viridis(0) << "', 1 '" << viridis(0.25) << "', 2 '" << viridis(0.5)
          << "', 3 '" << viridis(0.75) << "', 4 '" << viridis(1) << "')\n";
      if (s.zmin || s.zmax)
        g << "set cbrange [" << (s.zmin ? num(*s.zmin) : std::string("*")) << ":"
          << (s.zmax ? num(*s.zmax) : std::string("*")) << "]\n";
      if (s.logz) g << "set logscale cb 10\nset mcbtics 10\n";
      if (nc > 8) g << "set xtics rotate by -45\n";
      plot << "plot data using 1:2:3 with image";
      if (s.print_values && nr * nc <= 400) {
        // rdylgn is light in the middle and mid-dark at both ends: black text reads on every cell.
        const std::string mid = s.palette == "rdylgn" ? "-1e308" : heat_mid(s), fmt = quote(s.format);
        // Dark cells get white text, light cells black (viridis runs dark to light).
        plot << ", \\\n     '' using 1:2:(($4 > 0 && $3 < " << mid << ") ? sprintf(" << fmt
             << ", $3) : '') with labels tc rgb '#ffffff' font ',9'"
             << ", \\\n     '' using 1:2:(($4 > 0 && $3 >= " << mid << ") ? sprintf(" << fmt
             << ", $3) : '') with labels tc rgb '#000000' font ',9'";
      }
      break;
    }
  }
  const std::string size = std::to_string(s.width) + "," + std::to_string(height);
  g << "set terminal pngcairo noenhanced size " << size << " font 'Sans,10'\n"
    << "set output png_out\n"
    << plot.str() << "\n"
    << "set terminal svg noenhanced size " << size << " font 'Sans,10' background rgb 'white'\n"
    << "set output svg_out\n"
    << "replot\n"
    << "unset output\n";
  return g.str();
}

RenderedFigure render_figure(const FigureSpec& spec, const fs::path& dir, const std::string& stem) {
  validate(spec, (dir / stem).string());
  const fs::path gnuplot = find_gnuplot();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) report_fail("cannot create folder '", dir.string(), "': ", ec.message());
  RenderedFigure out{dir / (stem + ".png"), dir / (stem + ".svg"), dir / (stem + ".gp"), dir / (stem + ".dat")};
  write_file_atomic(out.data, gnuplot_data(spec));
  write_file_atomic(out.script, gnuplot_script(spec, stem, stem + ".dat"));

  const std::string suffix = ".tmp." + std::to_string(::getpid());
  const std::string png_tmp = stem + ".png" + suffix, svg_tmp = stem + ".svg" + suffix;
  const std::string vars = "png_out=" + quote(png_tmp) + "; svg_out=" + quote(svg_tmp);
  const std::string script_name = stem + ".gp";
  int pipe_fd[2];
  if (::pipe2(pipe_fd, O_CLOEXEC) != 0) report_fail("cannot run gnuplot: pipe: ", std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) report_fail("cannot run gnuplot: fork: ", std::strerror(errno));
  if (pid == 0) {  // child: only async-signal-safe calls until exec
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, 0);
    ::dup2(pipe_fd[1], 1);
    ::dup2(pipe_fd[1], 2);
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    const char* argv[] = {"gnuplot", "-e", vars.c_str(), script_name.c_str(), nullptr};
    ::execv(gnuplot.c_str(), const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(pipe_fd[1]);
  std::string messages;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(pipe_fd[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    messages.append(buf, static_cast<size_t>(n));
  }
  ::close(pipe_fd[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  const fs::path png_tmp_path = dir / png_tmp, svg_tmp_path = dir / svg_tmp;
  const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && fs::file_size(png_tmp_path, ec) > 0 &&
                  fs::file_size(svg_tmp_path, ec) > 0;
  if (!ok) {
    fs::remove(png_tmp_path, ec);
    fs::remove(svg_tmp_path, ec);
    if (messages.size() > 2000) messages = "..." + messages.substr(messages.size() - 2000);
    std::string how = WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status)) : "killed by a signal";
    if (WIFEXITED(status) && WEXITSTATUS(status) == 126) how = "cannot enter the folder";
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) how = "cannot execute " + gnuplot.string();
    report_fail("gnuplot failed on '", out.script.string(), "' (", how, "): ",
                messages.empty() ? std::string("no output, or no PNG/SVG written") : messages);
  }
  rename_into_place(png_tmp_path, out.png);
  rename_into_place(svg_tmp_path, out.svg);
  return out;
}

}  // namespace ssmlab::report
