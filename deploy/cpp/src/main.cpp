// edgeopt-run ARTIFACT_DIR INPUT.npy OUTPUT.npy [--threads N]
//
// Verifies the artifact's checksums, runs it on a float32 batch and writes the first
// output to OUTPUT.npy (further outputs to OUTPUT.1.npy, OUTPUT.2.npy, ...).
// Exit codes: 0 ok, 2 bad artifact / bad input / usage, 1 runtime failure.
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <string>

#include "artifact.h"
#include "backend.h"
#include "npy.h"

namespace {

const char* USAGE = "usage: edgeopt-run ARTIFACT_DIR INPUT.npy OUTPUT.npy [--threads N]";

std::string exe_dir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

std::string output_path(const std::string& first, size_t i) {
  if (i == 0) return first;
  std::string stem = first.size() > 4 && first.compare(first.size() - 4, 4, ".npy") == 0
                         ? first.substr(0, first.size() - 4) : first;
  return stem + "." + std::to_string(i) + ".npy";
}

int run(int argc, char** argv) {
  std::vector<std::string> args;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::puts(USAGE);
      return 0;
    } else {
      args.emplace_back(argv[i]);
    }
  }
  if (args.size() != 3) throw edgeopt::ArtifactError(USAGE);
  edgeopt::Artifact artifact = edgeopt::load_artifact(args[0]);
  edgeopt::Tensor x;
  try {
    x = edgeopt::read_npy(args[1]);
  } catch (const std::exception& e) {
    throw edgeopt::ArtifactError(e.what());
  }
  std::unique_ptr<edgeopt::Backend> backend;
  if (artifact.backend == "onnxruntime")
    backend = edgeopt::make_onnxruntime(artifact, exe_dir(), threads);
  else if (artifact.backend == "tvm")
    backend = edgeopt::make_tvm(artifact, threads);
  else
    throw edgeopt::ArtifactError("artifact " + args[0] + " needs backend " + artifact.backend +
                                 ", which this runner does not have");
  std::vector<edgeopt::Tensor> outputs = backend->run(x);
  for (size_t i = 0; i < outputs.size(); ++i)
    edgeopt::write_npy(output_path(args[2], i), outputs[i]);
  std::fprintf(stderr, "edgeopt-run: %s, %zu output(s) written\n", backend->describe().c_str(),
               outputs.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const edgeopt::ArtifactError& e) {
    std::fprintf(stderr, "edgeopt-run: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "edgeopt-run: error: %s\n", e.what());
    return 1;
  }
}
