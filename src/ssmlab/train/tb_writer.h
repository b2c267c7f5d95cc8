// TensorBoard event files, written by hand (no protobuf dependency): a file of TFRecords, each a serialized
// tensorflow.Event. The first event carries file_version "brain.Event:2"; each later one a step, a wall time and
// a Summary of scalar values (tag, simple_value). TFRecord framing: uint64 length, masked CRC32C of the length,
// the bytes, masked CRC32C of the bytes (little endian; mask = rotate right 15 + 0xa282ead8).
// The trainer mirrors every metrics.jsonl record into events.out.tfevents.<time>.<host> in the run folder, so
// `tensorboard --logdir runs` shows every run.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ssmlab::train {

// CRC-32C (Castagnoli), as TFRecord uses it, and its masked form.
uint32_t crc32c(std::string_view bytes);
uint32_t masked_crc32c(std::string_view bytes);

// One TFRecord around `data`.
std::string tfrecord(std::string_view data);
// Serialized Event protobufs.
std::string file_version_event(double wall_time);
std::string scalars_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, float>>& values);

// The scalars of a metrics.jsonl record: every finite number except step and epoch, tagged by its key
// ("train_loss", "test_acc", "test_acc/<segment>").
std::vector<std::pair<std::string, float>> record_scalars(const nlohmann::json& record);

class TbWriter {
 public:
  // Starts the run folder's event file afresh: removes events.out.tfevents.* there, writes (atomically) a new
  // file holding the version event and one event per record of `replay` (what metrics.jsonl keeps after a
  // resume's truncation), so the event file mirrors metrics.jsonl as an uninterrupted run would have it.
  // Replayed events carry the time of the rebuild: metrics.jsonl holds no wall time.
  TbWriter(const std::filesystem::path& dir, const std::vector<nlohmann::json>& replay);

  // Appends one event (one write call: it reaches the OS before this returns). Records without scalars add
  // nothing.
  void write(const nlohmann::json& record);

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace ssmlab::train
