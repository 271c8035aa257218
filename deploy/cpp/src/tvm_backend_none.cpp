// Built without TVM: TVM artifacts are refused in one line.
#include "backend.h"

namespace edgeopt {

std::unique_ptr<Backend> make_tvm(const Artifact& a, int) {
  throw ArtifactError("artifact " + a.dir + " is a TVM library; this runner was built without "
                      "TVM (its ONNX Runtime artifacts run)");
}

}  // namespace edgeopt
