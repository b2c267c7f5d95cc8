#include "ssmlab/core/log.h"

#include <cstdio>
#include <mutex>
#include <set>

namespace ssmlab::log {
namespace {
Level g_level = Level::info;
std::mutex g_mutex;
std::set<std::string> g_once;
const char* tag(Level l) {
  switch (l) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warn: return "warn";
    default: return "error";
  }
}
}  // namespace

void set_level(Level level) { g_level = level; }
Level level() { return g_level; }

void write(Level l, const std::string& message) {
  if (l < g_level) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  std::fprintf(stderr, "[ssmlab %s] %s\n", tag(l), message.c_str());
}

void warn_once(const std::string& key, const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!g_once.insert(key).second) return;
  }
  write(Level::warn, message);
}

}  // namespace ssmlab::log
