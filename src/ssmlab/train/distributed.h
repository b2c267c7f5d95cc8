// Data-parallel training over processes with LibTorch's c10d (docs/ARCHITECTURE.md, "train/distributed"):
// a TCPStore for the rendezvous and ProcessGroupGloo for the collectives, both from libtorch_cpu (Gloo's headers
// come from Debian's libgloo-dev, only to declare the class). The environment contract is torchrun's: RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (under srun without them: SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID, and MASTER_ADDR / MASTER_PORT from the job script). Every wait is bounded by
// SSMLAB_DIST_TIMEOUT (seconds, default 300): the rendezvous and every collective; a rank that dies makes the
// others' next collective fail at once (its sockets close) or after that timeout.
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ssmlab/train/trainer.h"

namespace ssmlab::train {

struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  std::chrono::milliseconds timeout{300000};
  std::string source;  // "torchrun environment" or "Slurm environment", for messages
};

// The distributed environment of this process, or nullopt when it is one process (no WORLD_SIZE, or 1; no
// SLURM_NTASKS > 1 either). Malformed or inconsistent variables are ConfigErrors naming the variable.
std::optional<DistEnv> dist_env_from_environment();

// One process group: this process's rank among world_size. Collectives are in place and block until every rank
// has joined them (bounded by the timeout); a failure is an ssmlab::Error that says which collective, this rank,
// and that another rank probably died or hung.
class ProcessGroup {
 public:
  // Connects to the store at MASTER_ADDR:MASTER_PORT (rank 0 serves it) and builds the Gloo group. Throws an
  // Error naming the address, the port and the timeout when the ranks do not all arrive in time.
  explicit ProcessGroup(const DistEnv& env);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return env_.rank; }
  int size() const { return env_.world_size; }
  const DistEnv& env() const { return env_; }

  // Sum over ranks of each tensor (contiguous CPU tensors), in place; all launched before the first wait.
  void allreduce_sum(std::vector<at::Tensor>& tensors, const char* what);
  // Rank `root`'s values into every rank's tensor, in place.
  void broadcast(std::vector<at::Tensor>& tensors, int root, const char* what);
  void barrier(const char* what);

 private:
  struct Impl;
  DistEnv env_;
  std::unique_ptr<Impl> impl_;
};

// The process group the trainer uses; nullptr in a single process. Set once by the CLI (init_distributed_from_env)
// or by a test.
ProcessGroup* current_group();
void set_current_group(std::shared_ptr<ProcessGroup> group);

// Builds and installs the process group when the environment says this is one of several ranks; returns it
// (nullptr when single-process).
ProcessGroup* init_distributed_from_env();

// The rows [begin, end) of a batch of `rows` that rank `rank` of `world` takes: contiguous, as even as possible
// (the first rows % world ranks get one more). A rank may get none when rows < world.
std::pair<int64_t, int64_t> shard_rows(int64_t rows, int rank, int world);

// train::evaluate with a process group of several ranks (nullptr: evaluate itself): each rank evaluates its shard of
// every segment's examples (shard_rows) and the sums are all-reduced, so every rank returns the whole evaluation.
EvalResult evaluate_sharded(models::ModelImpl& model, const tasks::Task& task,
                            const std::vector<tasks::Segment>& segments, int64_t batch_size, c10::Device device,
                            const std::string& precision, ProcessGroup* group);

// train::fit is data-parallel when current_group() has several ranks: every rank takes its rows of each global
// batch (the same batches as one process), weights its gradients by its share of the batch's counted targets, and
// all-reduces them (allreduce_gradients); evaluation is sharded and reduced; only rank 0 writes metrics,
// TensorBoard and checkpoints, and every rank resumes from the same checkpoint (rank 0's step and parameters are
// broadcast at the start, and a rank that found another step is an error).

// Gradient all-reduce of data-parallel training. Each rank has backpropagated the mean loss over its shard and
// scaled its gradients by its share of the global batch's counted targets (n_rank / n_global), so the sum over
// ranks is the global batch's gradient, as one process would compute it. Gradients are packed, newest parameter
// first (the order a backward produces them), into buckets of at most `bucket_bytes` per dtype; every bucket's
// all-reduce is launched (Gloo works on them in the background) before the first is awaited. Not overlapped with
// the backward: truncated BPTT runs several backward passes per step, and a hook-driven overlap is left for later. A parameter without a
// gradient on every rank stays without one (the optimiser skips it, as in one process); one that has a gradient
// on some rank gets zeros elsewhere. `scalars` (e.g. the weighted loss) ride in the first bucket, summed too.
void allreduce_gradients(ProcessGroup& group, const std::vector<at::Tensor>& params, std::vector<double>& scalars,
                         int64_t bucket_bytes = 25 << 20);

}  // namespace ssmlab::train
