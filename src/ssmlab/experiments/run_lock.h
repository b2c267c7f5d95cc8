// One writer per run folder (issue 13): `ssmlab train` and the sweep runner hold an OS file lock (flock) on
// <run folder>/.lock while they write the folder; its text names the holder ("pid <n> on <host> since <time>").
// A second writer is refused with that text. The runner hands its lock to the `ssmlab train` child it starts:
// the child inherits the locked descriptor and finds it through SSMLAB_RUN_LOCK_FD, so parent and child are one
// writer. The kernel drops the lock when the holder dies (kill -9 included): there is no stale lock to clean.
#pragma once
#include <filesystem>
#include <optional>
#include <string>

namespace ssmlab::experiments {

inline constexpr const char* kRunLockEnv = "SSMLAB_RUN_LOCK_FD";

class RunLock {
 public:
  // Takes the lock of `dir` (created if needed), or adopts the one inherited through SSMLAB_RUN_LOCK_FD when it
  // is this folder's; otherwise throws ssmlab::Error naming the folder and the holder.
  explicit RunLock(const std::filesystem::path& dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  bool inherited() const { return inherited_; }

 private:
  int fd_ = -1;
  bool inherited_ = false;
};

// "pid 123 on host since 2026-12-07 01:02:03 UTC" for this process.
std::string lock_holder_text();

// Who holds the lock of `dir`, or nothing when nobody does (the folder is free to write).
std::optional<std::string> run_lock_holder(const std::filesystem::path& dir);

}  // namespace ssmlab::experiments
