// ONNX Runtime through its C API. The library is opened at run time (dlopen), so the
// runner builds from the header alone and finds libonnxruntime.so.1 beside itself on a
// device: $EDGEOPT_ORT_LIB, then <exe dir>/lib/, then the system's search path.
//
// The header (ORT_API_VERSION N) asks the library for API version N: any library of
// release 1.N or newer serves it, as ORT keeps its C API struct append-only.
#include <dlfcn.h>

#include <cstdlib>
#include <onnxruntime_c_api.h>

#include "backend.h"

namespace edgeopt {
namespace {

class OrtBackend : public Backend {
 public:
  OrtBackend(const Artifact& a, const std::string& exe_dir, int threads) {
    open_library(exe_dir);
    check(api_->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "edgeopt", &env_));
    OrtSessionOptions* opts = nullptr;
    check(api_->CreateSessionOptions(&opts));
    // What edgeopt.runtime's make_session sets, so both run the same optimised graph.
    check(api_->SetSessionGraphOptimizationLevel(opts, ORT_ENABLE_ALL));
    // edgeopt/core/ort_options.py: exact u8 x s8 products on x86 CPUs without VNNI,
    // whose VPMADDUBSW kernels saturate (a no-op elsewhere).
    check(api_->AddSessionConfigEntry(opts, "session.x64quantprecision", "1"));
    if (threads > 0) {
      check(api_->SetIntraOpNumThreads(opts, threads));
      check(api_->SetInterOpNumThreads(opts, 1));
    }
    std::string model = a.dir + "/" + a.model_file;
    OrtStatus* status = api_->CreateSession(env_, model.c_str(), opts, &session_);
    api_->ReleaseSessionOptions(opts);
    if (status) {
      std::string msg = api_->GetErrorMessage(status);
      api_->ReleaseStatus(status);
      throw ArtifactError("onnxruntime cannot load " + model + ": " + first_line(msg));
    }
    OrtAllocator* alloc = nullptr;
    check(api_->GetAllocatorWithDefaultOptions(&alloc));
    size_t n_out = 0;
    check(api_->SessionGetOutputCount(session_, &n_out));
    for (size_t i = 0; i < n_out; ++i) {
      char* name = nullptr;
      check(api_->SessionGetOutputName(session_, i, alloc, &name));
      outputs_.emplace_back(name);
      check(api_->AllocatorFree(alloc, name));
    }
    input_ = a.input_name;
  }

  ~OrtBackend() override {
    if (session_) api_->ReleaseSession(session_);
    if (env_) api_->ReleaseEnv(env_);
  }

  std::string describe() const override { return "onnxruntime " + version_; }

  std::vector<Tensor> run(const Tensor& x) override {
    OrtMemoryInfo* mem = nullptr;
    check(api_->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &mem));
    OrtValue* in = nullptr;
    OrtStatus* status = api_->CreateTensorWithDataAsOrtValue(
        mem, const_cast<float*>(x.data.data()), x.data.size() * sizeof(float), x.shape.data(),
        x.shape.size(), ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &in);
    api_->ReleaseMemoryInfo(mem);
    check(status);
    std::vector<const char*> out_names;
    for (const auto& n : outputs_) out_names.push_back(n.c_str());
    std::vector<OrtValue*> outs(outputs_.size(), nullptr);
    const char* in_name = input_.c_str();
    status = api_->Run(session_, nullptr, &in_name, &in, 1, out_names.data(), outs.size(),
                       outs.data());
    api_->ReleaseValue(in);
    if (status) {
      std::string msg = api_->GetErrorMessage(status);
      api_->ReleaseStatus(status);
      throw ArtifactError("onnxruntime cannot run the model on this input: " + first_line(msg));
    }
    std::vector<Tensor> result;
    for (size_t i = 0; i < outs.size(); ++i) {
      result.push_back(to_tensor(outs[i], outputs_[i]));
      api_->ReleaseValue(outs[i]);
    }
    return result;
  }

 private:
  static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

  void open_library(const std::string& exe_dir) {
    std::vector<std::string> tries;
    if (const char* env = std::getenv("EDGEOPT_ORT_LIB")) tries.emplace_back(env);
    tries.push_back(exe_dir + "/lib/libonnxruntime.so.1");
    tries.emplace_back("libonnxruntime.so.1");
    std::string errors;
    for (const auto& path : tries) {
      handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle_) break;
      errors = dlerror();
    }
    if (!handle_)
      throw RuntimeError("cannot load libonnxruntime.so.1 (set EDGEOPT_ORT_LIB or put it in " +
                         exe_dir + "/lib): " + errors);
    using GetApiBase = const OrtApiBase* (*)();
    auto get = reinterpret_cast<GetApiBase>(dlsym(handle_, "OrtGetApiBase"));
    if (!get) throw RuntimeError("the loaded libonnxruntime has no OrtGetApiBase");
    const OrtApiBase* base = get();
    version_ = base->GetVersionString();
    api_ = base->GetApi(ORT_API_VERSION);
    if (!api_)
      throw RuntimeError("onnxruntime " + version_ + " is older than this runner's header (API " +
                         std::to_string(ORT_API_VERSION) + ")");
  }

  void check(OrtStatus* status) {
    if (!status) return;
    std::string msg = api_->GetErrorMessage(status);
    api_->ReleaseStatus(status);
    throw RuntimeError("onnxruntime: " + first_line(msg));
  }

  Tensor to_tensor(OrtValue* v, const std::string& name) {
    OrtTensorTypeAndShapeInfo* info = nullptr;
    check(api_->GetTensorTypeAndShape(v, &info));
    ONNXTensorElementDataType type;
    size_t rank = 0, count = 0;
    check(api_->GetTensorElementType(info, &type));
    check(api_->GetDimensionsCount(info, &rank));
    check(api_->GetTensorShapeElementCount(info, &count));
    Tensor t;
    t.shape.resize(rank);
    check(api_->GetDimensions(info, t.shape.data(), rank));
    api_->ReleaseTensorTypeAndShapeInfo(info);
    if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      throw ArtifactError("output " + name + " is not float32; this runner writes float32 .npy");
    float* data = nullptr;
    check(api_->GetTensorMutableData(v, reinterpret_cast<void**>(&data)));
    t.data.assign(data, data + count);
    return t;
  }

  void* handle_ = nullptr;  // never dlclose'd: ORT's static destructors run at exit
  const OrtApi* api_ = nullptr;
  std::string version_;
  OrtEnv* env_ = nullptr;
  OrtSession* session_ = nullptr;
  std::vector<std::string> outputs_;
  std::string input_;
};

}  // namespace

std::unique_ptr<Backend> make_onnxruntime(const Artifact& a, const std::string& exe_dir,
                                          int threads) {
  return std::make_unique<OrtBackend>(a, exe_dir, threads);
}

}  // namespace edgeopt
