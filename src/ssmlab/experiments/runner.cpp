#include "ssmlab/experiments/runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ssmlab/core/error.h"
#include "ssmlab/core/io.h"
#include "ssmlab/experiments/identity.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/experiments/run_lock.h"
#include "ssmlab/experiments/tensorboard.h"
#include "ssmlab/runfolder/layout.h"
#include "ssmlab/train/progress.h"

extern char** environ;

namespace ssmlab::experiments {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

volatile sig_atomic_t g_signals = 0;  // SIGINT / SIGTERM received while a sweep runs
extern "C" void on_stop_signal(int) { g_signals = g_signals + 1; }

// Installs the stop handlers for the runner's lifetime (no SA_RESTART: a signal cuts the poll sleep
// short) and puts the previous ones back after.
class SignalScope {
 public:
  SignalScope() {
    g_signals = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string now_text() {
  char buf[32];
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

double host_memory_gb() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb / (1024.0 * 1024.0);
  fail("--mem-per-run: cannot read MemAvailable from /proc/meminfo; give the memory with --mem GB");
}

double gpu_memory_gb(int64_t gpu) {
  const std::string cmd =
      str("nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i ", gpu, " 2>/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  double mib = 0;
  const bool ok = p && std::fscanf(p, "%lf", &mib) == 1;
  if (p) pclose(p);
  if (!ok || mib <= 0)
    fail("--mem-per-run: cannot read the memory of GPU ", gpu, " from nvidia-smi; give it with --mem GB");
  return mib / 1024.0;
}

// The last `n` non-empty lines of `path` from byte `offset` on.
std::string log_tail(const fs::path& path, std::streamoff offset, int64_t n) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(offset);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (const auto cr = line.rfind('\r'); cr != std::string::npos) line = line.substr(cr + 1);  // progress redraws
    if (!line.empty()) lines.push_back(line);
  }
  std::string out;
  for (size_t i = lines.size() > static_cast<size_t>(n) ? lines.size() - n : 0; i < lines.size(); ++i)
    out += lines[i] + "\n";
  return out;
}

nlohmann::json json_value(const std::string& toml_text) {
  try {
    const toml::table t = toml::parse("v = " + toml_text);
    const toml::node& v = *t.get("v");
    if (auto* s = v.as_string()) return s->get();
    if (auto* i = v.as_integer()) return i->get();
    if (auto* f = v.as_floating_point()) return f->get();
    if (auto* b = v.as_boolean()) return b->get();
  } catch (const toml::parse_error&) {
  }
  return toml_text;
}

struct Active {
  size_t run = 0;
  pid_t pid = -1;
  size_t slot = 0;
  int lock_fd = -1;
  std::streamoff log_offset = 0;
  Clock::time_point start;
};

class Runner {
 public:
  Runner(const Sweep& sweep, const RunnerOptions& opts) : sweep_(sweep), opts_(opts) {}

  SweepReport run() {
    const auto t0 = Clock::now();
    fs::create_directories(sweep_.out_dir);
    exe_ = opts_.exe.empty() ? fs::read_symlink("/proc/self/exe") : opts_.exe;
    slots_ = plan_slots(opts_);
    slot_busy_.assign(slots_.size(), false);
    report_.dir = sweep_.out_dir;
    for (const auto& r : sweep_.runs) {
      RunRecord rec{r.id, r.folder, r.label()};
      if (fs::exists(runfolder::done_marker(sweep_.out_dir / r.folder))) rec.status = RunStatus::skipped;
      report_.runs.push_back(rec);
    }
    write_manifest();
    write_experiment();
    say(str("[sweep] ", sweep_.name, ": ", sweep_.runs.size(), " runs in ", sweep_.out_dir.string(), " (",
            report_.count(RunStatus::skipped), " already done), ", slots_.size(), " at a time", slot_text()));
    {
      SignalScope signals;
      loop();
    }
    report_.interrupted = g_signals > 0;
    report_.seconds = seconds_since(t0);
    write_manifest();
    write_experiment();
    clear_line();
    return report_;
  }

 private:
  const Sweep& sweep_;
  const RunnerOptions& opts_;
  fs::path exe_;
  std::vector<int64_t> slots_;
  std::vector<bool> slot_busy_;
  std::vector<Active> active_;
  SweepReport report_;
  size_t next_ = 0;
  std::vector<double> durations_;  // runs trained to the end by this runner
  Clock::time_point started_ = Clock::now(), last_line_{};
  bool line_open_ = false;
  bool tty_ = isatty(STDOUT_FILENO) != 0;
  int width_ = train::terminal_width();

