// A minimal JSON reader for manifest.json: objects, arrays, strings, numbers, true/false/null.
// No writer and no streaming: a manifest is a few kB.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace edgeopt {

struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Json> array;
  std::map<std::string, Json> object;

  // Member lookup; nullptr when this is not an object or has no such key.
  const Json* get(const std::string& key) const;
};

// Throws std::runtime_error("... at offset N") on malformed text.
Json parse_json(const std::string& text);

}  // namespace edgeopt
