#include "ssmlab/report/figure.h"

#include <cmath>
#include <cstdlib>
#include <set>
#include <sstream>

#include "ssmlab/report/io.h"

namespace ssmlab::report {
namespace {

using nlohmann::json;

constexpr FigureKind kKinds[] = {FigureKind::line, FigureKind::layers, FigureKind::heatmap,
                                 FigureKind::bars, FigureKind::histogram, FigureKind::cdf};

double number(const json& v, const std::string& where, const std::string& key) {
  if (v.is_null()) return NAN;
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "NaN" || s == "nan") return NAN;
  }
  report_fail(where, ": '", key, "' holds ", v.dump(), " where a number (or null for a missing value) belongs");
}

std::vector<double> numbers(const json& v, const std::string& where, const std::string& key) {
  if (!v.is_array()) report_fail(where, ": '", key, "' must be an array of numbers, not ", v.type_name());
  std::vector<double> out;
  out.reserve(v.size());
  for (const auto& e : v) out.push_back(number(e, where, key));
  return out;
}

std::vector<std::string> strings(const json& v, const std::string& where, const std::string& key) {
  if (!v.is_array()) report_fail(where, ": '", key, "' must be an array of strings, not ", v.type_name());
  std::vector<std::string> out;
  for (const auto& e : v) out.push_back(e.is_string() ? e.get<std::string>() : e.dump());
  return out;
}

template <class T>
T typed(const json& v, const std::string& where, const std::string& key, const char* expected) {
  try {
    return v.get<T>();
  } catch (const json::exception&) {
    report_fail(where, ": '", key, "' must be ", expected, ", not ", v.dump());
  }
}

json nullable(const std::vector<double>& v) {
  json a = json::array();
  for (double d : v) a.push_back(std::isfinite(d) ? json(d) : json(nullptr));
  return a;
}

// Splits one CSV line on commas; double-quoted fields may hold commas ("" is a literal quote).
std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cur += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cur += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else if (c != '\r') {
      cur += c;
    }
  }
  out.push_back(cur);
  for (auto& s : out) {
    const auto b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
    s = b == std::string::npos ? "" : s.substr(b, e - b + 1);
  }
  return out;
}

double csv_number(const std::string& cell, const std::string& where, size_t line, size_t col) {
  if (cell.empty() || cell == "NaN" || cell == "nan" || cell == "null") return NAN;
  char* end = nullptr;
  const double v = std::strtod(cell.c_str(), &end);
  if (end == cell.c_str() || *end != '\0')
    report_fail(where, ":", line, ": column ", col + 1, " holds '", cell, "' where a number belongs");
  return v;
}

}  // namespace

const char* kind_name(FigureKind kind) {
  switch (kind) {
    case FigureKind::line: return "line";
    case FigureKind::layers: return "layers";
    case FigureKind::heatmap: return "heatmap";
    case FigureKind::bars: return "bars";
    case FigureKind::histogram: return "histogram";
    case FigureKind::cdf: return "cdf";
  }
  return "?";
}

FigureKind parse_kind(const std::string& name) {
  for (FigureKind k : kKinds)
    if (name == kind_name(k)) return k;
  report_fail("unknown figure kind '", name, "' (expected line, layers, heatmap, bars, histogram or cdf)");
}

