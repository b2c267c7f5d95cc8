#include "ssmlab/tasks/registry.h"

#include "ssmlab/core/error_kinds.h"

namespace ssmlab::tasks {

const std::vector<TaskInfo>& task_table() {
  static const std::vector<TaskInfo> table = {
      {"mqar", "multi-query associative recall, zoology's generator (spec §2.8); tokens, per-position targets",
       [](const TaskConfigs& c) {
         for (const auto& seg : c.mqar.train) check_mqar_segment(c.mqar, seg);
         for (const auto& seg : c.mqar.test) check_mqar_segment(c.mqar, seg);
       },
       [](const TaskConfigs& c) -> TaskPtr { return std::make_shared<MqarTask>(c.mqar); }},
      {"seqimage", "sequential image classification (spec §2.4): CIFAR-10 / IDX images as pixel sequences",
       [](const TaskConfigs& c) { check_seqimage_config(c.seqimage); },
       [](const TaskConfigs& c) -> TaskPtr { return std::make_shared<SeqImageTask>(c.seqimage); }},
      {"needle", "needle in a haystack (spec §2.3): a key hidden at a chosen depth of filler blocks, recalled at the "
                 "end; tokens, targets on the key digits",
       [](const TaskConfigs& c) { check_needle_config(c.needle); },
       [](const TaskConfigs& c) -> TaskPtr { return std::make_shared<NeedleTask>(c.needle); }},
      {"text", "language modelling on a tokenised corpus (Brown, Linux docs, text files; gpt2 BPE or bytes)",
       [](const TaskConfigs& c) { check_text_config(c.text); },
       [](const TaskConfigs& c) -> TaskPtr { return std::make_shared<TextTask>(c.text); }},
  };
  return table;
}

std::vector<std::string> task_names() {
  std::vector<std::string> names;
  for (const auto& t : task_table()) names.push_back(t.name);
  return names;
}

const TaskInfo& task_info(const std::string& name) {
  for (const auto& t : task_table())
    if (t.name == name) return t;
  std::string known;
  for (const auto& t : task_table()) known += (known.empty() ? "" : ", ") + t.name;
  fail("unknown task '", name, "'; known tasks: ", known);
}

TaskPtr make_task(const std::string& name, const TaskConfigs& cfgs) {
  const TaskInfo& info = task_info(name);
  try {
    info.check(cfgs);
    return info.make(cfgs);
  } catch (const DataError& e) {  // keeps its category (exit code 3): a bad data file, not a bad task
    fail_data("task.", name, ": ", e.what());
  } catch (const ConfigError& e) {
    fail_config("task.", name, ": ", e.what());
  } catch (const Error& e) {
    fail("task.", name, ": ", e.what());
  }
}

}  // namespace ssmlab::tasks
