#include "ssmlab/train/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include "ssmlab/core/error.h"

namespace ssmlab::train {

Progress::Progress(int64_t total_steps, int64_t first_step)
    : total_(total_steps), first_(first_step), tty_(isatty(fileno(stdout)) != 0),
      start_(std::chrono::steady_clock::now()), last_print_(start_) {}

std::string Progress::format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto total = static_cast<int64_t>(s + 0.5);
  const int64_t h = total / 3600, m = (total % 3600) / 60, sec = total % 60;
  if (h > 0) return str(h, "h", m < 10 ? "0" : "", m, "m");
  if (m > 0) return str(m, "m", sec < 10 ? "0" : "", sec, "s");
  return str(sec, "s");
}

void Progress::update(int64_t step, double loss, double tokens_per_s, double last_acc, double lr, bool force) {
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double since = std::chrono::duration<double>(now - last_print_).count();
  if (tty_ && !force && since < 0.2 && step < total_) return;
  last_print_ = now;
  const double done = static_cast<double>(step - first_);
  const double eta = done > 0 ? elapsed / done * static_cast<double>(total_ - step) : NAN;
  char acc[32];
  if (std::isnan(last_acc)) std::snprintf(acc, sizeof acc, "-");
  else std::snprintf(acc, sizeof acc, "%.4f", last_acc);
  char line[256];
  std::snprintf(line, sizeof line, "step %lld/%lld | loss %.4f | test acc %s | lr %.2e | %.0f tok/s | ETA %s",
                static_cast<long long>(step), static_cast<long long>(total_), loss, acc, lr, tokens_per_s,
                format_duration(eta).c_str());
  if (tty_) {
    std::printf("\r\033[K%s", line);
    line_open_ = true;
  } else {
    std::printf("%s\n", line);
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
