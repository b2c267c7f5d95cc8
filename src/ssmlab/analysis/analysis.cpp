#include "ssmlab/analysis/analysis.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "ssmlab/core/error_kinds.h"

namespace ssmlab::analysis {

Examples sample_examples(const Context& ctx, int64_t count) {
  SSMLAB_CHECK(count >= 1, "sample_inputs: count must be >= 1; got ", count);
  SSMLAB_CHECK(!ctx.data.empty() && ctx.data.front().inputs.defined() && ctx.data.front().inputs.size(0) > 0,
               "task '", ctx.task.name(), "' has no test examples to analyse");
  const int64_t L = ctx.data.front().inputs.size(1);
  std::vector<at::Tensor> inputs, targets;
  int64_t have = 0;
  for (const auto& seg : ctx.data) {
    if (have >= count) break;
    if (seg.inputs.size(1) != L) continue;  // one length, so the batch is rectangular
    const int64_t take = std::min(count - have, seg.inputs.size(0));
    inputs.push_back(seg.inputs.narrow(0, 0, take));
    targets.push_back(seg.targets.narrow(0, 0, take));
    have += take;
  }
  return {at::cat(inputs, 0), at::cat(targets, 0)};
}

at::Tensor sample_inputs(const Context& ctx, int64_t count) {
  return sample_examples(ctx, count).inputs.to(ctx.device);  // (n, L) or (n, L, C)
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::string item;
  auto flush = [&] {
    const auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b != std::string::npos) items.push_back(item.substr(b, e - b + 1));
    item.clear();
  };
  for (char ch : text) {
    if (ch == ',') flush();
    else item += ch;
  }
  flush();
  return items;
}


std::vector<int64_t> parse_int_list(const std::string& text, const std::string& key) {
  std::vector<int64_t> out;
  for (const auto& item : split_list(text)) {
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size()) fail_config(key, ": '", item, "' is not an integer (expected a list like \"32,96\")");
    for (int64_t seen : out)
      if (seen == v) fail_config(key, ": ", v, " is listed twice");
    out.push_back(v);
  }
  return out;
}

std::vector<std::string> parse_name_list(const std::string& text, const std::string& key,
                                         const std::vector<std::string>& allowed) {
  std::vector<std::string> out;
  for (const auto& item : split_list(text)) {
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), item) == allowed.end()) {
      std::string known;
      for (const auto& a : allowed) known += (known.empty() ? "" : ", ") + a;
      fail_config(key, ": unknown value '", item, "' (expected ", known, ")");
    }
    if (std::find(out.begin(), out.end(), item) != out.end()) fail_config(key, ": '", item, "' is listed twice");
    out.push_back(item);
  }
  return out;
}

nlohmann::json paper_row(const std::string& quantity, const nlohmann::json& paper, const nlohmann::json& ours,
                         const std::string& source) {
  return {{"quantity", quantity}, {"paper", paper}, {"ours", ours}, {"source", source}};
}

}  // namespace ssmlab::analysis
