// Progress reporting: one self-updating line on a terminal, plain log lines otherwise. Every line fits the
// terminal's width (80 columns when it is unknown): fields are dropped, least useful first, rather than wrapped.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace ssmlab::train {

// A field of a status line. drop_rank 0: always kept; otherwise the highest rank is dropped first.
struct LineField {
  std::string text;
  int drop_rank = 0;
};

// The fields joined by " | " in their order, after dropping (highest drop_rank first) until the line fits `width`
// columns; a line still too wide (the kept fields alone) is cut to width. Width below 1 counts as 1.
std::string fit_line(const std::vector<LineField>& fields, int width);

// Columns of the terminal on stdout (TIOCGWINSZ), else $COLUMNS, else 80.
int terminal_width();

// What one progress line shows. NaN accuracy or ETA print as "-" and "?".
struct ProgressState {
  int64_t step = 0, total = 0;
  double loss = 0, acc = 0, lr = 0, tokens_per_s = 0, eta_s = 0;
};

class Progress {
 public:
  Progress(int64_t total_steps, int64_t first_step);
  // Called after each logged step; prints when the line is due (terminal: at most ~5 times a second).
  void update(int64_t step, double loss, double tokens_per_s, double last_acc, double lr, bool force = false);
  void message(const std::string& line);  // prints a whole line, keeping the progress line intact
  void finish();
  static std::string format_duration(double seconds);
  // "step 1200/20000 | loss 2.3456 | acc 0.4512 | lr 1e-3 | 123k tok/s | ETA 4m05s", fitted to width.
  static std::string format_line(const ProgressState& s, int width);

 private:
  int64_t total_, first_;
  bool tty_;
  int width_;
  bool line_open_ = false;
  std::chrono::steady_clock::time_point start_, last_print_;
};

}  // namespace ssmlab::train
