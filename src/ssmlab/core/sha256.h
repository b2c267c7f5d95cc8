// SHA-256 (OpenSSL libcrypto), for the checksums of checkpoint files (train/checksums.h).
#pragma once
#include <string>
#include <string_view>

namespace ssmlab {

// 64 lowercase hex digits.
std::string sha256_hex(std::string_view bytes);

}  // namespace ssmlab
