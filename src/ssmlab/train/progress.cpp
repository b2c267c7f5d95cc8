#include "ssmlab/train/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "ssmlab/core/error.h"

namespace ssmlab::train {

std::string fit_line(const std::vector<LineField>& fields, int width) {
  width = std::max(width, 1);
  std::vector<bool> keep(fields.size(), true);
  auto joined = [&] {
    std::string line;
    for (size_t i = 0; i < fields.size(); ++i) {
      if (!keep[i]) continue;
      if (!line.empty()) line += " | ";
      line += fields[i].text;
    }
    return line;
  };
  std::string line = joined();
  while (static_cast<int>(line.size()) > width) {
    int worst = -1;
    for (size_t i = 0; i < fields.size(); ++i)
      if (keep[i] && fields[i].drop_rank > 0 && (worst < 0 || fields[i].drop_rank >= fields[worst].drop_rank))
        worst = static_cast<int>(i);
    if (worst < 0) return line.substr(0, static_cast<size_t>(width));
    keep[static_cast<size_t>(worst)] = false;
    line = joined();
  }
  return line;
}

int terminal_width() {
  struct winsize ws {};
  if (isatty(fileno(stdout)) && ioctl(fileno(stdout), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* c = std::getenv("COLUMNS")) {
    char* end = nullptr;
    const long v = std::strtol(c, &end, 10);
    if (end != c && *end == '\0' && v > 0 && v < 10000) return static_cast<int>(v);
  }
  return 80;
}

Progress::Progress(int64_t total_steps, int64_t first_step)
    : total_(total_steps), first_(first_step), tty_(isatty(fileno(stdout)) != 0), width_(terminal_width()),
      start_(std::chrono::steady_clock::now()), last_print_(start_) {}

std::string Progress::format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto total = static_cast<int64_t>(s + 0.5);
  const int64_t h = total / 3600, m = (total % 3600) / 60, sec = total % 60;
  if (h > 0) return str(h, "h", m < 10 ? "0" : "", m, "m");
  if (m > 0) return str(m, "m", sec < 10 ? "0" : "", sec, "s");
  return str(sec, "s");
}

namespace {

std::string fmt_num(const char* f, double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// 950, 123k, 4.56M
std::string rate_str(double v) {
  if (!std::isfinite(v) || v < 0) return "?";
  if (v >= 1e6) return fmt_num("%.2fM", v / 1e6);
  if (v >= 1e4) return fmt_num("%.0fk", v / 1e3);
  return fmt_num("%.0f", v);
}

// 1e-3, 9.5e-4, 0 (short: the line must fit 80 columns)
std::string lr_str(double v) {
  if (v == 0) return "0";
  if (!std::isfinite(v)) return fmt_num("%g", v);
  int e = static_cast<int>(std::floor(std::log10(std::fabs(v))));
  double m = std::round(v / std::pow(10.0, e) * 10.0) / 10.0;
  if (std::fabs(m) >= 10.0) {
    m /= 10.0;
    ++e;
  }
  const std::string mant = m == std::round(m) ? fmt_num("%.0f", m) : fmt_num("%.1f", m);
  return mant + "e" + std::to_string(e);
}

}  // namespace

std::string Progress::format_line(const ProgressState& s, int width) {
  // Kept longest: step, then loss, ETA, accuracy; lr and tok/s go first.
  return fit_line({{str("step ", s.step, "/", s.total), 0},
                   {"loss " + fmt_num("%.4f", s.loss), 1},
                   {std::isnan(s.acc) ? std::string("acc -") : "acc " + fmt_num("%.4f", s.acc), 3},
                   {"lr " + lr_str(s.lr), 6},
                   {rate_str(s.tokens_per_s) + " tok/s", 5},
                   {"ETA " + format_duration(s.eta_s), 2}},
                  width);
}

void Progress::update(int64_t step, double loss, double tokens_per_s, double last_acc, double lr, bool force) {
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double since = std::chrono::duration<double>(now - last_print_).count();
  if (tty_ && !force && since < 0.2 && step < total_) return;
  last_print_ = now;
  const double done = static_cast<double>(step - first_);
  const double eta = done > 0 ? elapsed / done * static_cast<double>(total_ - step) : NAN;
  // On a terminal one column stays free: writing the last column makes some terminals wrap.
  const std::string line =
      format_line({step, total_, loss, last_acc, lr, tokens_per_s, eta}, tty_ ? width_ - 1 : width_);
  if (tty_) {
    std::printf("\r\033[K%s", line.c_str());
    line_open_ = true;
  } else {
    std::printf("%s\n", line.c_str());
  }
  std::fflush(stdout);
}

void Progress::message(const std::string& text) {
  if (line_open_) std::printf("\r\033[K");
  std::printf("%s\n", text.c_str());
  line_open_ = false;
  std::fflush(stdout);
}

void Progress::finish() {
  if (line_open_) std::printf("\n");
  line_open_ = false;
  std::fflush(stdout);
}

}  // namespace ssmlab::train
