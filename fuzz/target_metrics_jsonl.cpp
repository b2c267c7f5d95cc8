// The two metrics.jsonl readers: experiments::metrics_from_jsonl (ssmlab results) and
// report::read_metrics_jsonl (ssmlab report).
#include "ssmlab/core/error.h"
#include "ssmlab/experiments/results.h"
#include "ssmlab/report/io.h"
#include "ssmlab/report/runs.h"
#include "targets.h"

namespace ssmlab::fuzz {

void run_metrics_jsonl(std::string_view input) {
  try {
    experiments::metrics_from_jsonl(input, "fuzz/metrics.jsonl");
  } catch (const Error&) {
  }
  try {
    report::RunData r;
    report::read_metrics_jsonl(input, "fuzz/metrics.jsonl", r);
  } catch (const report::ReportError&) {
  }
}

std::vector<std::string> seeds_metrics_jsonl() {
  return {
      "{\"kind\":\"train\",\"step\":10,\"epoch\":0,\"train_loss\":2.5,\"lr\":0.001,\"tokens_per_s\":1000.0}\n"
      "{\"kind\":\"eval\",\"step\":10,\"test_acc\":0.25,\"test_loss\":1.5,\"test_acc/L32_K4\":0.25}\n",
      "{\"kind\":\"eval\",\"step\":20,\"test_acc\":0.5,\"extra\":[1,{\"a\":null}]}\n{\"kind\":\"tr",
      "\n\n{\"kind\":\"train\",\"step\":1}\n",
  };
}

}  // namespace ssmlab::fuzz
