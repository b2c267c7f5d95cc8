// Hugging Face Mamba / Mamba-2 folders in and out (rules: hf_checkpoint.h).
#include "ssmlab/models/hf_checkpoint.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/core/json_limits.h"
#include "ssmlab/mixers/mamba1.h"
#include "ssmlab/mixers/mamba2.h"
#include "ssmlab/models/safetensors.h"

namespace ssmlab::models {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Python's json writes bare Infinity / -Infinity / NaN (older transformers' time_step_limit); nlohmann's parser
// refuses them. Outside strings they become the strings "inf", "-inf", "nan", which hf_number reads.
std::string hf_quote_nonfinite(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) out += text[++i];
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    auto word = [&](const char* w) { return text.compare(i, std::strlen(w), w) == 0; };
    if (word("-Infinity")) { out += "\"-inf\""; i += 8; continue; }
    if (word("Infinity")) { out += "\"inf\""; i += 7; continue; }
    if (word("NaN")) { out += "\"nan\""; i += 2; continue; }
    out += c;
  }
  return out;
}

// A number of config.json: a JSON number, or the non-finite forms ("inf" from hf_quote_nonfinite, transformers
// 5's {"__float__": "Infinity"}).
double hf_number(const json& v, const std::string& field, const std::string& file) {
  if (v.is_number()) return v.get<double>();
  std::string s;
  if (v.is_string()) s = v.get<std::string>();
  if (v.is_object() && v.contains("__float__") && v["__float__"].is_string()) s = v["__float__"].get<std::string>();
  if (s == "inf" || s == "Infinity") return INFINITY;
  if (s == "-inf" || s == "-Infinity") return -INFINITY;
  fail_config(file, ": config field '", field, "' must be a number; got ", v.dump());
}

// Reads config.json fields, remembering which were consumed so that unknown ones can be refused.
class HfFields {
 public:
  HfFields(const json& j, std::string file, std::string prefix = "")
      : j_(j), file_(std::move(file)), prefix_(std::move(prefix)) {}
  bool has(const std::string& k) const { return j_.contains(k) && !j_[k].is_null(); }
  const json& raw(const std::string& k) {
    used_.insert(k);
    return j_[k];
  }
  void ignore(std::initializer_list<const char*> keys) {
    for (const char* k : keys) used_.insert(k);
  }
  int64_t integer(const std::string& k, std::optional<int64_t> dflt = std::nullopt) {
    used_.insert(k);
    if (!has(k)) {
      if (dflt) return *dflt;
      fail_config(file_, ": config field '", prefix_ + k, "' is missing");
    }
    const json& v = j_[k];
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()) return static_cast<int64_t>(v.get<double>());
    fail_config(file_, ": config field '", prefix_ + k, "' must be an integer; got ", v.dump());
  }
  double number(const std::string& k, double dflt) {
    used_.insert(k);
    return has(k) ? hf_number(j_[k], prefix_ + k, file_) : dflt;
  }
  bool boolean(const std::string& k, bool dflt) {
    used_.insert(k);
    if (!has(k)) return dflt;
    if (!j_[k].is_boolean()) fail_config(file_, ": config field '", prefix_ + k, "' must be true or false; got ", j_[k].dump());
    return j_[k].get<bool>();
  }
  std::string string(const std::string& k, const std::string& dflt) {
    used_.insert(k);
    if (!has(k)) return dflt;
    if (!j_[k].is_string()) fail_config(file_, ": config field '", prefix_ + k, "' must be a string; got ", j_[k].dump());
    return j_[k].get<std::string>();
  }
  // A field whose only supported value is `want` (a missing field takes `dflt`).
  template <class T>
  void require(const std::string& k, const T& dflt, const T& want, const std::string& why) {
    used_.insert(k);
    T v = dflt;
    if (has(k)) {
      try {
        v = j_[k].get<T>();
      } catch (const json::exception&) {
        fail_config(file_, ": config field '", prefix_ + k, "' = ", j_[k].dump(), " is not supported (", why, ")");
      }
    }
    if (!(v == want))
      fail_config(file_, ": config field '", prefix_ + k, "' = ", j_[k].dump(), " is not supported (", why, ")");
  }
  // The causal conv's kernel width: ssmlab's op takes 1..4.
  int64_t conv_kernel(const std::string& k, int64_t dflt) {
    const int64_t conv = integer(k, dflt);
    if (conv < 1 || conv > 4)
      fail_config(file_, ": config field '", prefix_ + k, "' = ", conv, " is not supported (ssmlab's causal conv takes 1..4)");
    return conv;
  }
  // Mamba-1's dt rank: an integer, or "auto" (0: ssmlab's ceil(d_model / 16)).
  int64_t dt_rank(const std::string& k, int64_t dflt) {
    if (has(k) && raw(k).is_string()) {
      if (j_[k].get<std::string>() != "auto")
        fail_config(file_, ": config field '", prefix_ + k, "' = ", j_[k].dump(), " must be an integer or \"auto\"");
      return 0;
    }
    return integer(k, dflt);
  }
  // A [min, max] clamp of dt into (min, max); max inf (or export's 1e30) is no limit, stored as 0. False if absent.
  bool dt_range(const std::string& k, double& lo, double& hi) {
    if (!has(k)) return false;
    const json& lim = raw(k);
    const std::string name = prefix_ + k;
    if (!lim.is_array() || lim.size() != 2)
      fail_config(file_, ": config field '", name, "' must be [min, max]; got ", lim.dump());
    lo = hf_number(lim[0], name + "[0]", file_);
    const double max = hf_number(lim[1], name + "[1]", file_);
    hi = max >= 1e30 ? 0.0 : max;
    if (lo < 0 || (hi != 0.0 && hi < lo))
      fail_config(file_, ": config field '", name, "' = ", lim.dump(), " is not a range 0 <= min <= max");
    return true;
  }
  // Every field not read or ignored: refused, since ssmlab cannot tell whether it changes the forward.
  void refuse_unknown() const {
    for (const auto& [k, v] : j_.items())
      if (!used_.count(k))
        fail_config(file_, ": config field '", prefix_ + k, "' = ", v.dump(),
                    " is unknown to ssmlab's loader (it cannot tell whether it changes the forward); remove it if "
                    "it does not");
  }

 private:
  const json& j_;
  std::string file_, prefix_;
  std::set<std::string> used_;
};

