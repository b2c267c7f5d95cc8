// File I/O that never loses what was written before: whole files are replaced atomically (write a
// temp file beside the target, fsync, rename), and every error names the path and the OS reason.
#pragma once
#include <filesystem>
#include <string>
#include <string_view>

namespace ssmlab {

// Writes `bytes` to `path` + ".tmp.<pid>", fsyncs it, renames it over `path` and fsyncs the folder.
// On any failure the temp file is removed and `path` keeps its old content. The parent folder must
// exist. Throws ssmlab::Error naming the path and the errno text.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// The whole content of `path`. Throws ssmlab::Error naming the path when it is missing, a folder, or
// unreadable.
std::string read_file(const std::filesystem::path& path);

// Appends `line` (and a '\n' unless it ends with one) to `path` in one write, creating the file if
// needed (metrics.jsonl). Each call reaches the OS before it returns; lines from one process never
// interleave.
void append_line(const std::filesystem::path& path, std::string_view line);

// fsyncs a folder so that renames and creations inside it survive a crash; errors are ignored
// (best effort: some file systems refuse fsync on folders).
void sync_directory(const std::filesystem::path& dir);

// Moves the finished folder `tmp` to `dir` (same file system). An existing `dir` is exchanged with
// `tmp` atomically (renameat2 RENAME_EXCHANGE) and then removed, so `dir` always names a complete
// folder; where the file system cannot exchange, the old one is moved to `dir` + ".old" first (and put
// back if the second rename fails). Throws ssmlab::Error naming both paths and the errno text.
void rename_directory_into_place(const std::filesystem::path& tmp, const std::filesystem::path& dir);

// Standard base64 (RFC 4648, with '=' padding), for binary blobs inside JSON (RNG states).
std::string base64_encode(std::string_view bytes);
// Throws ssmlab::Error on characters outside the alphabet or a bad length.
std::string base64_decode(std::string_view text);

}  // namespace ssmlab
