#include "json.h"

#include <cstdlib>
#include <stdexcept>

namespace edgeopt {
namespace {

class Parser {
 public:
  explicit Parser(const std::string& text) : s_(text) {}

  Json document() {
    Json v = value(0);
    skip();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error(what + " at offset " + std::to_string(i_));
  }
  void skip() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t'))
      ++i_;
  }
  bool literal(const char* word) {
    size_t n = std::char_traits<char>::length(word);
    if (s_.compare(i_, n, word) != 0) return false;
    i_ += n;
    return true;
  }

  Json value(int depth) {
    if (depth > 64) fail("nesting too deep");  // a manifest is 3-4 levels deep
    skip();
    if (i_ >= s_.size()) fail("unexpected end");
    Json v;
    char c = s_[i_];
    if (c == '{') {
      v.type = Json::Type::Object;
      ++i_;
      skip();
      if (i_ < s_.size() && s_[i_] == '}') { ++i_; return v; }
      for (;;) {
        skip();
        if (i_ >= s_.size() || s_[i_] != '"') fail("expected a key");
        std::string key = str();
        skip();
        if (i_ >= s_.size() || s_[i_++] != ':') fail("expected ':'");
        v.object[key] = value(depth + 1);
        skip();
        if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
        if (i_ < s_.size() && s_[i_] == '}') { ++i_; return v; }
        fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.type = Json::Type::Array;
      ++i_;
      skip();
      if (i_ < s_.size() && s_[i_] == ']') { ++i_; return v; }
      for (;;) {
        v.array.push_back(value(depth + 1));
        skip();
        if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
        if (i_ < s_.size() && s_[i_] == ']') { ++i_; return v; }
        fail("expected ',' or ']'");
      }
    }
    if (c == '"') { v.type = Json::Type::String; v.string = str(); return v; }
    if (literal("true")) { v.type = Json::Type::Bool; v.boolean = true; return v; }
    if (literal("false")) { v.type = Json::Type::Bool; return v; }
    if (literal("null")) return v;
    const char* start = s_.c_str() + i_;
    char* end = nullptr;
    v.number = std::strtod(start, &end);
    if (end == start) fail("unexpected character");
    v.type = Json::Type::Number;
    i_ += static_cast<size_t>(end - start);
    return v;
  }

  void utf8(unsigned cp, std::string& out) {
    if (cp < 0x80) { out += char(cp); return; }
    if (cp < 0x800) { out += char(0xc0 | (cp >> 6)); }
    else if (cp < 0x10000) { out += char(0xe0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3f)); }
    else {
      out += char(0xf0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3f));
      out += char(0x80 | ((cp >> 6) & 0x3f));
    }
    out += char(0x80 | (cp & 0x3f));
  }

  unsigned hex4() {
    if (i_ + 4 > s_.size()) fail("short \\u escape");
    unsigned cp = std::strtoul(s_.substr(i_, 4).c_str(), nullptr, 16);
    i_ += 4;
    return cp;
  }

  std::string str() {
    ++i_;  // the opening quote
    std::string out;
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (c == '"') return out;
      if (c != '\\') { out += c; continue; }
      if (i_ >= s_.size()) break;
      char e = s_[i_++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          unsigned cp = hex4();
          // A surrogate pair (Python's json.dumps writes non-BMP characters this way).
          if (cp >= 0xd800 && cp < 0xdc00 && s_.compare(i_, 2, "\\u") == 0) {
            i_ += 2;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (hex4() - 0xdc00);
          }
          utf8(cp, out);
          break;
        }
        default: out += e;  // \" \\ \/
      }
    }
    fail("unterminated string");
  }

  const std::string& s_;
  size_t i_ = 0;
};

}  // namespace

const Json* Json::get(const std::string& key) const {
  if (type != Type::Object) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &it->second;
}

Json parse_json(const std::string& text) { return Parser(text).document(); }

}  // namespace edgeopt