void validate(const FigureSpec& s, const std::string& where) {
  const std::string what = where + " (" + kind_name(s.kind) + " figure '" + s.title + "')";
  if (s.width < 64 || s.height < 64 || s.width > 8000 || s.height > 8000)
    report_fail(what, ": width and height must be 64..8000 pixels, not ", s.width, " x ", s.height);
  if (s.xmin && s.xmax && !(*s.xmin < *s.xmax)) report_fail(what, ": xmin ", *s.xmin, " is not below xmax ", *s.xmax);
  if (s.ymin && s.ymax && !(*s.ymin < *s.ymax)) report_fail(what, ": ymin ", *s.ymin, " is not below ymax ", *s.ymax);
  if ((s.logx && s.xmin && *s.xmin <= 0) || (s.logy && s.ymin && *s.ymin <= 0))
    report_fail(what, ": a log axis needs a positive minimum");
  auto finite_count = [](const std::vector<double>& v) {
    size_t n = 0;
    for (double d : v) n += std::isfinite(d) ? 1 : 0;
    return n;
  };
  switch (s.kind) {
    case FigureKind::line:
    case FigureKind::layers: {
      if (s.series.empty()) report_fail(what, ": no series");
      size_t points = 0;
      for (const auto& ser : s.series) {
        if (!ser.x.empty() && ser.x.size() != ser.y.size())
          report_fail(what, ": series '", ser.name, "' has ", ser.x.size(), " x values but ", ser.y.size(), " y values");
        if (!ser.point_groups.empty() && ser.point_groups.size() != ser.y.size())
          report_fail(what, ": series '", ser.name, "' has ", ser.point_groups.size(), " point_groups for ",
                      ser.y.size(), " y values");
        for (int g : ser.point_groups)
          if (g < 0) report_fail(what, ": series '", ser.name, "' has a negative point group ", g);
        points += finite_count(ser.y);
      }
      if (points == 0) report_fail(what, ": no finite y value in any series");
      if (!s.style.empty() && s.style != "lines" && s.style != "linespoints" && s.style != "points")
        report_fail(what, ": style '", s.style, "' (expected lines, linespoints or points)");
      break;
    }
    case FigureKind::bars: {
      if (s.categories.empty()) report_fail(what, ": no categories");
      if (s.series.empty()) report_fail(what, ": no series");
      for (const auto& ser : s.series)
        if (ser.y.size() != s.categories.size())
          report_fail(what, ": series '", ser.name, "' has ", ser.y.size(), " values for ", s.categories.size(),
                      " categories");
      break;
    }
    case FigureKind::heatmap: {
      if (s.z.empty() || s.z[0].empty()) report_fail(what, ": z is empty");
      if (!s.rows.empty() && s.rows.size() != s.z.size())
        report_fail(what, ": ", s.rows.size(), " row labels for ", s.z.size(), " rows of z");
      for (size_t r = 0; r < s.z.size(); ++r) {
        if (s.z[r].size() != s.z[0].size())
          report_fail(what, ": z row ", r, " has ", s.z[r].size(), " values, row 0 has ", s.z[0].size());
      }
      if (!s.columns.empty() && s.columns.size() != s.z[0].size())
        report_fail(what, ": ", s.columns.size(), " column labels for ", s.z[0].size(), " columns of z");
      size_t finite = 0;
      for (const auto& row : s.z) finite += finite_count(row);
      if (finite == 0) report_fail(what, ": no finite value in z");
      if (s.format.find('%') == std::string::npos || s.format.find('\'') != std::string::npos)
        report_fail(what, ": format '", s.format, "' must be one printf conversion such as %.2f");
      if (s.palette != "viridis" && s.palette != "rdylgn")
        report_fail(what, ": palette '", s.palette, "' is not one of viridis, rdylgn");
      if (s.zmin && s.zmax && !(*s.zmin < *s.zmax))
        report_fail(what, ": zmin ", *s.zmin, " must be below zmax ", *s.zmax);
      break;
    }
    case FigureKind::histogram:
    case FigureKind::cdf: {
      if (s.series.empty()) report_fail(what, ": no series");
      size_t n = 0;
      for (const auto& ser : s.series) n += finite_count(ser.values);
      if (n == 0) report_fail(what, ": no finite sample in any series");
      if (s.bins < 1 || s.bins > 10000) report_fail(what, ": bins must be 1..10000, not ", s.bins);
      break;
    }
  }
}

