#include "ssmlab/train/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/core/json_limits.h"
#include "ssmlab/models/safetensors.h"
#include "ssmlab/train/checksums.h"
#include "ssmlab/train/state_file.h"
#include "ssmlab/runfolder/layout.h"

namespace ssmlab::train {
namespace fs = std::filesystem;
using nlohmann::json;
using TensorMap = std::map<std::string, at::Tensor>;

namespace {

const std::string kModelFile(runfolder::kCheckpointModel);
const std::string kOptimizerFile(runfolder::kCheckpointOptimizer);
const std::string kStateFile(runfolder::kCheckpointState);
const std::string kPrefix(runfolder::kCheckpointPrefix);  // step_

TensorMap model_tensors(const torch::nn::Module& model) {
  TensorMap out;
  for (const auto& p : model.named_parameters(/*recurse=*/true))
    if (p.value().defined()) out.emplace(p.key(), p.value());
  for (const auto& b : model.named_buffers(/*recurse=*/true))
    if (b.value().defined()) out.emplace(b.key(), b.value());
  return out;
}

std::string tensor_summary(const at::Tensor& t) { return str(shape_str(t.sizes()), " ", c10::toString(t.scalar_type())); }

// Fails with every difference at once (a changed config usually touches many tensors).
void fail_if_problems(const std::vector<std::string>& problems, const std::string& file) {
  if (problems.empty()) return;
  std::string msg = str("checkpoint file '", file, "' does not match the model (", problems.size(), " problem",
                        problems.size() == 1 ? "" : "s", "):");
  for (const auto& p : problems) msg += "\n  " + p;
  throw Error(msg);
}

// `found` must hold exactly the tensors of `expected`, with the same shapes and dtypes.
void check_same_tensors(const TensorMap& expected, const TensorMap& found, const std::string& file) {
  std::vector<std::string> problems;
  for (const auto& [name, want] : expected) {
    auto it = found.find(name);
    if (it == found.end()) {
      problems.push_back(str("missing tensor '", name, "' (expected ", tensor_summary(want), ")"));
    } else if (it->second.sizes() != want.sizes() || it->second.scalar_type() != want.scalar_type()) {
      problems.push_back(str("tensor '", name, "': expected ", tensor_summary(want), ", found ", tensor_summary(it->second)));
    }
  }
  for (const auto& [name, t] : found)
    if (!expected.count(name)) problems.push_back(str("unexpected tensor '", name, "' (", tensor_summary(t), ")"));
  fail_if_problems(problems, file);
}

void copy_into(const TensorMap& targets, const TensorMap& values) {
  c10::NoGradGuard no_grad;
  for (const auto& [name, t] : targets) {
    at::Tensor dst = t;
    dst.copy_(values.at(name));
  }
}

// Names of each param group's parameters, in order; a parameter unknown to the model is an error.
std::vector<std::vector<std::string>> group_names(const torch::optim::AdamW& opt, const torch::nn::Module& model) {
  std::map<const void*, std::string> names;
  for (const auto& p : model.named_parameters(/*recurse=*/true)) names.emplace(p.value().unsafeGetTensorImpl(), p.key());
  std::vector<std::vector<std::string>> out;
  for (size_t g = 0; g < opt.param_groups().size(); ++g) {
    out.emplace_back();
    const auto& params = opt.param_groups()[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      auto it = names.find(params[i].unsafeGetTensorImpl());
      SSMLAB_CHECK(it != names.end(), "checkpoint: optimizer parameter #", i, " of param group ", g, " (",
                   tensor_summary(params[i]), ") is not a parameter of the model");
      out.back().push_back(it->second);
    }
  }
  return out;
}

void save_optimizer(const fs::path& file, const torch::nn::Module& model, const torch::optim::AdamW& opt) {
  const auto names = group_names(opt, model);
  TensorMap tensors;
  json groups = json::array();
  for (size_t g = 0; g < opt.param_groups().size(); ++g) {
    const auto& group = opt.param_groups()[g];
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    for (size_t i = 0; i < group.params().size(); ++i) {
      auto it = opt.state().find(group.params()[i].unsafeGetTensorImpl());
      if (it == opt.state().end()) continue;  // lazy state: this parameter has not been stepped yet
      const auto* s = dynamic_cast<const torch::optim::AdamWParamState*>(it->second.get());
      SSMLAB_CHECK(s, "checkpoint: optimizer state is not an AdamWParamState");
      const std::string& name = names[g][i];
      tensors[name + ".step"] = at::scalar_tensor(s->step(), at::kLong);
      tensors[name + ".exp_avg"] = s->exp_avg();
      tensors[name + ".exp_avg_sq"] = s->exp_avg_sq();
      if (s->max_exp_avg_sq().defined()) tensors[name + ".max_exp_avg_sq"] = s->max_exp_avg_sq();
    }
    groups.push_back({{"lr", o.lr()},
                      {"betas", {std::get<0>(o.betas()), std::get<1>(o.betas())}},
                      {"eps", o.eps()},
                      {"weight_decay", o.weight_decay()},
                      {"amsgrad", o.amsgrad()},
                      {"params", names[g]}});
  }
  models::save_safetensors(file, tensors, {{"format", "ssmlab.adamw"}, {"param_groups", groups.dump()}});
}

// What load_optimizer will install, fully checked before anything is changed.
struct OptimizerRestore {
  std::vector<torch::optim::AdamWOptions> options;
  std::vector<std::pair<void*, std::unique_ptr<torch::optim::AdamWParamState>>> states;
};

torch::optim::AdamWOptions parse_group_options(const json& g, const std::string& where) {
  auto num = [&](const char* key) {
    SSMLAB_CHECK(g.contains(key) && g[key].is_number(), where, ": missing or non-numeric \"", key, "\"");
    return g[key].get<double>();
  };
  SSMLAB_CHECK(g.contains("betas") && g["betas"].is_array() && g["betas"].size() == 2 && g["betas"][0].is_number() &&
                   g["betas"][1].is_number(),
               where, ": \"betas\" must be two numbers");
  SSMLAB_CHECK(g.contains("amsgrad") && g["amsgrad"].is_boolean(), where, ": missing or non-boolean \"amsgrad\"");
  return torch::optim::AdamWOptions(num("lr"))
      .betas({g["betas"][0].get<double>(), g["betas"][1].get<double>()})
      .eps(num("eps"))
      .weight_decay(num("weight_decay"))
      .amsgrad(g["amsgrad"].get<bool>());
}

OptimizerRestore prepare_optimizer(const fs::path& file, const torch::nn::Module& model,
                                   const torch::optim::AdamW& opt) {
  const std::string f = file.string();
  models::TensorFile tf = models::parse_safetensors(read_verified(file), f);
  const auto names = group_names(opt, model);

  json groups;
  try {
    const std::string& text = tf.metadata.at("param_groups");
    if (json_limits::depth(text) > json_limits::kMaxDepth)
      fail("JSON nested deeper than the limit of ", json_limits::kMaxDepth, " levels");
    groups = json::parse(text);
  } catch (const std::exception& e) {
    fail("checkpoint file '", f, "': missing or bad \"param_groups\" metadata: ", e.what());
  }
  SSMLAB_CHECK(groups.is_array() && groups.size() == names.size(), "checkpoint file '", f, "': ",
               groups.is_array() ? groups.size() : 0, " param groups saved, the optimizer has ", names.size());
  OptimizerRestore out;
  std::map<std::string, std::pair<at::Tensor, bool>> by_name;  // name -> (param, amsgrad)
  for (size_t g = 0; g < names.size(); ++g) {
    const std::string where = str("checkpoint file '", f, "': param group ", g);
    SSMLAB_CHECK(groups[g].is_object(), where, " is not an object");
    out.options.push_back(parse_group_options(groups[g], where));
    SSMLAB_CHECK(groups[g].contains("params") && groups[g]["params"] == json(names[g]), where,
                 ": saved parameters ", groups[g].value("params", json()).dump(), ", the optimizer has ",
                 json(names[g]).dump());
    for (size_t i = 0; i < names[g].size(); ++i)
      by_name[names[g][i]] = {opt.param_groups()[g].params()[i], out.options.back().amsgrad()};
  }

  // Group "<param>.<field>" tensors by parameter.
  static const char* kFields[] = {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  std::map<std::string, TensorMap> fields;
  std::vector<std::string> problems;
  for (auto& [key, t] : tf.tensors) {
    const auto dot = key.rfind('.');
    const std::string field = dot == std::string::npos ? "" : key.substr(dot + 1);
    const std::string name = dot == std::string::npos ? key : key.substr(0, dot);
    const bool known = std::find(std::begin(kFields), std::end(kFields), field) != std::end(kFields);
    if (!known || !by_name.count(name))
      problems.push_back(str("unexpected tensor '", key, "' (", tensor_summary(t), ")"));
    else
      fields[name][field] = t;
  }
  for (auto& [name, f_map] : fields) {
    const auto& [param, amsgrad] = by_name.at(name);
    std::vector<std::string> want = {"exp_avg", "exp_avg_sq"};
    if (amsgrad) want.push_back("max_exp_avg_sq");
    for (const auto& w : want) {
      auto it = f_map.find(w);
      if (it == f_map.end())
        problems.push_back(str("missing tensor '", name, ".", w, "' (expected ", tensor_summary(param), ")"));
      else if (it->second.sizes() != param.sizes() || it->second.scalar_type() != param.scalar_type())
        problems.push_back(str("tensor '", name, ".", w, "': expected ", tensor_summary(param), ", found ",
                               tensor_summary(it->second)));
    }
    auto st = f_map.find("step");
    if (st == f_map.end() || st->second.dim() != 0 || st->second.scalar_type() != at::kLong)
      problems.push_back(str("tensor '", name, ".step': expected a 0-d Long, found ",
                             st == f_map.end() ? std::string("nothing") : tensor_summary(st->second)));
    if (!problems.empty()) continue;
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->step(st->second.item<int64_t>());
    s->exp_avg(f_map.at("exp_avg").to(param.device()));
    s->exp_avg_sq(f_map.at("exp_avg_sq").to(param.device()));
    if (f_map.count("max_exp_avg_sq")) s->max_exp_avg_sq(f_map.at("max_exp_avg_sq").to(param.device()));
    out.states.emplace_back(param.unsafeGetTensorImpl(), std::move(s));
  }
  fail_if_problems(problems, f);
  return out;
}

void commit_optimizer(OptimizerRestore&& r, torch::optim::AdamW& opt) {
  for (size_t g = 0; g < opt.param_groups().size(); ++g) {
    auto& group = opt.param_groups()[g];
    static_cast<torch::optim::AdamWOptions&>(group.options()) = r.options[g];
    for (const auto& p : group.params()) opt.state().erase(p.unsafeGetTensorImpl());
  }
  for (auto& [key, s] : r.states) opt.state()[key] = std::move(s);
}

std::string torch_rng_state() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::unique_lock<std::mutex> lock(gen.mutex());
  const at::Tensor s = gen.get_state().contiguous();
  lock.unlock();
  return std::string(static_cast<const char*>(s.const_data_ptr()), s.nbytes());
}

// Decodes and checks the state on a clone of the default generator; the caller applies it.
at::Tensor prepare_torch_rng(const std::string& b64, const std::string& file) {
  std::string bytes;
  try {
    bytes = base64_decode(b64);
  } catch (const Error& e) {
    fail("checkpoint file '", file, "': \"torch_rng_state_b64\": ", e.what());
  }
  at::Tensor t = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  if (!bytes.empty()) std::memcpy(t.mutable_data_ptr(), bytes.data(), bytes.size());
  try {
    at::Generator probe = at::detail::getDefaultCPUGenerator().clone();
    probe.set_state(t);
  } catch (const std::exception& e) {
    fail("checkpoint file '", file, "': \"torch_rng_state_b64\" is not a CPU generator state (", bytes.size(),
         " bytes): ", e.what());
  }
  return t;
}

// Every problem found while checking a checkpoint is about its files, so it leaves `ssmlab` with the data
// exit code (core/exit_codes.h) whichever helper raised it.
template <class F>
auto as_data_error(F&& f) {
  try {
    return f();
  } catch (const DataError&) {
    throw;
  } catch (const Error& e) {
    throw DataError(e.what());
  }
}

struct Found {
  int64_t step;
  fs::path path;
  std::string suffix;  // "", ".tmp" or ".old"
};

// Folders named step_<digits>[.tmp|.old] under `root`; complete ones (suffix "") hold all three files.
std::vector<Found> scan(const fs::path& root) {
  std::vector<Found> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (!entry.is_directory(ec)) continue;
    std::string name = entry.path().filename().string();
    std::string suffix;
    if (name.ends_with(".tmp") || name.ends_with(".old")) {
      suffix = name.substr(name.size() - 4);
      name.resize(name.size() - 4);
    }
    if (!name.starts_with(kPrefix)) continue;
    const size_t digits = name.size() - kPrefix.size();
    if (digits == 0 || digits > 18) continue;
    if (!std::all_of(name.begin() + kPrefix.size(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    if (suffix.empty())
      for (const std::string* f : {&kModelFile, &kOptimizerFile, &kStateFile})
        if (!fs::is_regular_file(entry.path() / *f, ec)) suffix = ".incomplete";
    out.push_back({std::stoll(name.substr(kPrefix.size())), entry.path(), suffix});
  }
  std::sort(out.begin(), out.end(), [](const Found& a, const Found& b) { return a.step < b.step; });
  return out;
}

}  // namespace

fs::path checkpoint_dir(const fs::path& root, int64_t step) {
  SSMLAB_CHECK(step >= 0, "checkpoint_dir: step must be >= 0, got ", step);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%08lld", static_cast<long long>(step));
  return root / (kPrefix + buf);
}

void save_checkpoint(const fs::path& dir, const torch::nn::Module& model, const torch::optim::AdamW& opt,
                     const TrainState& state) {
  SSMLAB_CHECK(!dir.empty() && dir.has_filename(), "save_checkpoint: bad folder '", dir.string(), "'");
  fs::path tmp = dir;
  tmp += ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);  // a stale one from a crash
  fs::create_directories(tmp, ec);
  SSMLAB_CHECK(!ec, "cannot save checkpoint '", dir.string(), "': cannot create '", tmp.string(), "': ", ec.message());
  try {
    models::save_safetensors(tmp / kModelFile, model_tensors(model), {{"format", "ssmlab.model"}});
    save_optimizer(tmp / kOptimizerFile, model, opt);
    json j = {{"format", "ssmlab.checkpoint"},
              {"version", 1},
              {"step", state.step},
              {"epoch", state.epoch},
              {"rng_state", state.rng_state},
              {"torch_rng_state_b64", base64_encode(torch_rng_state())},
              {"extra", state.extra}};
    write_file_atomic(tmp / kStateFile, j.dump(2) + "\n");
    write_checksums(tmp, {kModelFile, kOptimizerFile, kStateFile});
    rename_directory_into_place(tmp, dir);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

TrainState load_checkpoint(const fs::path& dir, torch::nn::Module& model, torch::optim::AdamW& opt) {
  std::error_code ec;
  SSMLAB_CHECK(fs::is_directory(dir, ec), "checkpoint folder '", dir.string(), "' does not exist or is not a folder");
  // Check everything first; change model, optimizer and generator only when all of it is good.
  const TensorMap targets = model_tensors(model);
  const fs::path model_file = dir / kModelFile;
  models::TensorFile weights;
  OptimizerRestore restore;
  TrainState state;
  at::Tensor rng;
  as_data_error([&] {
    weights = models::parse_safetensors(read_verified(model_file), model_file.string());
    check_same_tensors(targets, weights.tensors, model_file.string());
    restore = prepare_optimizer(dir / kOptimizerFile, model, opt);
    state = read_state_file(dir / kStateFile);
    if (!state.torch_rng_state_b64.empty())
      rng = prepare_torch_rng(state.torch_rng_state_b64, (dir / kStateFile).string());
  });

  copy_into(targets, weights.tensors);
  commit_optimizer(std::move(restore), opt);
  if (rng.defined()) {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(rng);
  }
  return state;
}

void load_model_weights(const fs::path& file, torch::nn::Module& model) {
  const TensorMap targets = model_tensors(model);
  models::TensorFile weights;
  as_data_error([&] {
    weights = models::parse_safetensors(read_verified(file), file.string());
    check_same_tensors(targets, weights.tensors, file.string());
  });
  copy_into(targets, weights.tensors);
}

fs::path latest_checkpoint(const fs::path& root) {
  const auto found = scan(root);
  for (auto it = found.rbegin(); it != found.rend(); ++it)
    if (it->suffix.empty()) return it->path;
  return {};
}

void prune_checkpoints(const fs::path& root, int64_t keep_last) {
  if (keep_last <= 0) return;
  const auto found = scan(root);
  std::vector<const Found*> complete;
  for (const auto& f : found)
    if (f.suffix.empty()) complete.push_back(&f);
  if (complete.empty()) return;
  const int64_t newest = complete.back()->step;
  std::error_code ec;
  for (size_t i = 0; i + static_cast<size_t>(keep_last) < complete.size(); ++i) {
    fs::remove_all(complete[i]->path, ec);
    SSMLAB_CHECK(!ec, "prune_checkpoints: cannot remove '", complete[i]->path.string(), "': ", ec.message());
  }
  for (const auto& f : found)
    if ((f.suffix == ".tmp" || f.suffix == ".old") && f.step < newest) fs::remove_all(f.path, ec);
}

}  // namespace ssmlab::train