  std::string slot_text() const {
    if (slots_.empty() || slots_[0] < 0) return "";
    std::string s = " on GPUs";
    for (size_t i = 0; i < slots_.size(); ++i)
      if (i == 0 || slots_[i] != slots_[i - 1]) s += str(" ", slots_[i]);
    return s;
  }

  void loop() {
    bool stopping = false;
    Clock::time_point kill_at{};
    while (true) {
      if (g_signals > 0 && !stopping) {
        stopping = true;
        kill_at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(opts_.grace_s * 1000));
        say(str("[sweep] stopping: SIGTERM to ", active_.size(), " running runs (again to kill at once); "
                "run the same command to continue"));
        for (const auto& a : active_) kill(-a.pid, SIGTERM);
      }
      if (stopping && (g_signals > 1 || Clock::now() > kill_at))
        for (const auto& a : active_) kill(-a.pid, SIGKILL);
      reap(stopping);
      if (!stopping) launch_ready();
      if (active_.empty() && (stopping || next_ >= sweep_.runs.size())) break;
      progress(/*force=*/false);
      struct timespec ts {0, 100 * 1000 * 1000};
      nanosleep(&ts, nullptr);
    }
  }

  void launch_ready() {
    while (next_ < sweep_.runs.size()) {
      if (report_.runs[next_].status == RunStatus::skipped) {
        ++next_;
        continue;
      }
      const auto free = std::find(slot_busy_.begin(), slot_busy_.end(), false);
      if (free == slot_busy_.end()) return;
      launch(next_++, static_cast<size_t>(free - slot_busy_.begin()));
    }
  }

  void launch(size_t i, size_t slot) {
    const SweepRun& run = sweep_.runs[i];
    RunRecord& rec = report_.runs[i];
    const fs::path dir = sweep_.out_dir / run.folder;
    try {
      fs::create_directories(dir);
      const std::string text = run_config_text(run.config);
      const fs::path cfg = runfolder::config_file(dir);
      if (!fs::exists(cfg)) {
        write_file_atomic(cfg, text);
      } else if (read_file(cfg) != text) {  // the same run may predate options added since (identity.h)
        const Config there = load_options_from_string<Config>(read_file(cfg), cfg.string());
        const std::string diff = identity_diff(run.config, there);
        if (!diff.empty())
          fail(cfg.string(), " holds a different config than this run (", diff, "); delete the folder to start it over");
      }
    } catch (const std::exception& e) {
      end_failed(i, e.what(), 0.0);
      return;
    }
    const int lock_fd = open(runfolder::lock_file(dir).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
      if (lock_fd >= 0) close(lock_fd);
      rec.status = RunStatus::busy;
      event(str("[sweep] busy   ", run.folder, ": another runner is training it (", runfolder::lock_file(dir).string(),
                ")"));
      write_manifest();
      return;
    }
    const fs::path log_path = runfolder::train_log(dir);
    const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      close(lock_fd);
      end_failed(i, str("cannot open ", log_path.string(), ": ", std::strerror(errno)), 0.0);
      return;
    }
    const std::streamoff offset = lseek(log_fd, 0, SEEK_END);

    // Everything the child needs is built before fork: between fork and exec only async-signal-safe calls.
    std::vector<std::string> args = {exe_.string(), "train", runfolder::config_file(dir).string(), "--out",
                                     dir.string()};
    if (run.config.train.halt_after_steps > 0)  // not part of config.toml (run.h): pass it on
      args.insert(args.end(), {"--set", str("train.halt_after_steps=", run.config.train.halt_after_steps)});
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e)
      if (std::strncmp(*e, "CUDA_VISIBLE_DEVICES=", 21) != 0 || slots_[slot] < 0) env.emplace_back(*e);
    if (slots_[slot] >= 0) env.push_back(str("CUDA_VISIBLE_DEVICES=", slots_[slot]));
    // The child `ssmlab train` inherits the locked descriptor and adopts it (run_lock.h): one writer, two processes.
    env.push_back(str(kRunLockEnv, "=", lock_fd));
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string header = str("\n==== ssmlab sweep ", now_text(), ": attempt ", rec.attempts + 1, ", slot ", slot,
                             slots_[slot] >= 0 ? str(", CUDA_VISIBLE_DEVICES=", slots_[slot]) : std::string(), "\n$");
    for (const auto& a : args) header += " " + a;
    header += "\n";
    if (write(log_fd, header.data(), header.size()) < 0) { /* the log is best effort */ }
    const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    const pid_t parent = getpid();
    std::fflush(stdout);
    std::fflush(stderr);