FigureSpec figure_from_json(const json& j, const std::filesystem::path& base_dir, const std::string& where) {
  if (!j.is_object()) report_fail(where, ": a figure spec must be a JSON object, not ", j.type_name());
  static const std::set<std::string> known = {
      "kind",  "title",   "xlabel", "ylabel", "zlabel",       "caption", "logx",      "logy",   "logz",  "xmin",
      "xmax",  "ymin",    "ymax",   "series", "categories",   "columns", "rows",      "z",      "print_values",
      "format", "bins",   "normalize", "style", "width",      "height",  "data",      "zmin",   "zmax",
      "palette"};
  for (const auto& [k, v] : j.items())
    if (!known.count(k)) report_fail(where, ": unknown key '", k, "' in the figure spec");
  FigureSpec s;
  if (!j.contains("kind")) report_fail(where, ": the figure spec has no 'kind'");
  try {
    s.kind = parse_kind(typed<std::string>(j["kind"], where, "kind", "a string"));
  } catch (const ReportError& e) {
    report_fail(where, ": ", e.what());
  }
  auto str = [&](const char* key, std::string& out) {
    if (j.contains(key)) out = typed<std::string>(j[key], where, key, "a string");
  };
  auto flag = [&](const char* key, bool& out) {
    if (j.contains(key)) out = typed<bool>(j[key], where, key, "true or false");
  };
  auto opt = [&](const char* key, std::optional<double>& out) {
    if (j.contains(key) && !j[key].is_null()) out = number(j[key], where, key);
  };
  auto integer = [&](const char* key, int& out) {
    if (j.contains(key)) out = typed<int>(j[key], where, key, "an integer");
  };
  str("title", s.title);
  str("xlabel", s.xlabel);
  str("ylabel", s.ylabel);
  str("zlabel", s.zlabel);
  str("caption", s.caption);
  str("format", s.format);
  str("style", s.style);
  str("palette", s.palette);
  flag("logx", s.logx);
  flag("logy", s.logy);
  flag("logz", s.logz);
  flag("print_values", s.print_values);
  flag("normalize", s.normalize);
  opt("xmin", s.xmin);
  opt("xmax", s.xmax);
  opt("ymin", s.ymin);
  opt("ymax", s.ymax);
  opt("zmin", s.zmin);
  opt("zmax", s.zmax);
  integer("bins", s.bins);
  integer("width", s.width);
  integer("height", s.height);
  if (j.contains("categories")) s.categories = strings(j["categories"], where, "categories");
  if (j.contains("columns")) s.columns = strings(j["columns"], where, "columns");
  if (j.contains("rows")) s.rows = strings(j["rows"], where, "rows");
  if (j.contains("z")) {
    if (!j["z"].is_array()) report_fail(where, ": 'z' must be an array of rows");
    for (const auto& row : j["z"]) s.z.push_back(numbers(row, where, "z"));
  }
  if (j.contains("series")) {
    if (!j["series"].is_array()) report_fail(where, ": 'series' must be an array of objects");
    for (const auto& js : j["series"]) {
      if (!js.is_object()) report_fail(where, ": each entry of 'series' must be an object");
      Series ser;
      for (const auto& [k, v] : js.items()) {
        if (k == "name") ser.name = typed<std::string>(v, where, "series.name", "a string");
        else if (k == "x") ser.x = numbers(v, where, "series.x");
        else if (k == "y") ser.y = numbers(v, where, "series.y");
        else if (k == "values") ser.values = numbers(v, where, "series.values");
        else if (k == "group") ser.group = typed<int>(v, where, "series.group", "an integer");
        else if (k == "point_groups") ser.point_groups = typed<std::vector<int>>(v, where, "series.point_groups",
                                                                                "an array of integers");
        else report_fail(where, ": unknown key '", k, "' in a series (expected name, x, y, values, group, point_groups)");
      }
      s.series.push_back(std::move(ser));
    }
  }
  if (j.contains("data")) {
    const auto file = base_dir / typed<std::string>(j["data"], where, "data", "a CSV file name");
    fill_from_csv(s, file);
  }
  validate(s, where);
  return s;
}