// Bookkeeping of PretrainedConfig that never changes the forward.
constexpr std::initializer_list<const char*> kHfBookkeeping = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path", "use_cache",
    "initializer_range", "rescale_prenorm_residual", "pad_token_id", "bos_token_id", "output_hidden_states",
    "output_attentions", "return_dict", "is_encoder_decoder", "chunk_size_feed_forward", "id2label", "label2id",
    "problem_type", "tokenizer_class", "task_specific_params", "finetuning_task", "_attn_implementation_autoset",
    "max_length", "torchscript", "use_return_dict", "layer_types"};

void check_vocab(int64_t v, const std::string& file, const char* field) {
  if (v < 1) fail_config(file, ": config field '", field, "' must be >= 1; got ", v);
}

// What both layouts share: pre-norm RMSNorm blocks with no MLP, a final RMSNorm, mamba_ssm's init.
HfModelInfo hf_model_info(const char* layout) {
  HfModelInfo info;
  info.layout = layout;
  ModelOptions& o = info.options;
  o.norm = "rmsnorm";
  o.final_norm = "rmsnorm";
  o.mlp_expand = 0;
  o.init = "mamba";
  return info;
}

// The fields Mamba-1 and Mamba-2 options share.
template <class MixerOptions>
void set_mixer_shape(MixerOptions& m, int64_t d_state, int64_t expand, int64_t conv, bool bias, bool conv_bias) {
  m.d_state = d_state;
  m.expand = expand;
  m.d_conv = conv;
  m.bias = bias;
  m.conv_bias = conv_bias;
}

