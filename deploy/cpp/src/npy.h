// .npy files (NumPy's format, versions 1-3): float32, little-endian, C order only.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace edgeopt {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// Throws std::runtime_error naming the file and what is wrong with it.
Tensor read_npy(const std::string& path);
void write_npy(const std::string& path, const Tensor& t);

}  // namespace edgeopt
