#include "artifact.h"

#include <fstream>
#include <sstream>
#include <vector>

#include "sha256.h"

namespace edgeopt {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw ArtifactError(path + " not found: not an edgeopt artifact");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const std::string& string_field(const Json& m, const std::string& key, const std::string& where) {
  const Json* v = m.get(key);
  if (!v || v->type != Json::Type::String)
    throw ArtifactError(where + " has no string field \"" + key + "\"");
  return v->string;
}

}  // namespace

Artifact load_artifact(const std::string& dir) {
  Artifact a;
  a.dir = dir;
  std::string mpath = dir + "/manifest.json";
  try {
    a.manifest = parse_json(read_text(mpath));
  } catch (const ArtifactError&) {
    throw;
  } catch (const std::exception& e) {
    throw ArtifactError(mpath + " is not valid JSON (" + e.what() + ")");
  }
  const Json* version = a.manifest.get("format_version");
  if (!version || version->type != Json::Type::Number || version->number != 1)
    throw ArtifactError(mpath + ": format_version is not supported (this runner reads 1)");

  const Json* files = a.manifest.get("files");
  if (!files || files->type != Json::Type::Object || files->object.empty())
    throw ArtifactError(mpath + " lists no files to check");
  for (const auto& [name, info] : files->object) {
    if (name.find("..") != std::string::npos || name.empty() || name[0] == '/')
      throw ArtifactError(mpath + " lists a file outside the artifact: " + name);
    std::string path = dir + "/" + name;
    std::string want = string_field(info, "sha256", mpath + " entry " + name);
    std::string have;
    try {
      have = sha256_file(path);
    } catch (const std::exception&) {
      throw ArtifactError("artifact " + dir + " is missing " + name);
    }
    if (have != want)
      throw ArtifactError("artifact file " + path +
                          " does not match its manifest checksum (modified or corrupt)");
  }

  a.backend = string_field(a.manifest, "backend", mpath);
  a.model_file = string_field(a.manifest, "model_file", mpath);
  if (!files->get(a.model_file))
    throw ArtifactError(mpath + ": model_file " + a.model_file + " has no checksum");
  const Json* inputs = a.manifest.get("inputs");
  if (!inputs || inputs->type != Json::Type::Array || inputs->array.empty())
    throw ArtifactError(mpath + " declares no inputs");
  // Inputs the compiler bound to constants are not fed (as in edgeopt.runtime).
  const Json* bound = a.manifest.get("bound_inputs");
  std::vector<const Json*> free;
  for (const Json& in : inputs->array) {
    const Json* name = in.get("name");
    if (!name || !bound || !bound->get(name->string)) free.push_back(&in);
  }
  if (free.size() != 1)
    throw ArtifactError("artifact " + dir + " has " + std::to_string(free.size()) +
                        " inputs; this runner feeds one .npy");
  const Json& in = *free[0];
  a.input_name = string_field(in, "name", mpath + " input");
  const Json* dtype = in.get("dtype");
  if (dtype && dtype->type == Json::Type::String && dtype->string != "float32")
    throw ArtifactError("artifact " + dir + " input " + a.input_name + " is " + dtype->string +
                        "; this runner feeds float32");
  const Json* shape = in.get("shape");
  if (shape && shape->type == Json::Type::Array && !shape->array.empty()) {
    const Json& first = shape->array[0];
    a.fixed_batch_one = first.type == Json::Type::Number && first.number == 1;
  }
  return a;
}

}  // namespace edgeopt