HfModelInfo read_transformers(const json& j, const std::string& file, const std::string& model_type) {
  HfFields f(j, file);
  f.ignore(kHfBookkeeping);
  HfModelInfo info = hf_model_info("transformers");
  ModelOptions& o = info.options;
  o.d_model = f.integer("hidden_size");
  o.n_layers = f.integer("num_hidden_layers");
  info.vocab_size = f.integer("vocab_size");
  check_vocab(info.vocab_size, file, "vocab_size");
  o.norm_eps = f.number("layer_norm_epsilon", 1e-5);
  o.tie_embeddings = f.boolean("tie_word_embeddings", model_type == "mamba");
  if (f.has("eos_token_id") && f.raw("eos_token_id").is_number_integer()) info.eos_token_id = j["eos_token_id"].get<int64_t>();
  f.ignore({"eos_token_id"});
  // Ours keeps the residual stream in float32 at least, which is residual_in_fp32 = true; at float32 and float64
  // (the dtypes the loader gives) both values compute the same.
  f.boolean("residual_in_fp32", true);
  f.require<std::string>("hidden_act", "silu", "silu", "the mixers use SiLU");
  const int64_t expand = f.integer("expand", 2);
  const int64_t conv = f.conv_kernel("conv_kernel", 4);
  const bool bias = f.boolean("use_bias", false), conv_bias = f.boolean("use_conv_bias", true);
  if (o.d_model < 1 || o.n_layers < 1 || expand < 1)
    fail_config(file, ": hidden_size, num_hidden_layers and expand must be >= 1");
  f.ignore({"time_step_min", "time_step_max", "time_step_floor", "time_step_scale", "time_step_init_scheme",
            "use_mambapy", "use_associative_scan"});  // initialisation / implementation choices
  f.require<bool>("norm_before_gate", false, false, "the gate comes before the gated norm");
  // Some converted configs repeat mamba_ssm's names beside transformers'; they must agree.
  auto alias = [&](const char* k, int64_t want) {
    if (f.has(k) && f.integer(k) != want)
      fail_config(file, ": config field '", k, "' = ", j[k].dump(), " disagrees with the transformers field (", want, ")");
    f.ignore({k});
  };
  alias("d_model", o.d_model);
  alias("n_layer", o.n_layers);
  alias("d_inner", expand * o.d_model);
  alias("d_conv", conv);
  if (model_type == "mamba") {
    o.mixer = "mamba1";
    auto& m = o.mixers.mamba1;
    set_mixer_shape(m, f.integer("state_size", 16), expand, conv, bias, conv_bias);
    if (f.has("intermediate_size") && f.integer("intermediate_size") != expand * o.d_model)
      fail_config(file, ": config field 'intermediate_size' = ", j["intermediate_size"].dump(),
                  " is not expand * hidden_size = ", expand * o.d_model, " (not supported)");
    f.ignore({"intermediate_size"});
    m.dt_rank = f.dt_rank("time_step_rank", (o.d_model + 15) / 16);
    alias("d_state", m.d_state);
  } else {
    o.mixer = "mamba2";
    auto& m = o.mixers.mamba2;
    set_mixer_shape(m, f.integer("state_size", 128), expand, conv, bias, conv_bias);
    m.n_groups = f.integer("n_groups", 8);
    m.head_dim = f.integer("head_dim", 64);
    const int64_t heads = f.integer("num_heads", 128);
    if (heads * m.head_dim != expand * o.d_model)
      fail_config(file, ": config field 'num_heads' = ", heads, " times head_dim ", m.head_dim,
                  " must equal expand * hidden_size = ", expand * o.d_model);
    if (m.n_groups < 1 || heads % m.n_groups != 0)
      fail_config(file, ": config field 'n_groups' = ", m.n_groups, " must divide num_heads = ", heads);
    m.chunk_size = f.integer("chunk_size", 256);
    m.norm_eps = o.norm_eps;  // transformers' gated norm uses layer_norm_epsilon
    f.require<bool>("rms_norm", true, true, "the gated norm is an RMSNorm");
    f.dt_range("time_step_limit", m.dt_limit_min, m.dt_limit_max);
    f.ignore({"time_step_rank"});  // not used by Mamba-2's forward
  }
  f.refuse_unknown();
  return info;
}