    const pid_t pid = fork();
    if (pid == 0) {
      setpgid(0, 0);  // its own group: the runner decides when children stop, and stops their children too
#ifdef __linux__
      prctl(PR_SET_PDEATHSIG, SIGTERM);  // a runner killed outright takes its runs with it
      if (getppid() != parent) _exit(128 + SIGTERM);
#endif
      dup2(log_fd, STDOUT_FILENO);
      dup2(log_fd, STDERR_FILENO);
      fcntl(lock_fd, F_SETFD, 0);  // keep the run lock's descriptor across execve (it was opened O_CLOEXEC)
      if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
      execve(argv[0], argv.data(), envp.data());
      const char msg[] = "ssmlab sweep: execve of the ssmlab binary failed\n";
      if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) { /* nothing left to tell */ }
      _exit(127);
    }
    close(log_fd);
    if (null_fd >= 0) close(null_fd);
    if (pid < 0) {
      close(lock_fd);
      end_failed(i, str("fork failed: ", std::strerror(errno)), 0.0);
      return;
    }
    setpgid(pid, pid);
    char host[256] = "unknown-host";
    gethostname(host, sizeof host - 1);
    const std::string pid_text = str("pid ", pid, " on ", host, " since ", now_text(), " (ssmlab sweep pid ", parent, ")\n");
    if (ftruncate(lock_fd, 0) == 0 && pwrite(lock_fd, pid_text.data(), pid_text.size(), 0) < 0) { /* informative */ }
    slot_busy_[slot] = true;
    active_.push_back({i, pid, slot, lock_fd, offset, Clock::now()});
    rec.status = RunStatus::running;
    ++rec.attempts;
    const fs::path ckpts = runfolder::checkpoints_dir(dir);
    const bool resumes = fs::exists(ckpts) && !fs::is_empty(ckpts);
    event(str("[sweep] start  ", run.folder, "  ", rec.label, resumes ? "  (resumes)" : "",
              slots_[slot] >= 0 ? str("  [gpu ", slots_[slot], "]") : std::string()));
    write_manifest();
  }

  void reap(bool stopping) {
    for (size_t k = 0; k < active_.size();) {
      int st = 0;
      const pid_t r = waitpid(active_[k].pid, &st, WNOHANG);
      if (r == 0 || (r < 0 && errno == EINTR)) {
        ++k;
        continue;
      }
      const Active a = active_[k];
      active_.erase(active_.begin() + static_cast<std::ptrdiff_t>(k));
      slot_busy_[a.slot] = false;
      flock(a.lock_fd, LOCK_UN);
      close(a.lock_fd);
      finish(a, r < 0 ? -1 : st, stopping);
    }
  }

  void finish(const Active& a, int st, bool stopping) {
    const SweepRun& run = sweep_.runs[a.run];
    RunRecord& rec = report_.runs[a.run];
    const fs::path dir = sweep_.out_dir / run.folder;
    const double secs = seconds_since(a.start);
    rec.seconds = secs;
    const bool exited = st >= 0 && WIFEXITED(st);
    const int code = exited ? WEXITSTATUS(st) : -1;
    const int sig = st >= 0 && WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    if (exited && code == 0 && fs::exists(runfolder::done_marker(dir))) {
      rec.status = RunStatus::done;
      rec.error.clear();
      durations_.push_back(secs);
      std::string acc;
      try {
        const auto j = nlohmann::json::parse(read_file(runfolder::results_file(dir)));
        if (j.contains("test_acc")) acc = str("  test_acc ", j["test_acc"].get<double>());
      } catch (const std::exception&) {
      }
      event(str("[sweep] done   ", run.folder, " in ", train::Progress::format_duration(secs), acc));
    } else if ((exited && code == 0) || (stopping && (sig == SIGTERM || sig == SIGKILL || sig == SIGINT))) {
      rec.status = RunStatus::stopped;  // halted (train.halt_after_steps) or stopped by us: resumes next time
      rec.error.clear();
      event(str("[sweep] stopped ", run.folder, " after ", train::Progress::format_duration(secs),
                " (resumes from its newest checkpoint next time)"));
    } else {
      std::string how = st < 0 ? std::string("lost (waitpid failed)")
                        : exited ? str("exit status ", code)
                                 : str("killed by signal ", sig, " (", strsignal(sig), ")");
      const std::string tail = log_tail(runfolder::train_log(dir), a.log_offset, opts_.tail_lines);
      // The error line of the log, if any, makes the one-line summary (manifest, results table) useful.
      const size_t at = tail.rfind("error");
      if (at != std::string::npos) {
        const size_t begin = tail.rfind('\n', at) == std::string::npos ? 0 : tail.rfind('\n', at) + 1;
        how += ": " + tail.substr(begin, tail.find('\n', at) - begin);
      }
      end_failed(a.run, how + "\n" + tail, secs);
      return;
    }
    write_manifest();
  }

  void end_failed(size_t i, const std::string& error, double secs) {
    RunRecord& rec = report_.runs[i];
    rec.status = RunStatus::failed;
    rec.error = error;
    rec.seconds = secs;
    const std::string first = error.substr(0, error.find('\n'));
    event(str("[sweep] FAILED ", rec.folder, ": ", first, "; log: ",
              runfolder::train_log(sweep_.out_dir / rec.folder).string()));
    write_manifest();
  }

  std::string status_line() const {
    const size_t done = report_.count(RunStatus::done) + report_.count(RunStatus::skipped);
    const size_t total = report_.runs.size();
    const size_t running = active_.size(), failed = report_.count(RunStatus::failed);
    const size_t pending = report_.count(RunStatus::pending) + report_.count(RunStatus::stopped);
    std::string eta;
    if (!durations_.empty()) {
      double mean = 0;
      for (double d : durations_) mean += d;
      mean /= static_cast<double>(durations_.size());
      double work = static_cast<double>(pending) * mean;
      for (const auto& a : active_) work += std::max(0.0, mean - seconds_since(a.start));
      eta = "ETA " + train::Progress::format_duration(work / static_cast<double>(slots_.size()));
    } else if (running + pending > 0) {
      eta = "ETA ?";
    }
    std::vector<train::LineField> fields = {{str("[sweep] ", done, "/", total, " done"), 0},
                                            {str(running, " running"), 3},
                                            {str(failed, " failed"), failed > 0 ? 1 : 5},
                                            {str(pending, " pending"), 4},
                                            {train::Progress::format_duration(seconds_since(started_)), 6}};
    if (!eta.empty()) fields.push_back({eta, 2});
    return train::fit_line(fields, tty_ ? width_ - 1 : width_);
  }

  void clear_line() {
    if (line_open_) std::printf("\r\033[K");
    line_open_ = false;
    std::fflush(stdout);
  }

  void say(const std::string& text) {
    if (opts_.quiet) return;
    clear_line();
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
  }

  // A run changed state: its line, then the sweep's (on a terminal the sweep line redraws in place).
  void event(const std::string& text) {
    say(text);
    progress(/*force=*/true);
  }

  void progress(bool force) {
    if (opts_.quiet) return;
    if (!tty_) {
      if (force) std::printf("%s\n", status_line().c_str());
      std::fflush(stdout);
      return;
    }
    if (!force && seconds_since(last_line_) < 0.5) return;
    last_line_ = Clock::now();
    std::printf("\r\033[K%s", status_line().c_str());
    line_open_ = true;
    std::fflush(stdout);
  }

  // TensorBoard's hparams experiment of the sweep (experiments/tensorboard.h): at the start, and at the end with
  // the eval metrics the runs logged.
  void write_experiment() {
    try {
      write_tb_experiment(sweep_);
    } catch (const std::exception& e) {
      say(str("[sweep] warning: TensorBoard hparams experiment not written: ", e.what()));
    }
  }

  void write_manifest() {
    nlohmann::json runs = nlohmann::json::array();
    for (size_t i = 0; i < sweep_.runs.size(); ++i) {
      const SweepRun& r = sweep_.runs[i];
      const RunRecord& rec = report_.runs[i];
      nlohmann::json values = nlohmann::json::object();
      for (const auto& [k, v] : r.overrides) values[k] = json_value(v);
      nlohmann::json j = {{"index", i},          {"id", r.id},
                          {"folder", r.folder},  {"values", values},
                          {"status", status_name(rec.status)}, {"attempts", rec.attempts},
                          {"seconds", rec.seconds}};
      if (!rec.error.empty()) j["error"] = rec.error;
      runs.push_back(j);
    }
    const nlohmann::json m = {{"sweep", sweep_.name}, {"file", sweep_.source}, {"keys", sweep_.keys},
                              {"updated", now_text()}, {"runs", runs}};
    try {
      write_file_atomic(runfolder::sweep_manifest(sweep_.out_dir), m.dump(2) + "\n");
    } catch (const Error& e) {
      say(str("[sweep] warning: ", e.what()));
    }
  }
};

}  // namespace

