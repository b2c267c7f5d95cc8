#include "ssmlab/train/distributed.h"

#include <cstdlib>
#include <map>

#include <ATen/ATen.h>

// ProcessGroupGloo's declaration needs Gloo's headers, which the torch wheel does not ship: Debian's libgloo-dev
// provides them (scripts/setup.sh). Only declarations are used; the code is libtorch_cpu's.
#if !__has_include(<gloo/config.h>)
#error "ssmlab's data-parallel trainer needs Gloo's headers: apt-get install libgloo-dev (scripts/setup.sh does)"
#endif
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

// CUDA builds: ProcessGroupNCCL is declared by the wheel's headers (with nccl.h, which src/CMakeLists.txt looks for
// in the CUDA toolkit, /usr/local/include and the wheel's nvidia/nccl; SSMLAB_DIST_NCCL when found) and defined in
// libtorch_cuda, which cmake/Cuda.cmake links whenever SSMLAB_WITH_CUDA is defined. A CUDA build without nccl.h
// still trains CUDA ranks over Gloo (train.dist_backend = gloo) and refuses nccl, naming the missing header.
#ifdef SSMLAB_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif
#ifdef SSMLAB_DIST_NCCL
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/log.h"

namespace ssmlab::train {
namespace {

const char* env_or_null(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

int64_t dist_env_int(const char* name, const char* text, int64_t lo, int64_t hi) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || errno != 0 || v < lo || v > hi)
    fail_config("environment variable ", name, "='", text, "' is not an integer in [", lo, ", ", hi, "]");
  return v;
}

// The message of a c10d / Gloo exception without LibTorch's C++ backtrace.
std::string dist_error_text(const std::exception& e) {
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

}  // namespace

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
  int cuda_index = -1;  // use_cuda's device, -1 before
  DistBackend cuda_backend = DistBackend::gloo;
#ifdef SSMLAB_DIST_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
  ~Impl() {
    if (nccl) try {
        nccl->shutdown();
      } catch (...) {  // leaving anyway; the error that ended the run is the one to report
      }
  }
#endif
};

const char* dist_backend_name(DistBackend b) { return b == DistBackend::nccl ? "nccl" : "gloo"; }

bool dist_cuda_build() {
#ifdef SSMLAB_WITH_CUDA
  return true;
#else
  return false;
#endif
}

DistBackend choose_dist_backend(const std::string& option, bool device_is_cuda, bool cuda_build) {
  if (option != "auto" && option != "gloo" && option != "nccl")
    fail_config("train.dist_backend = '", option, "': expected auto, gloo or nccl");
  if (device_is_cuda && !cuda_build)
    fail("data-parallel training on CUDA: this ssmlab was built without CUDA (SSMLAB_WITH_CUDA off, so neither "
         "libtorch_cuda nor ProcessGroupNCCL is linked); rebuild with -DSSMLAB_CUDA=ON on a machine whose LibTorch "
         "has its CUDA libraries, or train on train.device = cpu (Gloo)");
  if (option == "nccl" && !device_is_cuda)
    fail_config("train.dist_backend = 'nccl' all-reduces CUDA tensors only, but train.device is the CPU: use gloo "
                "or auto");
  if (option == "gloo") return DistBackend::gloo;
  if (option == "nccl") return DistBackend::nccl;
  return device_is_cuda ? DistBackend::nccl : DistBackend::gloo;
}