json figure_to_json(const FigureSpec& s) {
  json j = {{"kind", kind_name(s.kind)}, {"title", s.title}, {"xlabel", s.xlabel}, {"ylabel", s.ylabel},
            {"logx", s.logx},           {"logy", s.logy},    {"width", s.width},   {"height", s.height}};
  if (!s.zlabel.empty()) j["zlabel"] = s.zlabel;
  if (!s.caption.empty()) j["caption"] = s.caption;
  if (!s.style.empty()) j["style"] = s.style;
  if (s.xmin) j["xmin"] = *s.xmin;
  if (s.xmax) j["xmax"] = *s.xmax;
  if (s.ymin) j["ymin"] = *s.ymin;
  if (s.ymax) j["ymax"] = *s.ymax;
  if (!s.series.empty()) {
    j["series"] = json::array();
    for (const auto& ser : s.series) {
      json js = {{"name", ser.name}};
      if (!ser.x.empty()) js["x"] = nullable(ser.x);
      if (!ser.y.empty()) js["y"] = nullable(ser.y);
      if (!ser.values.empty()) js["values"] = nullable(ser.values);
      if (ser.group >= 0) js["group"] = ser.group;
      if (!ser.point_groups.empty()) js["point_groups"] = ser.point_groups;
      j["series"].push_back(js);
    }
  }
  if (s.kind == FigureKind::bars) j["categories"] = s.categories;
  if (s.kind == FigureKind::heatmap) {
    j["columns"] = s.columns;
    j["rows"] = s.rows;
    j["z"] = json::array();
    for (const auto& row : s.z) j["z"].push_back(nullable(row));
    j["print_values"] = s.print_values;
    j["format"] = s.format;
    j["logz"] = s.logz;
    j["palette"] = s.palette;
    if (s.zmin) j["zmin"] = *s.zmin;
    if (s.zmax) j["zmax"] = *s.zmax;
  }
  if (s.kind == FigureKind::histogram) {
    j["bins"] = s.bins;
    j["normalize"] = s.normalize;
  }
  return j;
}

void fill_from_csv(FigureSpec& s, const std::filesystem::path& csv_file) {
  const std::string where = csv_file.string();
  std::istringstream in(read_file(csv_file));
  std::string line;
  std::vector<std::vector<std::string>> rows;
  size_t line_no = 0;
  std::vector<size_t> line_of;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() || line == "\r" || line[0] == '#') continue;
    rows.push_back(split_csv(line));
    line_of.push_back(line_no);
  }
  if (rows.empty()) report_fail(where, ": empty CSV (a header line and data rows are expected)");
  const auto& header = rows[0];
  for (size_t r = 1; r < rows.size(); ++r)
    if (rows[r].size() != header.size())
      report_fail(where, ":", line_of[r], ": ", rows[r].size(), " cells, the header has ", header.size());
  const bool first_is_label = s.kind != FigureKind::histogram && s.kind != FigureKind::cdf;
  if (first_is_label && header.size() < 2) report_fail(where, ": a ", kind_name(s.kind), " CSV needs at least 2 columns");
  auto cell = [&](size_t r, size_t c) { return csv_number(rows[r][c], where, line_of[r], c); };
  switch (s.kind) {
    case FigureKind::line:
    case FigureKind::layers:
      s.series.clear();
      if (s.xlabel.empty()) s.xlabel = header[0];
      for (size_t c = 1; c < header.size(); ++c) {
        Series ser{header[c], {}, {}, {}};
        for (size_t r = 1; r < rows.size(); ++r) {
          ser.x.push_back(cell(r, 0));
          ser.y.push_back(cell(r, c));
        }
        s.series.push_back(std::move(ser));
      }
      break;
    case FigureKind::bars:
      s.series.clear();
      s.categories.clear();
      if (s.xlabel.empty()) s.xlabel = header[0];
      for (size_t r = 1; r < rows.size(); ++r) s.categories.push_back(rows[r][0]);
      for (size_t c = 1; c < header.size(); ++c) {
        Series ser{header[c], {}, {}, {}};
        for (size_t r = 1; r < rows.size(); ++r) ser.y.push_back(cell(r, c));
        s.series.push_back(std::move(ser));
      }
      break;
    case FigureKind::heatmap:
      s.columns.assign(header.begin() + 1, header.end());
      s.rows.clear();
      s.z.clear();
      for (size_t r = 1; r < rows.size(); ++r) {
        s.rows.push_back(rows[r][0]);
        std::vector<double> zr;
        for (size_t c = 1; c < header.size(); ++c) zr.push_back(cell(r, c));
        s.z.push_back(std::move(zr));
      }
      break;
    case FigureKind::histogram:
    case FigureKind::cdf:
      s.series.clear();
      for (size_t c = 0; c < header.size(); ++c) {
        Series ser{header[c], {}, {}, {}};
        for (size_t r = 1; r < rows.size(); ++r) {
          const double v = cell(r, c);
          if (std::isfinite(v)) ser.values.push_back(v);
        }
        s.series.push_back(std::move(ser));
      }
      break;
  }
}

}  // namespace ssmlab::report
