// TVM artifacts (model.so from relax.build, params.bin) through TVM's runtime, called as
// edgeopt's Python runtime calls it (compile/backends/tvm/runtime.py): load the library,
// "vm_load_executable", "vm_initialization"(cpu, 0, pooled allocator), then "main"(x, *params)
// with the params of params.bin in the manifest's param_order.
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <cstring>
#include <optional>
#include <string>

#include "backend.h"

namespace edgeopt {
namespace {

namespace ffi = tvm::ffi;

constexpr int kPooledAllocator = 2;  // tvm.runtime.vm.VirtualMachine.POOLED_ALLOCATOR

// 64-byte aligned, as TVM's own allocator: compiled kernels may use aligned vector loads
// on their inputs (a malloc'd input segfaults the int8 ResNet's fused kernels).
constexpr size_t kAlign = 64;

struct CpuAlloc {
  void AllocData(DLTensor* t) {
    size_t size = (ffi::GetDataSize(*t) + kAlign - 1) / kAlign * kAlign;
    t->data = std::aligned_alloc(kAlign, size ? size : kAlign);
    if (!t->data) throw RuntimeError("out of memory");
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

const DLDevice kCpu{kDLCPU, 0};

// The CPU's feature flags, from /proc/cpuinfo's "flags" (x86) or "Features" (ARM) line.
std::set<std::string> cpu_flags() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  std::set<std::string> flags;
  while (std::getline(f, line)) {
    if (line.rfind("flags", 0) != 0 && line.rfind("Features", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string w;
    while (words >> w) flags.insert(w);
    break;
  }
  return flags;
}

// As runtime.py's choose_library: EDGEOPT_TVM_ISA's build, else the first (best) whose
// required CPU flags this CPU has; an artifact without "libraries" has only model_file.
std::string choose_library(const Artifact& a) {
  const Json* libs = a.manifest.get("libraries");
  if (!libs || libs->type != Json::Type::Array || libs->array.empty()) return a.model_file;
  const char* forced = std::getenv("EDGEOPT_TVM_ISA");
  std::set<std::string> flags = cpu_flags();
  for (const Json& lib : libs->array) {
    const Json* file = lib.get("file");
    const Json* isa = lib.get("isa");
    if (!file) continue;
    if (forced) {
      if (isa && isa->type == Json::Type::String && isa->string == forced) return file->string;
      continue;
    }
    bool ok = true;
    if (const Json* req = lib.get("requires"))
      for (const Json& flag : req->array) ok = ok && flags.count(flag.string);
    if (ok) return file->string;
  }
  if (forced)
    throw ArtifactError(std::string("EDGEOPT_TVM_ISA=") + forced + ": artifact " + a.dir +
                        " has no such library");
  throw ArtifactError("artifact " + a.dir + " has no library this CPU can run");
}

class TvmBackend : public Backend {
 public:
  TvmBackend(const Artifact& a, int threads) {
    if (threads > 0) setenv("TVM_NUM_THREADS", std::to_string(threads).c_str(), 1);
    std::string file = choose_library(a);
    file_ = file;
    try {
      ffi::Module lib = ffi::Module::LoadFromFile(a.dir + "/" + file);
      vm_ = lib->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
      (*vm_)->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0,
                                                    kPooledAllocator);
      const Json* entry = a.manifest.get("entry");
      main_ = (*vm_)->GetFunction(entry ? entry->string : "main").value();
      const Json* pfile = a.manifest.get("params_file");
      const Json* order = a.manifest.get("param_order");
      if (pfile && pfile->type == Json::Type::String) {
        auto load = ffi::Function::GetGlobalRequired("runtime.LoadParamsFromFile");
        auto params = load(a.dir + "/" + pfile->string).cast<ffi::Map<ffi::String, ffi::Tensor>>();
        if (order && order->type == Json::Type::Array)
          for (const Json& name : order->array) params_.push_back(params.at(name.string));
      }
    } catch (const ffi::Error& e) {
      throw ArtifactError("TVM cannot load " + a.dir + "/" + file + ": " + first_line(e.what()));
    }
  }

  std::string describe() const override { return "tvm runtime, " + file_; }

  std::vector<Tensor> run(const Tensor& x) override {
    ffi::Shape shape(x.shape.begin(), x.shape.end());
    ffi::Tensor in = ffi::Tensor::FromNDAlloc(CpuAlloc(), shape, DLDataType{kDLFloat, 32, 1},
                                              kCpu);
    std::memcpy(in.data_ptr(), x.data.data(), x.data.size() * sizeof(float));
    std::vector<ffi::AnyView> args{in};
    for (const auto& p : params_) args.emplace_back(p);
    ffi::Any out;
    try {
      main_.CallPacked(args.data(), static_cast<int>(args.size()), &out);
    } catch (const ffi::Error& e) {
      throw ArtifactError("TVM cannot run the model on this input: " + first_line(e.what()));
    }
    std::vector<Tensor> result;
    if (auto t = out.try_cast<ffi::Tensor>()) {
      result.push_back(to_tensor(*t));
    } else {
      for (const ffi::Any& item : out.cast<ffi::Array<ffi::Any>>())
        result.push_back(to_tensor(item.cast<ffi::Tensor>()));
    }
    return result;
  }

 private:
  static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

  static Tensor to_tensor(const ffi::Tensor& t) {
    const DLTensor* d = t.GetDLTensorPtr();
    if (d->dtype.code != kDLFloat || d->dtype.bits != 32)
      throw ArtifactError("a TVM output is not float32; this runner writes float32 .npy");
    Tensor out;
    size_t count = 1;
    for (int i = 0; i < d->ndim; ++i) {
      out.shape.push_back(d->shape[i]);
      count *= static_cast<size_t>(d->shape[i]);
    }
    const float* data = reinterpret_cast<const float*>(static_cast<char*>(d->data) + d->byte_offset);
    out.data.assign(data, data + count);
    return out;
  }

  std::string file_;  // the build chosen for this CPU, e.g. model-avx512.so
  std::optional<ffi::Module> vm_;  // no default constructor
  ffi::Function main_;
  std::vector<ffi::Tensor> params_;
};

}  // namespace

std::unique_ptr<Backend> make_tvm(const Artifact& a, int threads) {
  return std::make_unique<TvmBackend>(a, threads);
}

}  // namespace edgeopt