int rank_cuda_index(const std::string& device, int local_rank, int visible, bool visible_env_set, bool share_ok) {
  if (visible <= 0)
    fail("train.device = '", device, "' on a rank with LOCAL_RANK ", local_rank, ", but no CUDA device is visible");
  int index = -1;
  if (local_rank < visible) {
    index = local_rank;
  } else if (visible == 1 && visible_env_set) {
    index = 0;  // CUDA_VISIBLE_DEVICES gave this process its own GPU (srun --gpus-per-task, a sweep slot)
  } else if (share_ok) {
    index = local_rank % visible;
  } else {
    fail("LOCAL_RANK ", local_rank, " but only ", visible, " CUDA device", visible == 1 ? " is" : "s are",
         " visible on this host: NCCL takes one GPU per rank (cuda:LOCAL_RANK), so start at most ", visible,
         " ranks per host (--nproc), or let ranks share GPUs with train.dist_backend = gloo");
  }
  if (device != "cuda" && device != "auto") {
    c10::Device d(c10::kCPU);
    try {
      d = c10::Device(device);
    } catch (const c10::Error&) {
      fail_config("unknown device '", device, "': expected cpu, cuda, cuda:N or auto");
    }
    if (!d.is_cuda())
      fail_config("rank_cuda_index: train.device = '", device, "' is not a CUDA device");
    if (d.has_index() && d.index() != index)
      fail_config("train.device = '", device, "' would put every rank on one GPU; with several ranks write "
                  "train.device = cuda: the rank with LOCAL_RANK ", local_rank, " takes cuda:", index);
  }
  return index;
}

std::optional<DistEnv> dist_env_from_environment() {
  DistEnv env;
  const char* world = env_or_null("WORLD_SIZE");
  const char* rank = env_or_null("RANK");
  if (world != nullptr || rank != nullptr) {
    if (world == nullptr || rank == nullptr)
      fail_config("torchrun environment: ", world ? "WORLD_SIZE" : "RANK", " is set but ", world ? "RANK" : "WORLD_SIZE",
                  " is not; set both (and MASTER_ADDR, MASTER_PORT)");
    env.world_size = static_cast<int>(dist_env_int("WORLD_SIZE", world, 1, 1 << 16));
    env.rank = static_cast<int>(dist_env_int("RANK", rank, 0, env.world_size - 1));
    const char* local = env_or_null("LOCAL_RANK");
    env.local_rank = local ? static_cast<int>(dist_env_int("LOCAL_RANK", local, 0, 1 << 16)) : 0;
    env.source = "torchrun environment";
  } else if (const char* ntasks = env_or_null("SLURM_NTASKS"); ntasks != nullptr && env_or_null("SLURM_PROCID")) {
    env.world_size = static_cast<int>(dist_env_int("SLURM_NTASKS", ntasks, 1, 1 << 16));
    env.rank = static_cast<int>(dist_env_int("SLURM_PROCID", std::getenv("SLURM_PROCID"), 0, env.world_size - 1));
    const char* local = env_or_null("SLURM_LOCALID");
    env.local_rank = local ? static_cast<int>(dist_env_int("SLURM_LOCALID", local, 0, 1 << 16)) : 0;
    env.source = "Slurm environment";
  } else {
    return std::nullopt;
  }
  if (env.world_size == 1) return std::nullopt;
  const char* addr = env_or_null("MASTER_ADDR");
  const char* port = env_or_null("MASTER_PORT");
  if (port == nullptr)
    fail_config(env.source, ": WORLD_SIZE is ", env.world_size,
                " but MASTER_PORT is not set (the port rank 0 serves the rendezvous on)");
  env.master_port = static_cast<int>(dist_env_int("MASTER_PORT", port, 1, 65535));
  if (addr != nullptr) env.master_addr = addr;
  if (const char* t = env_or_null("SSMLAB_DIST_TIMEOUT")) {
    char* end = nullptr;
    const double s = std::strtod(t, &end);
    if (end == t || *end != '\0' || !(s > 0) || s > 86400)
      fail_config("environment variable SSMLAB_DIST_TIMEOUT='", t, "' is not a number of seconds in (0, 86400]");
    env.timeout = std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
  }
  return env;
}

