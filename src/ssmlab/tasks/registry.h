// The one visible list of tasks (registry.cpp), like mixers/registry.*: a new task adds its options
// struct to TaskConfigs (its own sub-table, [task.<name>]) and one entry to the table.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "ssmlab/core/fields.h"
#include "ssmlab/tasks/mqar.h"
#include "ssmlab/tasks/needle.h"
#include "ssmlab/tasks/seqimage.h"
#include "ssmlab/tasks/task.h"
#include "ssmlab/tasks/text.h"

namespace ssmlab::tasks {

// Per-task option sub-tables: [task.mqar] ... (visited inline by experiments::TaskOptions).
struct TaskConfigs {
  MqarConfig mqar;
  SeqImageConfig seqimage;
  NeedleConfig needle;
  TextConfig text;

  template <class V>
  void visit(V& v) {
    v("mqar", mqar, "multi-query associative recall (spec §2.8)");
    v("seqimage", seqimage, "sequential image classification: CIFAR-10 or IDX images as pixel sequences (spec §2.4)");
    v("needle", needle, "needle in a haystack on a synthetic vocabulary: the passkey layout (spec §2.3, §3.4)");
    v("text", text, "language modelling on a tokenised corpus: Brown, Linux kernel docs or text files (spec §3)");
  }
};

struct TaskInfo {
  std::string name;
  std::string summary;
  // Checks what the option visitors cannot (e.g. each MQAR segment against the vocabulary); throws
  // ssmlab::Error naming the rule. Runs before any data is made.
  std::function<void(const TaskConfigs&)> check;
  std::function<TaskPtr(const TaskConfigs&)> make;
};

const std::vector<TaskInfo>& task_table();
std::vector<std::string> task_names();
const TaskInfo& task_info(const std::string& name);  // throws naming the known tasks
// check() then make(); errors are prefixed with "task.<name>: ".
TaskPtr make_task(const std::string& name, const TaskConfigs& cfgs);

}  // namespace ssmlab::tasks