HfModelInfo read_mamba_ssm(const json& j, const std::string& file) {
  HfFields f(j, file);
  f.ignore(kHfBookkeeping);
  HfModelInfo info = hf_model_info("mamba_ssm");
  ModelOptions& o = info.options;
  o.d_model = f.integer("d_model");
  o.n_layers = f.integer("n_layer");
  int64_t vocab = f.integer("vocab_size");
  check_vocab(vocab, file, "vocab_size");
  const int64_t pad = f.integer("pad_vocab_size_multiple", 8);
  if (pad < 1) fail_config(file, ": config field 'pad_vocab_size_multiple' must be >= 1; got ", pad);
  info.vocab_size = (vocab + pad - 1) / pad * pad;
  o.norm_eps = f.number("norm_epsilon", 1e-5);
  o.tie_embeddings = f.boolean("tie_embeddings", true);
  f.require<bool>("rms_norm", true, true, "LayerNorm blocks are not mapped");
  f.boolean("residual_in_fp32", true);  // as for transformers: the same at float32 and float64
  f.ignore({"fused_add_norm", "attn_cfg"});
  f.require<int64_t>("d_intermediate", 0, 0, "the MLP after each mixer is not mapped");
  if (f.has("attn_layer_idx") && !(j["attn_layer_idx"].is_array() && j["attn_layer_idx"].empty()))
    fail_config(file, ": config field 'attn_layer_idx' = ", j["attn_layer_idx"].dump(),
                " is not supported (hybrid attention layers are not mapped)");
  f.ignore({"attn_layer_idx"});
  const json empty = json::object();
  const json& ssm = f.has("ssm_cfg") ? f.raw("ssm_cfg") : empty;
  f.ignore({"ssm_cfg"});
  if (!ssm.is_object()) fail_config(file, ": config field 'ssm_cfg' must be an object; got ", ssm.dump());
  HfFields s(ssm, file, "ssm_cfg.");
  const std::string layer = s.string("layer", "Mamba1");
  s.ignore({"dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor", "A_init_range", "use_mem_eff_path",
            "use_fast_path", "layer_idx"});
  const int64_t expand = s.integer("expand", 2);
  const int64_t conv = s.conv_kernel("d_conv", 4);
  const bool bias = s.boolean("bias", false), conv_bias = s.boolean("conv_bias", true);
  if (layer == "Mamba1") {
    o.mixer = "mamba1";
    auto& m = o.mixers.mamba1;
    set_mixer_shape(m, s.integer("d_state", 16), expand, conv, bias, conv_bias);
    m.dt_rank = s.dt_rank("dt_rank", (o.d_model + 15) / 16);
  } else if (layer == "Mamba2") {
    o.mixer = "mamba2";
    auto& m = o.mixers.mamba2;
    set_mixer_shape(m, s.integer("d_state", 128), expand, conv, bias, conv_bias);
    m.head_dim = s.integer("headdim", 64);
    m.n_groups = s.integer("ngroups", 1);
    m.chunk_size = s.integer("chunk_size", 256);
    m.norm_eps = 1e-5;  // mamba_ssm's Mamba2 builds its RMSNormGated with eps 1e-5
    const int64_t E = expand * o.d_model;
    if (s.has("d_ssm") && s.integer("d_ssm") != E)
      fail_config(file, ": config field 'ssm_cfg.d_ssm' = ", ssm["d_ssm"].dump(),
                  " is not supported (only d_ssm = expand * d_model, no MLP part inside the mixer)");
    s.ignore({"d_ssm"});
    if (m.head_dim < 1 || E % m.head_dim != 0 || m.n_groups < 1 || (E / m.head_dim) % m.n_groups != 0)
      fail_config(file, ": config fields 'ssm_cfg.headdim' = ", m.head_dim, " and 'ssm_cfg.ngroups' = ", m.n_groups,
                  " must divide d_inner = ", E, " into heads and the heads into groups");
    s.require<bool>("rmsnorm", true, true, "the gated norm is an RMSNorm");
    s.require<bool>("norm_before_gate", false, false, "the gate comes before the norm");
    s.require<bool>("D_has_hdim", false, false, "D is one value per head");
    s.dt_range("dt_limit", m.dt_limit_min, m.dt_limit_max);
  } else {
    fail_config(file, ": config field 'ssm_cfg.layer' = \"", layer, "\" is not supported (Mamba1 or Mamba2)");
  }
  s.refuse_unknown();
  f.refuse_unknown();
  return info;
}

fs::path hub_cache_dir() {
  if (const char* c = std::getenv("HF_HUB_CACHE"); c && *c) return c;
  if (const char* h = std::getenv("HF_HOME"); h && *h) return fs::path(h) / "hub";
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return fs::path(x) / "huggingface" / "hub";
  const char* home = std::getenv("HOME");
  return fs::path(home ? home : ".") / ".cache" / "huggingface" / "hub";
}

// ssmlab parameter name -> (HF name, HF shape of the stored tensor); layout-dependent embedding name.
std::string hf_name_of(const std::string& ours, const std::string& layout) {
  if (ours == "embedding.weight") return layout == "mamba_ssm" ? "backbone.embedding.weight" : "backbone.embeddings.weight";
  if (ours == "final_norm.weight") return "backbone.norm_f.weight";
  if (ours == "lm_head.weight") return ours;
  if (ours.starts_with("blocks.")) {
    std::string rest = "backbone.layers." + ours.substr(7);
    const std::string from = ".mixer.transition.A_log";
    if (const auto p = rest.find(from); p != std::string::npos) rest.replace(p, from.size(), ".mixer.A_log");
    return rest;
  }
  return "";
}

