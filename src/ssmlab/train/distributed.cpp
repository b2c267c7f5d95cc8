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
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

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
};

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

void ProcessGroup::allreduce_sum(std::vector<at::Tensor>& tensors, const char* what) {
  dist_collective(*this, what, [&] {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& t : tensors) {
      SSMLAB_CHECK(t.is_contiguous() && t.device().is_cpu(), what, ": all-reduce takes contiguous CPU tensors; got ",
                   tensor_str(t));
      std::vector<at::Tensor> one{t};
      works.push_back(impl_->gloo->allreduce(one, c10d::AllreduceOptions{}));
    }
    for (auto& w : works) w->wait();
  });
}

void ProcessGroup::broadcast(std::vector<at::Tensor>& tensors, int root, const char* what) {
  dist_collective(*this, what, [&] {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& t : tensors) {
      std::vector<at::Tensor> one{t};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      works.push_back(impl_->gloo->broadcast(one, o));
    }
    for (auto& w : works) w->wait();
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
                env->master_port, ", Gloo)"));
  return current_group();
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
