// An edgeopt artifact folder: manifest.json read, every listed file checked against its sha256.
#pragma once
#include <stdexcept>
#include <string>

#include "json.h"

namespace edgeopt {

// A bad or tampered artifact, or bad input: the runner prints it on one line and exits 2.
struct ArtifactError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Artifact {
  std::string dir;
  Json manifest;
  std::string backend;     // "onnxruntime" or "tvm"
  std::string model_file;  // relative to dir
  std::string input_name;
  bool fixed_batch_one = false;  // the model takes exactly one sample per call
};

// Reads and verifies; throws ArtifactError.
Artifact load_artifact(const std::string& dir);

}  // namespace edgeopt
