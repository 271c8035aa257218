// One backend runs a verified artifact on a float32 batch and returns its outputs.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "artifact.h"
#include "npy.h"

namespace edgeopt {

// A runtime library missing or failing: printed on one line, exit 1.
struct RuntimeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::vector<Tensor> run(const Tensor& input) = 0;
  virtual std::string describe() const = 0;  // e.g. "onnxruntime 1.32.0"
};

// threads <= 0: the runtime's default. Throws ArtifactError or RuntimeError.
std::unique_ptr<Backend> make_onnxruntime(const Artifact& a, const std::string& exe_dir,
                                          int threads);
std::unique_ptr<Backend> make_tvm(const Artifact& a, int threads);

}  // namespace edgeopt
