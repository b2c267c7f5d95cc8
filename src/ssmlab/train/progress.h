// Progress reporting: one self-updating line on a terminal, plain log lines otherwise.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace ssmlab::train {

class Progress {
 public:
  Progress(int64_t total_steps, int64_t first_step);
  // Called after each step; prints when the line is due (terminal: at most ~5 times a second).
  void update(int64_t step, double loss, double tokens_per_s, double last_acc, double lr, bool force = false);
  void message(const std::string& line);  // prints a whole line, keeping the progress line intact
  void finish();
  static std::string format_duration(double seconds);

 private:
  int64_t total_, first_;
  bool tty_;
  bool line_open_ = false;
  std::chrono::steady_clock::time_point start_, last_print_;
};

}  // namespace ssmlab::train
