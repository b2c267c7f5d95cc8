// Data-parallel training over processes with LibTorch's c10d (docs/ARCHITECTURE.md, "train/distributed"):
// a TCPStore for the rendezvous and ProcessGroupGloo for the collectives, both from libtorch_cpu (Gloo's headers
// come from Debian's libgloo-dev, only to declare the class). The environment contract is torchrun's: RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (under srun without them: SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID, and MASTER_ADDR / MASTER_PORT from the job script). Every wait is bounded by
// SSMLAB_DIST_TIMEOUT (seconds, default 300): the rendezvous and every collective; a rank that dies makes the
// others' next collective fail at once (its sockets close) or after that timeout.
//
// CUDA ranks (train.device cuda / auto with a GPU): each rank takes cuda:LOCAL_RANK (rank_cuda_index) and, by
// default, LibTorch's ProcessGroupNCCL (libtorch_cuda, CUDA builds only: SSMLAB_WITH_CUDA) on the same store for its
// CUDA tensors (gradients and parameters, all-reduced on the GPU); small CPU vectors (loss, evaluation sums, the
// step) stay on Gloo. NCCL runs with blocking waits (TORCH_NCCL_BLOCKING_WAIT=1 unless set) and the same timeout,
// so a stuck collective is an error here rather than a watchdog abort. train.dist_backend = gloo instead stages
// CUDA tensors through host memory (several ranks may then share a GPU). CPU builds refuse CUDA ranks.
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

// How ranks exchange CUDA tensors; CPU tensors always go through Gloo.
enum class DistBackend { gloo, nccl };
const char* dist_backend_name(DistBackend b);
// Whether this build links libtorch_cuda and ProcessGroupNCCL (SSMLAB_WITH_CUDA).
bool dist_cuda_build();
// train.dist_backend (auto | gloo | nccl) for ranks whose device is CUDA (`device_is_cuda`) or CPU, in a build with
// or without CUDA: auto is nccl for CUDA and gloo for CPU. nccl for CPU ranks and unknown names are ConfigErrors;
// CUDA ranks in a build without CUDA are an Error that says so (whatever the option).
DistBackend choose_dist_backend(const std::string& option, bool device_is_cuda, bool cuda_build);
// The CUDA device index of a rank: LOCAL_RANK among the `visible` devices. One visible device while
// CUDA_VISIBLE_DEVICES is set (`visible_env_set`: Slurm's --gpus-per-task, a sweep slot) is every rank's cuda:0.
// More local ranks than devices is an Error for NCCL (one GPU per rank); with Gloo (`share_ok`) ranks wrap around
// (LOCAL_RANK mod visible). `device` is train.device: cuda, auto, or cuda:K, which must be the index chosen
// (a ConfigError otherwise: cuda:K would pin every rank to one GPU).
int rank_cuda_index(const std::string& device, int local_rank, int visible, bool visible_env_set, bool share_ok);

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

  // Binds this rank to cuda:`index` (the current CUDA device) and, for nccl, builds ProcessGroupNCCL on the same
  // store and checks it with one all-reduce (bounded by the timeout; a failure names NCCL, the device and the
  // rank). Only in CUDA builds (an Error otherwise). Called by bind_rank_device; again only with the same binding.
  void use_cuda(int index, DistBackend backend);
  // "Gloo", or "NCCL (cuda:1)" / "Gloo (cuda:1, staged through host memory)" once use_cuda was called.
  std::string describe() const;

  // Sum over ranks of each tensor (contiguous; CPU tensors through Gloo, CUDA tensors through NCCL or staged
  // through Gloo), in place; all launched before the first wait.
  void allreduce_sum(std::vector<at::Tensor>& tensors, const char* what);
  // Rank `root`'s values into every rank's tensor, in place.
  void broadcast(std::vector<at::Tensor>& tensors, int root, const char* what);
  void barrier(const char* what);

 private:
  template <class Launch>
  void run_collective(std::vector<at::Tensor>& tensors, const char* what, Launch&& launch);
  struct Impl;
  DistEnv env_;
  std::unique_ptr<Impl> impl_;
};

// The process group the trainer uses; nullptr in a single process. Set once by the CLI (init_distributed_from_env)
// or by a test.
ProcessGroup* current_group();
void set_current_group(std::shared_ptr<ProcessGroup> group);

// The device of this rank for train.device `device` and train.dist_backend `backend_option`: cpu ranks keep Gloo;
// CUDA ranks get cuda:rank_cuda_index(...) and the chosen backend (group.use_cuda). Errors as choose_dist_backend
// and rank_cuda_index, and no visible CUDA device.
c10::Device bind_rank_device(ProcessGroup& group, const std::string& device, const std::string& backend_option);

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
