// Our own reader and writer of the safetensors format (https://github.com/huggingface/safetensors):
//   [8 bytes: N, little-endian u64][N bytes: JSON header, space-padded][raw little-endian data]
// header = {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//           "__metadata__": {"key": "value"}}; offsets are relative to the start of the data.
// We write N as a multiple of 8 (so the data starts 8-byte aligned) and lay tensors out in name order.
// The reader enforces the format's rules (offsets in range, no overlap, no gap, sizes match shapes)
// and every error names the file and the problem.
#pragma once
#include <filesystem>
#include <map>
#include <string>
#include <string_view>

#include <ATen/core/Tensor.h>

namespace ssmlab::models {

struct TensorFile {
  std::map<std::string, at::Tensor> tensors;  // CPU, contiguous
  std::map<std::string, std::string> metadata;
};

// Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL. Tensors are moved to CPU and made
// contiguous; an unsupported dtype or layout is an error (raised before anything is written). The
// file is written atomically (write_file_atomic), so a failed save leaves an old file intact.
void save_safetensors(const std::filesystem::path& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Memory-maps the file (large checkpoints are not read into memory twice) and parses it.
TensorFile load_safetensors(const std::filesystem::path& path);
// A sharded checkpoint: index_json is {"metadata": {...}, "weight_map": {"tensor": "shard file", ...}} (Hugging
// Face's model.safetensors.index.json); the shards lie beside it. Strict: a shard must be a plain file name,
// exist, hold every tensor listed for it and no tensor that is not listed for it (so none twice).
TensorFile load_safetensors_index(const std::filesystem::path& index_json);

// Parses safetensors bytes; `name` is the file name used in error messages.
TensorFile parse_safetensors(std::string_view bytes, const std::string& name);
// The bytes that save_safetensors writes; `name` is the file name used in error messages.
std::string serialize_safetensors(const std::map<std::string, at::Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata, const std::string& name);

}  // namespace ssmlab::models
