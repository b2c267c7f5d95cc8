// The one metrics.jsonl reader (runfolder::parse_metrics), which `ssmlab results`, `ssmlab report` and the
// analyses read run folders through.
#include "ssmlab/runfolder/run_folder.h"
#include "targets.h"

namespace ssmlab::fuzz {

void run_metrics_jsonl(std::string_view input) {
  try {
    runfolder::RunFolder r;
    runfolder::parse_metrics(input, "fuzz/metrics.jsonl", r);
  } catch (const runfolder::RunFolderError&) {
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
