#include "npy.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace edgeopt {
namespace {

std::string header_field(const std::string& header, const std::string& key) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) return "";
  size_t colon = header.find(':', at);
  if (colon == std::string::npos) return "";
  size_t start = header.find_first_not_of(' ', colon + 1);
  if (start == std::string::npos) return "";
  char open = header[start];
  size_t end = open == '(' ? header.find(')', start) : open == '\'' ? header.find('\'', start + 1)
                                                                    : header.find(',', start);
  if (end == std::string::npos) return "";
  return header.substr(start, end - start + 1);
}

}  // namespace

Tensor read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  char magic[8];
  if (!f.read(magic, 8) || std::string(magic, 6) != "\x93NUMPY")
    throw std::runtime_error(path + " is not a .npy file");
  uint32_t len = 0;
  unsigned char b[4] = {};
  if (magic[6] == 1) {
    f.read(reinterpret_cast<char*>(b), 2);
    len = b[0] | (b[1] << 8);
  } else {
    f.read(reinterpret_cast<char*>(b), 4);
    len = b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t(b[3]) << 24);
  }
  std::string header(len, '\0');
  if (!f.read(&header[0], len)) throw std::runtime_error(path + ": truncated .npy header");
  std::string descr = header_field(header, "descr");
  if (descr != "'<f4'")
    throw std::runtime_error(path + ": dtype " + descr + " is not float32 ('<f4'); "
                             "save the array with x.astype(np.float32)");
  if (header_field(header, "fortran_order").rfind("False", 0) != 0)
    throw std::runtime_error(path + ": Fortran order is not supported; save a C-order array");
  std::string shape = header_field(header, "shape");
  Tensor t;
  size_t count = 1;
  std::stringstream dims(shape.substr(1, shape.size() - 2));
  std::string dim;
  while (std::getline(dims, dim, ',')) {
    if (dim.find_first_not_of(' ') == std::string::npos) continue;
    t.shape.push_back(std::stoll(dim));
    count *= static_cast<size_t>(t.shape.back());
  }
  t.data.resize(count);
  if (!f.read(reinterpret_cast<char*>(t.data.data()), count * sizeof(float)))
    throw std::runtime_error(path + ": truncated .npy data");
  return t;
}

void write_npy(const std::string& path, const Tensor& t) {
  std::string shape = "(";
  for (int64_t d : t.shape) shape += std::to_string(d) + ", ";
  if (t.shape.size() > 1) shape.resize(shape.size() - 2);
  else if (t.shape.size() == 1) shape.resize(shape.size() - 1);
  shape += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so magic + length + header + '\n' is a multiple of 64 (as NumPy does).
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw std::runtime_error("cannot write " + path);
    f.write("\x93NUMPY\x01\x00", 8);
    unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                            static_cast<unsigned char>(header.size() >> 8)};
    f.write(reinterpret_cast<char*>(len), 2);
    f << header;
    f.write(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
    if (!f) throw std::runtime_error("cannot write " + path);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("cannot write " + path);
}

}  // namespace edgeopt