bool is_conv_weight(const std::string& ours) { return ours.ends_with(".mixer.conv1d.weight"); }

}  // namespace

bool is_hf_folder(const fs::path& path) { return fs::is_directory(path) && fs::is_regular_file(path / "config.json"); }

fs::path resolve_hf_model(const std::string& name) {
  if (name.empty()) fail_config("name a model: a Hugging Face folder or a model id in the local cache");
  const fs::path as_path(name);
  if (fs::exists(as_path)) {
    if (!is_hf_folder(as_path)) fail_config(name, " is not a Hugging Face model folder (it has no config.json)");
    return as_path;
  }
  const fs::path cache = hub_cache_dir();
  std::string dir = "models--" + name;
  for (size_t p = 0; (p = dir.find('/', p)) != std::string::npos;) dir.replace(p, 1, "--");
  const fs::path repo = cache / dir;
  if (!fs::is_directory(repo))
    fail_config(name, " is neither a folder nor a model in the local Hugging Face cache (looked for ", repo.string(),
                "; set HF_HOME or HF_HUB_CACHE to another cache; ssmlab never downloads)");
  fs::path snapshot;
  if (fs::is_regular_file(repo / "refs" / "main")) {
    std::string commit = read_file(repo / "refs" / "main");
    while (!commit.empty() && (commit.back() == '\n' || commit.back() == '\r' || commit.back() == ' ')) commit.pop_back();
    snapshot = repo / "snapshots" / commit;
  } else if (fs::is_directory(repo / "snapshots")) {
    int n = 0;
    for (const auto& e : fs::directory_iterator(repo / "snapshots"))
      if (e.is_directory()) {
        snapshot = e.path();
        ++n;
      }
    if (n != 1)
      fail_config(repo.string(), ": no refs/main and ", n, " snapshots; name the snapshot folder itself");
  }
  if (snapshot.empty() || !is_hf_folder(snapshot))
    fail_config(name, ": the cached snapshot ", snapshot.string(), " has no config.json");
  return snapshot;
}