ProcessGroup::ProcessGroup(const DistEnv& env) : env_(env), impl_(std::make_unique<Impl>()) {
  SSMLAB_CHECK(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size, "process group: rank ", env.rank,
               " of ", env.world_size, " is out of range");
  const double secs = static_cast<double>(env.timeout.count()) / 1000.0;
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = env.world_size;
    so.waitWorkers = true;
    so.timeout = env.timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    fail("rank ", env.rank, " of ", env.world_size, ": the rendezvous at MASTER_ADDR:MASTER_PORT = ", env.master_addr,
         ":", env.master_port, " failed within ", secs, " s (SSMLAB_DIST_TIMEOUT): ",
         env.rank == 0 ? "not every rank joined (is one missing, or started with another MASTER_PORT?), or the "
                         "port is taken"
                       : "rank 0 does not serve it there (wrong MASTER_ADDR / MASTER_PORT, or rank 0 is not running)",
         " — ", dist_error_text(e));
  }
  try {
    auto opts = c10d::ProcessGroupGloo::Options::create(env.timeout);
    // Gloo's transport picks the interface of the address this host resolves to (GLOO_SOCKET_IFNAME overrides,
    // as in PyTorch); on one host the loopback is enough.
    if (const char* ifname = env_or_null("GLOO_SOCKET_IFNAME"))
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost")
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    opts->threads = 2;
    impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env.rank, env.world_size, opts);
  } catch (const std::exception& e) {
    fail("rank ", env.rank, " of ", env.world_size, ": building the Gloo process group failed within ", secs,
         " s (SSMLAB_DIST_TIMEOUT; another rank may have stopped): ", dist_error_text(e));
  }
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::use_cuda(int index, DistBackend backend) {
  if (impl_->cuda_index >= 0) {  // a second fit in this process: the same binding, or an error
    SSMLAB_CHECK(impl_->cuda_index == index && impl_->cuda_backend == backend, "rank ", env_.rank,
                 ": the process group is bound to cuda:", impl_->cuda_index, " with ",
                 dist_backend_name(impl_->cuda_backend), "; it cannot move to cuda:", index, " with ",
                 dist_backend_name(backend));
    return;
  }
#ifdef SSMLAB_WITH_CUDA
  SSMLAB_CHECK(index >= 0 && index < static_cast<int>(c10::cuda::device_count()), "rank ", env_.rank,
               ": cuda:", index, " is not a visible CUDA device (", static_cast<int>(c10::cuda::device_count()),
               " visible)");
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
  impl_->cuda_index = index;
  impl_->cuda_backend = backend;
  if (backend != DistBackend::nccl) return;
#ifndef SSMLAB_DIST_NCCL
  fail("rank ", env_.rank, " of ", env_.world_size, " on cuda:", index, ": train.dist_backend asks for NCCL, but this "
       "CUDA build found no nccl.h when it was configured (SSMLAB_DIST_NCCL off): install NCCL's headers and "
       "reconfigure, or set train.dist_backend = gloo");
#else
  const double secs = static_cast<double>(env_.timeout.count()) / 1000.0;
  // Blocking waits: Work::wait throws after the timeout (instead of the watchdog ending the process), so a rank
  // that died or hung is reported like Gloo's. A value the user set is kept.
  setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
  try {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = env_.timeout;
    auto store = c10::make_intrusive<c10d::PrefixStore>("ssmlab_nccl", impl_->store);
    impl_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env_.rank, env_.world_size, opts);
    // NCCL builds its communicator at the first collective: do one now, so that a broken setup (two ranks on one
    // GPU, no route between hosts, a missing rank) fails here with its reason.
    std::vector<at::Tensor> probe{at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(c10::kCUDA, index))};
    impl_->nccl->allreduce(probe, c10d::AllreduceOptions{})->wait();
    const double got = probe[0].item<double>();
    SSMLAB_CHECK(got == static_cast<double>(env_.world_size), "the NCCL check all-reduce summed to ", got,
                 " instead of ", env_.world_size, " (one per rank)");
  } catch (const std::exception& e) {
    fail("rank ", env_.rank, " of ", env_.world_size, " on cuda:", index, ": building the NCCL process group failed "
         "within ", secs, " s (SSMLAB_DIST_TIMEOUT; another rank may have stopped, two ranks may share a GPU, or "
         "the hosts cannot reach each other: NCCL_DEBUG=INFO tells more): ", dist_error_text(e));
  }
#endif
#else
  (void)backend;
  fail("rank ", env_.rank, " of ", env_.world_size, ": cuda:", index, " asked for, but this ssmlab was built without "
       "CUDA (SSMLAB_WITH_CUDA off): rebuild with -DSSMLAB_CUDA=ON, or train on train.device = cpu");
