// The members of a tar archive (POSIX ustar and GNU long names; gzip-compressed or not), for reading corpora
// shipped as .tar.gz without unpacking them. Regular files only; folders, links and pax headers are skipped.
// A bad header checksum, a size field that is not octal, or a cut-off member is a DataError naming the archive.
#pragma once
#include <filesystem>
#include <functional>
#include <string>

namespace ssmlab::text {

// Calls fn(member name, content) for each regular file in archive order. The archive may hold at most
// `max_bytes` once inflated.
void for_each_tar_member(const std::filesystem::path& archive, int64_t max_bytes,
                         const std::function<void(const std::string&, std::string&&)>& fn);

}  // namespace ssmlab::text