HfModelInfo read_hf_config(const fs::path& folder, const std::string& norm_groups) {
  const fs::path file = folder / "config.json";
  if (!fs::is_regular_file(file)) fail_config(folder.string(), " is not a Hugging Face model folder (no config.json)");
  const std::string text = hf_quote_nonfinite(read_file(file));
  if (json_limits::depth(text) > json_limits::kMaxDepth)
    fail_config(file.string(), ": nested deeper than ", json_limits::kMaxDepth, " levels");
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail_config(file.string(), ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail_config(file.string(), ": expected a JSON object");
  HfModelInfo info;
  if (j.contains("model_type")) {
    if (!j["model_type"].is_string()) fail_config(file.string(), ": config field 'model_type' must be a string");
    const std::string mt = j["model_type"].get<std::string>();
    if (mt != "mamba" && mt != "mamba2")
      fail_config(file.string(), ": config field 'model_type' = \"", mt,
                  "\" is not supported (mamba: MambaForCausalLM, mamba2: Mamba2ForCausalLM)");
    if (j.contains("architectures")) {
      const std::string want = mt == "mamba" ? "MambaForCausalLM" : "Mamba2ForCausalLM";
      if (!(j["architectures"].is_array() && j["architectures"].size() == 1 && j["architectures"][0] == want))
        fail_config(file.string(), ": config field 'architectures' = ", j["architectures"].dump(),
                    " is not supported (expected [\"", want, "\"])");
    }
    info = read_transformers(j, file.string(), mt);
  } else if (j.contains("d_model") && j.contains("n_layer")) {
    info = read_mamba_ssm(j, file.string());
  } else {
    fail_config(file.string(), ": neither a transformers config (model_type) nor a mamba_ssm one (d_model, n_layer)");
  }
  if (!norm_groups.empty()) {
    if (norm_groups != "groups" && norm_groups != "whole")
      fail_config("norm_groups must be groups or whole; got '", norm_groups, "'");
    info.options.mixers.mamba2.norm_groups = norm_groups;
  }
  info.folder = folder;
  return info;
}

std::map<std::string, at::Tensor> read_hf_weights(const fs::path& folder) {
  if (fs::is_regular_file(folder / "model.safetensors.index.json"))
    return load_safetensors_index(folder / "model.safetensors.index.json").tensors;
  if (fs::is_regular_file(folder / "model.safetensors")) return load_safetensors(folder / "model.safetensors").tensors;
  if (fs::exists(folder / "pytorch_model.bin"))
    fail_data(folder.string(), ": holds only pytorch_model.bin, a Python pickle ssmlab does not read; convert it "
              "(python: safetensors.torch.save_file(torch.load(f), 'model.safetensors'))");
  fail_data(folder.string(), ": no model.safetensors or model.safetensors.index.json");
}

void load_hf_weights(LanguageModelImpl& model, const fs::path& folder, const std::string& layout) {
  auto weights = read_hf_weights(folder);
  const std::string where = folder.string();
  std::set<std::string> used;
  at::NoGradGuard no_grad;
  for (auto& item : model.named_parameters(/*recurse=*/true)) {
    const std::string& ours = item.key();
    at::Tensor& p = item.value();
    const std::string name = hf_name_of(ours, layout);
    if (name.empty()) fail_data(where, ": ssmlab parameter '", ours, "' has no Hugging Face name (internal)");
    const auto it = weights.find(name);
    if (it == weights.end()) fail_data(where, ": tensor '", name, "' is missing (", ours, " ", shape_str(p.sizes()), ")");
    at::Tensor t = it->second;
    if (!at::isFloatingType(t.scalar_type()))
      fail_data(where, ": tensor '", name, "' has dtype ", c10::toString(t.scalar_type()), "; expected a float type");
    if (is_conv_weight(ours) && t.dim() == 3 && t.size(1) == 1) t = t.squeeze(1);  // (C, 1, W) -> (C, W)
    if (t.sizes() != p.sizes())
      fail_data(where, ": tensor '", name, "' has shape ", shape_str(it->second.sizes()), "; the config implies ",
                is_conv_weight(ours) ? shape_str(std::vector<int64_t>{p.size(0), 1, p.size(1)}) : shape_str(p.sizes()));
    p.copy_(t);
    used.insert(name);
  }
  if (model.options().tie_embeddings && weights.count("lm_head.weight")) {
    const std::string emb = hf_name_of("embedding.weight", layout);
    if (!weights.count(emb) || !at::equal(weights["lm_head.weight"], weights[emb]))
      fail_data(where, ": the config ties the head to the embedding, but lm_head.weight differs from ", emb,
                " (tie_word_embeddings / tie_embeddings should be false?)");
    used.insert("lm_head.weight");
  }
  for (const auto& [name, t] : weights)
    if (!used.count(name))
      fail_data(where, ": tensor '", name, "' ", shape_str(t.sizes()), " is not part of the model the config describes");
}

LanguageModel load_hf_model(const fs::path& folder, at::ScalarType dtype, HfModelInfo* info_out,
                            const std::string& norm_groups) {
  if (dtype != at::kFloat && dtype != at::kDouble)
    fail_config("load_hf_model: dtype must be float32 or float64; got ", c10::toString(dtype));
  HfModelInfo info = read_hf_config(folder, norm_groups);
  LanguageModel model(info.options, info.vocab_size, "auto", /*seed=*/0);
  model->to(dtype);
  load_hf_weights(*model, folder, info.layout);
  model->eval();
  if (info_out) *info_out = info;
  return model;
}

std::map<std::string, at::Tensor> hf_state_dict(LanguageModelImpl& model) {
  const ModelOptions& o = model.options();
  auto refuse = [](const auto&... what) { fail_config("export to Hugging Face: ", what...); };
  if (o.mixer != "mamba1" && o.mixer != "mamba2") refuse("model.mixer = ", o.mixer, " (mamba1 or mamba2 only)");
  if (o.norm != "rmsnorm") refuse("model.norm = ", o.norm, " (transformers' blocks use RMSNorm)");
  if (o.final_norm != "rmsnorm") refuse("model.final_norm = ", o.final_norm, " (transformers' norm_f is an RMSNorm)");
  if (o.mlp_expand != 0) refuse("model.mlp_expand = ", o.mlp_expand, " (Mamba blocks have no MLP)");
  if (o.max_position_embeddings != 0) refuse("model.max_position_embeddings = ", o.max_position_embeddings, " (no positions)");
  if (o.mixer == "mamba1") {
    const auto& m = o.mixers.mamba1;
    if (m.transition != "standard") refuse("mixers.mamba1.transition = ", m.transition);
    if (m.eigen != "none") refuse("mixers.mamba1.eigen = ", m.eigen);
    if (m.reorder != "off") refuse("mixers.mamba1.reorder = ", m.reorder);
    if (m.interventions.decay_mult != 1.0 || m.interventions.b_mult != 1.0) refuse("mixers.mamba1.interventions (RRI) set");
  } else {
    const auto& m = o.mixers.mamba2;
    const auto& iv = m.interventions;
    if (iv.dt_mult != 1.0 || iv.decay_mult != 1.0 || iv.b_mult != 1.0 || iv.a_mult != 1.0 || iv.a_offset != 0.0 ||
        iv.b_clip != 0.0 || iv.state_norm_tau != 0.0 || iv.window != 0)
      refuse("mixers.mamba2.interventions set (inference interventions have no transformers equivalent)");
    if (m.norm_groups != "groups" && m.n_groups > 1) refuse("mixers.mamba2.norm_groups = whole with n_groups > 1");
    if (m.norm_eps != o.norm_eps)
      refuse("mixers.mamba2.norm_eps (", m.norm_eps, ") differs from model.norm_eps (", o.norm_eps,
             "); transformers uses layer_norm_epsilon for both");
  }
  std::map<std::string, at::Tensor> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const std::string name = hf_name_of(item.key(), "transformers");
    if (name.empty()) refuse("parameter '", item.key(), "' has no transformers name");
    at::Tensor t = item.value().detach();
    if (is_conv_weight(item.key())) t = t.unsqueeze(1);  // (C, W) -> (C, 1, W)
    out[name] = t.contiguous();
  }
  return out;
}