#endif
}

std::string ProcessGroup::describe() const {
  if (impl_->cuda_index < 0) return "Gloo";
  if (impl_->cuda_backend == DistBackend::nccl) return str("NCCL (cuda:", impl_->cuda_index, ")");
  return str("Gloo (cuda:", impl_->cuda_index, ", staged through host memory)");
}

namespace {

template <class F>
void dist_collective(const ProcessGroup& g, const char* what, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    fail("rank ", g.rank(), " of ", g.size(), ": ", what, " failed: ", dist_error_text(e),
         " (another rank has probably stopped or hung: see its error; the run resumes from its last checkpoint)");
  }
}

}  // namespace

namespace {

// One tensor's collective, routed by its device: CPU tensors through Gloo, CUDA tensors through NCCL when the group
// has it, else staged through host memory and Gloo (copied back once the work is done).
struct DistPending {
  c10::intrusive_ptr<c10d::Work> work;
  at::Tensor staged;  // the host copy Gloo worked on, or undefined
  at::Tensor target;  // the caller's CUDA tensor to copy it back into
};

}  // namespace

template <class Launch>
void ProcessGroup::run_collective(std::vector<at::Tensor>& tensors, const char* what, Launch&& launch) {
  dist_collective(*this, what, [&] {
    std::vector<DistPending> pending;
    for (auto& t : tensors) {
      SSMLAB_CHECK(t.is_contiguous() && (t.device().is_cpu() || t.device().is_cuda()), what,
                   ": collectives take contiguous CPU or CUDA tensors; got ", tensor_str(t));
      DistPending p;
      if (t.device().is_cpu()) {
        std::vector<at::Tensor> one{t};
        p.work = launch(*impl_->gloo, one);
      } else {
        SSMLAB_CHECK(impl_->cuda_index >= 0 && t.device().index() == impl_->cuda_index, what, ": a tensor on ",
                     t.device().str(), " but this rank is bound to ",
                     impl_->cuda_index < 0 ? std::string("no CUDA device") : str("cuda:", impl_->cuda_index));
#ifdef SSMLAB_DIST_NCCL
        if (impl_->nccl) {
          std::vector<at::Tensor> one{t};
          p.work = launch(*impl_->nccl, one);
          pending.push_back(std::move(p));
          continue;
        }
#endif
        p.staged = t.to(at::kCPU);
        p.target = t;
        std::vector<at::Tensor> one{p.staged};
        p.work = launch(*impl_->gloo, one);
      }
      pending.push_back(std::move(p));
    }
    for (auto& p : pending) {
      p.work->wait();
      if (p.target.defined()) p.target.copy_(p.staged);
    }
  });
}

void ProcessGroup::allreduce_sum(std::vector<at::Tensor>& tensors, const char* what) {
  run_collective(tensors, what, [](c10d::Backend& b, std::vector<at::Tensor>& one) {
    return b.allreduce(one, c10d::AllreduceOptions{});
  });
}

void ProcessGroup::broadcast(std::vector<at::Tensor>& tensors, int root, const char* what) {
  run_collective(tensors, what, [root](c10d::Backend& b, std::vector<at::Tensor>& one) {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    return b.broadcast(one, o);
  });
}

void ProcessGroup::barrier(const char* what) {
  dist_collective(*this, what, [&] { impl_->gloo->barrier(c10d::BarrierOptions{})->wait(); });
}

namespace {
std::shared_ptr<ProcessGroup>& dist_current_slot() {
  static std::shared_ptr<ProcessGroup> g;
  return g;
}
}  // namespace

ProcessGroup* current_group() { return dist_current_slot().get(); }
void set_current_group(std::shared_ptr<ProcessGroup> group) { dist_current_slot() = std::move(group); }

ProcessGroup* init_distributed_from_env() {
  const auto env = dist_env_from_environment();
  if (!env) return nullptr;
  set_current_group(std::make_shared<ProcessGroup>(*env));
  log::info(str("rank ", env->rank, " of ", env->world_size, " (", env->source, ", rendezvous ", env->master_addr, ":",
                env->master_port, ")"));
  return current_group();
}

