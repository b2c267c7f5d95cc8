// Minimal logging to stderr with a level, plus "say once" for visible fallbacks.
#pragma once
#include <string>

namespace ssmlab::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

void set_level(Level level);
Level level();
void write(Level level, const std::string& message);
inline void debug(const std::string& m) { write(Level::debug, m); }
inline void info(const std::string& m) { write(Level::info, m); }
inline void warn(const std::string& m) { write(Level::warn, m); }
inline void error(const std::string& m) { write(Level::error, m); }
// Logs `message` at warn level the first time `key` is seen in this process.
void warn_once(const std::string& key, const std::string& message);

}  // namespace ssmlab::log