void export_hf(LanguageModelImpl& model, const fs::path& out, std::optional<int64_t> eos_token_id) {
  const auto tensors = hf_state_dict(model);
  const ModelOptions& o = model.options();
  json c;
  const bool m1 = o.mixer == "mamba1";
  c["architectures"] = {m1 ? "MambaForCausalLM" : "Mamba2ForCausalLM"};
  c["model_type"] = m1 ? "mamba" : "mamba2";
  c["hidden_size"] = o.d_model;
  c["num_hidden_layers"] = o.n_layers;
  c["vocab_size"] = model.vocab_size();
  c["layer_norm_epsilon"] = o.norm_eps;
  c["tie_word_embeddings"] = o.tie_embeddings;
  c["residual_in_fp32"] = true;
  c["hidden_act"] = "silu";
  if (eos_token_id) c["eos_token_id"] = *eos_token_id;
  if (m1) {
    const auto& m = o.mixers.mamba1;
    auto* mixer = model.blocks.at(0)->mixer->as<mixers::Mamba1Impl>();
    c["state_size"] = m.d_state;
    c["expand"] = m.expand;
    c["intermediate_size"] = m.expand * o.d_model;
    c["conv_kernel"] = m.d_conv;
    c["use_bias"] = m.bias;
    c["use_conv_bias"] = m.conv_bias;
    c["time_step_rank"] = mixer ? mixer->dt_rank() : (m.dt_rank > 0 ? m.dt_rank : (o.d_model + 15) / 16);
  } else {
    const auto& m = o.mixers.mamba2;
    c["state_size"] = m.d_state;
    c["expand"] = m.expand;
    c["conv_kernel"] = m.d_conv;
    c["use_bias"] = m.bias;
    c["use_conv_bias"] = m.conv_bias;
    c["n_groups"] = m.n_groups;
    c["head_dim"] = m.head_dim;
    c["num_heads"] = m.expand * o.d_model / m.head_dim;
    c["chunk_size"] = m.chunk_size;
    c["rms_norm"] = true;
    // transformers 5 writes infinity as {"__float__": "Infinity"}; older versions read a large number as well.
    c["time_step_limit"] = {m.dt_limit_min, m.dt_limit_max > 0 ? m.dt_limit_max : 1e30};
  }
  fs::create_directories(out);
  save_safetensors(out / "model.safetensors", tensors, {{"format", "pt"}});
  write_file_atomic(out / "config.json", c.dump(2) + "\n");
}

}  // namespace ssmlab::models
