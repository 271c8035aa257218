// SHA-256 (FIPS 180-4) of a file, as lowercase hex: what manifest.json's "sha256" holds.
#pragma once
#include <string>

namespace edgeopt {

// Throws std::runtime_error if the file cannot be read.
std::string sha256_file(const std::string& path);
std::string sha256_bytes(const std::string& data);

}  // namespace edgeopt