const char* status_name(RunStatus s) {
  switch (s) {
    case RunStatus::pending: return "pending";
    case RunStatus::running: return "running";
    case RunStatus::done: return "done";
    case RunStatus::skipped: return "done-before";
    case RunStatus::failed: return "failed";
    case RunStatus::stopped: return "stopped";
    case RunStatus::busy: return "busy";
  }
  return "?";
}

size_t SweepReport::count(RunStatus s) const {
  return static_cast<size_t>(std::count_if(runs.begin(), runs.end(), [s](const RunRecord& r) { return r.status == s; }));
}

std::vector<int64_t> plan_slots(const RunnerOptions& o) {
  SSMLAB_CHECK(o.jobs >= 0, "--jobs must be >= 0, got ", o.jobs);
  SSMLAB_CHECK(o.per_gpu >= 1, "--per-gpu must be >= 1, got ", o.per_gpu);
  SSMLAB_CHECK(o.mem_per_run_gb >= 0 && o.mem_gb >= 0, "--mem-per-run and --mem must be >= 0");
  for (size_t i = 0; i < o.gpus.size(); ++i) {
    SSMLAB_CHECK(o.gpus[i] >= 0, "--gpus: GPU numbers are >= 0, got ", o.gpus[i]);
    for (size_t j = 0; j < i; ++j) SSMLAB_CHECK(o.gpus[i] != o.gpus[j], "--gpus lists GPU ", o.gpus[i], " twice");
  }
  std::vector<int64_t> slots;
  if (o.gpus.empty()) {
    int64_t n = o.jobs > 0 ? o.jobs : 1;
    if (o.mem_per_run_gb > 0) {
      const double mem = o.mem_gb > 0 ? o.mem_gb : host_memory_gb();
      const auto fit = static_cast<int64_t>(std::floor(mem / o.mem_per_run_gb));
      SSMLAB_CHECK(fit >= 1, "--mem-per-run ", o.mem_per_run_gb, " GB does not fit in ", mem, " GB of memory");
      n = std::min(n, fit);
    }
    slots.assign(static_cast<size_t>(n), -1);
    return slots;
  }
  // Round-robin over the GPUs, so that --jobs below gpus x per-gpu still spreads the runs out.
  std::vector<int64_t> per(o.gpus.size(), o.per_gpu);
  for (size_t g = 0; g < o.gpus.size(); ++g) {
    if (o.mem_per_run_gb <= 0) continue;
    const double mem = o.mem_gb > 0 ? o.mem_gb : gpu_memory_gb(o.gpus[g]);
    const auto fit = static_cast<int64_t>(std::floor(mem / o.mem_per_run_gb));
    SSMLAB_CHECK(fit >= 1, "--mem-per-run ", o.mem_per_run_gb, " GB does not fit on GPU ", o.gpus[g], " (", mem,
                 " GB)");
    per[g] = std::min(per[g], fit);
  }
  for (int64_t k = 0; k < o.per_gpu; ++k)
    for (size_t g = 0; g < o.gpus.size(); ++g)
      if (k < per[g]) slots.push_back(o.gpus[g]);
  if (o.jobs > 0 && static_cast<size_t>(o.jobs) < slots.size()) slots.resize(static_cast<size_t>(o.jobs));
  std::stable_sort(slots.begin(), slots.end());
  return slots;
}

