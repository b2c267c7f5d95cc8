#include "ssmlab/core/sha256.h"

#include <memory>

#include <openssl/evp.h>

#include "ssmlab/core/error.h"

namespace ssmlab {

std::string sha256_hex(std::string_view bytes) {
  // EVP rather than the SHA256() one-shot, which OpenSSL 3 deprecates.
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), bytes.data(), bytes.size()) != 1 || EVP_DigestFinal_ex(ctx.get(), digest, &n) != 1)
    fail("sha256: OpenSSL could not hash ", bytes.size(), " bytes");
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (unsigned int i = 0; i < n; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

}  // namespace ssmlab