c10::Device bind_rank_device(ProcessGroup& group, const std::string& device, const std::string& backend_option) {
  const bool wants_cuda = device.rfind("cuda", 0) == 0 || (device == "auto" && cuda_available());
  const DistBackend backend = choose_dist_backend(backend_option, wants_cuda, dist_cuda_build());
  if (!wants_cuda) {
    const c10::Device d = parse_device(device);
    SSMLAB_CHECK(d.is_cpu(), "data-parallel training: train.device = '", device, "' is neither cpu nor CUDA");
    return d;
  }
  const int visible = cuda_available() ? static_cast<int>(at::getNumGPUs()) : 0;
  const int index = rank_cuda_index(device, group.env().local_rank, visible, env_or_null("CUDA_VISIBLE_DEVICES") != nullptr,
                                    backend == DistBackend::gloo);
  group.use_cuda(index, backend);
  log::info(str("rank ", group.rank(), " of ", group.size(), ": ", group.describe()));
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

std::pair<int64_t, int64_t> shard_rows(int64_t rows, int rank, int world) {
  SSMLAB_CHECK(world >= 1 && rank >= 0 && rank < world, "shard_rows: rank ", rank, " of ", world);
  const int64_t base = rows / world, extra = rows % world;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

void allreduce_gradients(ProcessGroup& group, const std::vector<at::Tensor>& params, std::vector<double>& scalars,
                         int64_t bucket_bytes) {
  // Which parameters have a gradient on some rank, and the scalars: one float64 vector, summed.
  const int64_t P = static_cast<int64_t>(params.size()), S = static_cast<int64_t>(scalars.size());
  at::Tensor meta = at::zeros({S + P}, at::kDouble);
  auto m = meta.accessor<double, 1>();
  for (int64_t i = 0; i < S; ++i) m[i] = scalars[static_cast<size_t>(i)];
  for (int64_t i = 0; i < P; ++i) m[S + i] = params[static_cast<size_t>(i)].grad().defined() ? 1.0 : 0.0;
  std::vector<at::Tensor> meta_v{meta};
  group.allreduce_sum(meta_v, "all-reduce of the loss");
  for (int64_t i = 0; i < S; ++i) scalars[static_cast<size_t>(i)] = m[i];
  // Buckets, newest parameter first, one dtype each.
  struct Bucket {
    std::vector<int64_t> members;
    int64_t bytes = 0;
  };
  std::map<c10::ScalarType, std::vector<Bucket>> by_dtype;
  std::vector<at::Tensor> flats;
  std::vector<std::vector<int64_t>> flat_members;
  for (int64_t i = P - 1; i >= 0; --i) {
    const at::Tensor& p = params[static_cast<size_t>(i)];
    if (m[S + i] == 0.0) continue;  // no rank has a gradient: left undefined
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    auto& list = by_dtype[p.scalar_type()];
    const int64_t b = p.numel() * static_cast<int64_t>(p.element_size());
    if (list.empty() || (list.back().bytes > 0 && list.back().bytes + b > bucket_bytes)) list.emplace_back();
    list.back().members.push_back(i);
    list.back().bytes += b;
  }
  // Pack every bucket, launch all their all-reduces, then wait for them.
  for (auto& [dtype, list] : by_dtype)
    for (auto& bucket : list) {
      std::vector<at::Tensor> parts;
      for (int64_t i : bucket.members) parts.push_back(params[static_cast<size_t>(i)].grad().reshape(-1));
      flats.push_back(at::cat(parts));
      flat_members.push_back(bucket.members);
    }
  group.allreduce_sum(flats, "all-reduce of the gradients");
  for (size_t k = 0; k < flats.size(); ++k) {
    int64_t off = 0;
    for (int64_t i : flat_members[k]) {
      at::Tensor g = params[static_cast<size_t>(i)].mutable_grad();
      const int64_t n = g.numel();
      g.copy_(flats[k].narrow(0, off, n).view_as(g));
      off += n;
    }
  }
}

}  // namespace ssmlab::train