SweepReport run_sweep(const Sweep& sweep, const RunnerOptions& opts) { return Runner(sweep, opts).run(); }

std::string format_report(const SweepReport& r) {
  std::string out = str("[sweep] ", r.count(RunStatus::done) + r.count(RunStatus::skipped), "/", r.runs.size(),
                        " done (", r.count(RunStatus::skipped), " skipped as already done), ", r.count(RunStatus::failed),
                        " failed");
  if (const size_t s = r.count(RunStatus::stopped)) out += str(", ", s, " stopped before the end");
  if (const size_t p = r.count(RunStatus::pending)) out += str(", ", p, " not started");
  if (const size_t b = r.count(RunStatus::busy)) out += str(", ", b, " busy in another runner");
  out += str(" in ", train::Progress::format_duration(r.seconds), r.interrupted ? " (interrupted)" : "", "\n");
  for (const auto& run : r.runs) {
    if (run.status != RunStatus::failed) continue;
    out += str("\nFAILED ", (r.dir / run.folder).string(), "  ", run.label, "\n");
    std::string body = run.error;
    size_t start = 0;
    while (start < body.size()) {
      const size_t end = body.find('\n', start);
      out += "  | " + body.substr(start, end == std::string::npos ? std::string::npos : end - start) + "\n";
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  if (r.count(RunStatus::failed) + r.count(RunStatus::stopped) + r.count(RunStatus::pending) > 0)
    out += "\nRun the same command again to retry failed runs and resume the others; finished runs are skipped.\n";
  return out;
}

}  // namespace ssmlab::experiments
