// The progress and sweep lines fit the terminal: fields are dropped least useful first, never wrapped.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "ssmlab/train/progress.h"

namespace ssmlab::train {

TEST(ProgressLine, FitsEightyColumnsWithEveryFieldAtTypicalSizes) {
  const ProgressState s{12000, 20000, 2.345678, 0.4567, 1e-3, 123456.0, 3 * 3600 + 25 * 60};
  const std::string line = Progress::format_line(s, 80);
  EXPECT_EQ(line, "step 12000/20000 | loss 2.3457 | acc 0.4567 | lr 1e-3 | 123k tok/s | ETA 3h25m");
  EXPECT_LE(line.size(), 80u);
  // One more digit of steps: lr is the first to go.
  const ProgressState big{120000, 200000, 2.345678, 0.4567, 1e-3, 4.56e6, 59};
  EXPECT_EQ(Progress::format_line(big, 80), "step 120000/200000 | loss 2.3457 | acc 0.4567 | lr 1e-3 | 4.56M tok/s | ETA 59s");
  EXPECT_EQ(Progress::format_line(big, 70), "step 120000/200000 | loss 2.3457 | acc 0.4567 | 4.56M tok/s | ETA 59s");
}

TEST(ProgressLine, NarrowTerminalDropsRateAndLrFirstAndKeepsStepLossEta) {
  const ProgressState s{12000, 200000, 2.345678, 0.4567, 1e-3, 123456.0, 61};
  const std::string w60 = Progress::format_line(s, 60);
  EXPECT_LE(w60.size(), 60u) << w60;
  EXPECT_EQ(w60, "step 12000/200000 | loss 2.3457 | acc 0.4567 | ETA 1m01s");
  const std::string w45 = Progress::format_line(s, 45);
  EXPECT_EQ(w45, "step 12000/200000 | loss 2.3457 | ETA 1m01s");
  EXPECT_EQ(Progress::format_line(s, 40), "step 12000/200000 | loss 2.3457");
  const std::string w10 = Progress::format_line(s, 10);
  EXPECT_EQ(w10, "step 12000");  // the step alone, cut to the width
}

TEST(ProgressLine, UnknownAccuracyAndEta) {
  const ProgressState s{1, 10, 1.0, NAN, 1e-4, 900.0, NAN};
  EXPECT_EQ(Progress::format_line(s, 200), "step 1/10 | loss 1.0000 | acc - | lr 1e-4 | 900 tok/s | ETA ?");
}

TEST(ProgressLine, LearningRatesAreShort) {
  auto lr_of = [](double lr) {
    const std::string line = Progress::format_line({1, 10, 1.0, NAN, lr, 900.0, NAN}, 200);
    const size_t a = line.find("lr ") + 3;
    return line.substr(a, line.find(' ', a) - a);
  };
  EXPECT_EQ(lr_of(1e-3), "1e-3");
  EXPECT_EQ(lr_of(9.5e-4), "9.5e-4");
  EXPECT_EQ(lr_of(9.96e-4), "1e-3");
  EXPECT_EQ(lr_of(0.0), "0");
  EXPECT_EQ(lr_of(3e-2), "3e-2");
}

TEST(FitLine, KeepsOrderDropsHighestRankFirstAndNeverRankZero) {
  const std::vector<LineField> f = {{"aaaa", 0}, {"bbbb", 2}, {"cccc", 1}, {"dddd", 3}};
  EXPECT_EQ(fit_line(f, 100), "aaaa | bbbb | cccc | dddd");
  EXPECT_EQ(fit_line(f, 25), "aaaa | bbbb | cccc | dddd");
  EXPECT_EQ(fit_line(f, 24), "aaaa | bbbb | cccc");
  EXPECT_EQ(fit_line(f, 12), "aaaa | cccc");
  EXPECT_EQ(fit_line(f, 5), "aaaa");
  EXPECT_EQ(fit_line(f, 0), "a");
}

TEST(TerminalWidth, ColumnsVariableWhenStdoutIsNoTerminal) {
  // ctest runs tests with stdout on a pipe, so the ioctl branch is not taken here.
  const char* old = std::getenv("COLUMNS");
  const std::string saved = old ? old : "";
  setenv("COLUMNS", "123", 1);
  EXPECT_EQ(terminal_width(), 123);
  setenv("COLUMNS", "12x", 1);
  EXPECT_EQ(terminal_width(), 80);
  unsetenv("COLUMNS");
  EXPECT_EQ(terminal_width(), 80);
  if (old) setenv("COLUMNS", saved.c_str(), 1);
}

// Through the real command (stdout a pipe, so one line per update): an evaluation step prints one line, with the
// accuracy, not a line before the evaluation and another after it.
TEST(ProgressLine, EachEvaluationStepIsPrintedOnce) {
  namespace fs = std::filesystem;
  const fs::path out = fs::temp_directory_path() / "ssmlab_progress_eval_once";
  fs::remove_all(out);
  const std::string cmd = (fs::path(SSMLAB_BINARY_DIR) / "ssmlab").string() + " train " +
                          (fs::path(SSMLAB_SOURCE_DIR) / "configs" / "quickstart.toml").string() +
                          " --set train.max_steps=6 --set train.eval_every=3 --set train.log_every=1 --out " +
                          out.string() + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string text;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) text += buf;
  ASSERT_EQ(pclose(p), 0) << text;
  fs::remove_all(out);
  auto count = [&](const std::string& needle) {
    int n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
    return n;
  };
  for (int step = 1; step <= 6; ++step) EXPECT_EQ(count("step " + std::to_string(step) + "/6 |"), 1) << text;
  EXPECT_EQ(count("| acc - |"), 2) << text;  // steps 1 and 2, before the first evaluation
  for (const std::string line : {"step 3/6", "step 6/6"}) {
    const size_t at = text.find(line);
    ASSERT_NE(at, std::string::npos);
    EXPECT_EQ(text.substr(at, text.find('\n', at) - at).find("acc -"), std::string::npos) << text;
  }
}

}  // namespace ssmlab::train
