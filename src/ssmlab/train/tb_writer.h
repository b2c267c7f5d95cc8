// TensorBoard event files, written by hand (no protobuf dependency): a file of TFRecords, each a serialized
// tensorflow.Event. The first event carries file_version "brain.Event:2"; later ones a step, a wall time and a
// Summary: scalar values (tag, simple_value), or one hparams-plugin value (tag "_hparams_/...", an empty float
// tensor, metadata.plugin_data = {"hparams", HParamsPluginData}) as TensorBoard's hparams summary_v2 writes it.
// TFRecord framing: uint64 length, masked CRC32C of the length, the bytes, masked CRC32C of the bytes (little
// endian; mask = rotate right 15 + 0xa282ead8).
//
// Tags are grouped as TensorBoard's scalar dashboard shows them: a train record's keys under train/ ("train_loss"
// -> train/loss, "lr" -> train/lr, "tokens_per_s" -> train/tokens_per_s), an eval record's under eval/ ("test_acc"
// -> eval/acc, "test_loss" -> eval/loss, "test_ppl" -> eval/ppl, "test_acc/<segment>" -> eval/acc/<segment>).
//
// Each run is one hparams session: the event file starts with a SessionStartInfo (its hparams, start time, the
// run folder as model_uri) and ends, when training ends, with a SessionEndInfo (success, or failure when training
// threw). Where the file lives and which hparams it names is experiments/tensorboard.* (a sweep's runs go to
// <sweep>/tb/<readable name>/); this layer only encodes.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
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
// An event holding one hparams-plugin summary value: `tag` and the serialized HParamsPluginData `plugin_data`.
std::string hparams_event(double wall_time, int64_t step, std::string_view tag, std::string_view plugin_data);

// The grouped tag of a metrics.jsonl key in a record of `kind` ("train", "eval"; another kind or "" keeps keys
// that do not start with train_ / test_ as they are).
std::string tb_tag(std::string_view kind, std::string_view key);

// The scalars of a metrics.jsonl record: every finite number except step and epoch, under its grouped tag.
std::vector<std::pair<std::string, float>> record_scalars(const nlohmann::json& record);

// ---- hparams plugin (tensorboard/plugins/hparams: plugin_data.proto, api.proto) ----
inline constexpr std::string_view kExperimentTag = "_hparams_/experiment";
inline constexpr std::string_view kSessionStartTag = "_hparams_/session_start_info";
inline constexpr std::string_view kSessionEndTag = "_hparams_/session_end_info";

// A google.protobuf.Value: bool_value, number_value or string_value.
using HParamValue = std::variant<bool, double, std::string>;
using HParams = std::vector<std::pair<std::string, HParamValue>>;  // name -> value, in display order

enum class SessionStatus { unknown = 0, success = 1, failure = 2, running = 3 };  // tensorboard.hparams.Status
enum class DatasetType { unknown = 0, training = 1, validation = 2 };            // tensorboard.hparams.DatasetType

struct HParamInfo {
  std::string name;
  std::vector<HParamValue> domain;  // the discrete domain (the values the runs take); sets the type
  bool differs = false;             // the runs take more than one value
};
struct MetricInfo {
  std::string tag;    // a scalar tag of the session runs ("eval/acc")
  std::string group;  // a subfolder of the session run holding the tag; "" for the run itself
  DatasetType dataset = DatasetType::unknown;
};
struct Experiment {
  std::string name, description;
  double time_created_secs = 0;
  std::vector<HParamInfo> hparams;
  std::vector<MetricInfo> metrics;
};

// Serialized HParamsPluginData (version 0) holding one of its oneof members.
std::string session_start_plugin_data(const HParams& hparams, double start_time_secs, std::string_view model_uri,
                                      std::string_view group_name = {});
std::string session_end_plugin_data(SessionStatus status, double end_time_secs);
std::string experiment_plugin_data(const Experiment& e);

// What a run's event file is for: its folder and its hparams session.
struct TbSession {
  std::filesystem::path dir;      // the folder of the event file (TensorBoard names the run by it)
  HParams hparams;                // written as the SessionStartInfo; empty: no hparams session
  std::string model_uri;          // the run folder, shown in the HPARAMS table
  // Folders that may hold event files of this run in another layout (the run folder, before a sweep's runs moved
  // to <sweep>/tb/): their events are carried over like the folder's own and their files removed.
  std::vector<std::filesystem::path> old_dirs;
};

// One parsed event of an event file (for carrying events over a resume, and for tests).
struct StoredEvent {
  std::string bytes;  // the serialized Event
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;       // "brain.Event:2" in the first event, else empty
  std::vector<std::string> tags;  // tags of its summary values
};
// The events of an event file, in order, up to the first torn or corrupt record (a run killed mid-write).
std::vector<StoredEvent> read_event_file(const std::filesystem::path& file);

class TbWriter {
 public:
  // Opens the run's event file for a start (`resume_step` 0) or a resume at the checkpoint `resume_step`.
  // The events already in session.dir and session.old_dirs are carried over byte for byte (original wall
  // times) when their step is <= resume_step, except session ends; later ones (logged before a kill, then
  // redone) are dropped. Where no such file was found (or only files from before tags were grouped), the
  // records of `replay` (what metrics.jsonl keeps) are written instead, stamped with the current time
  // (metrics.jsonl holds no wall time). A SessionStartInfo
  // is written if none was carried over. The result is one file, written atomically; the other event files of
  // those folders are removed. So TensorBoard sees each step once, as an uninterrupted run would have logged it.
  TbWriter(const TbSession& session, int64_t resume_step, const std::vector<nlohmann::json>& replay);
  // The run folder's own event file, no hparams session (tests, and runs outside any sweep without hparams).
  TbWriter(const std::filesystem::path& dir, const std::vector<nlohmann::json>& replay);

  // Appends one event (one write call: it reaches the OS before this returns). Records without scalars add
  // nothing.
  void write(const nlohmann::json& record);
  // Appends the SessionEndInfo (at `step`), if this file has an hparams session.
  void end_session(SessionStatus status, int64_t step);

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  bool has_session_ = false;
};

}  // namespace ssmlab::train
