#pragma once
// A checkpoint directory: model.safetensors, or shards listed by model.safetensors.index.json
// (or, failing both, every *.safetensors in the directory). Files stay memory-mapped for
// the lifetime of the Checkpoint; views point into the maps. With MapMode::OnDemand only the
// headers and the tensors looked up with find()/get() are mapped (a rank of a split model maps
// its own slice); the data of an entry of tensors() is readable only after such a lookup.
#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "dsv4/io/mapped_file.hpp"
#include "dsv4/io/safetensors.hpp"

namespace dsv4 {

inline std::string read_text_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) fail(p.string(), ": cannot open");
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

class Checkpoint {
 public:
  static Checkpoint open(const std::filesystem::path& dir, MapMode mode = MapMode::Whole) {
    namespace fs = std::filesystem;
    std::error_code ec;  // the throwing std::filesystem overloads would escape as filesystem_error
    if (!fs::is_directory(dir, ec)) fail(dir.string(), ": not a directory", ec ? ": " + ec.message() : "");
    Checkpoint ck;
    ck.dir_ = dir;
    ck.mode_ = mode;
    const fs::path index = dir / "model.safetensors.index.json";
    if (fs::exists(index, ec) || ec) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(read_text_file(index));
      } catch (const nlohmann::json::exception& e) {
        fail(index.string(), ": invalid JSON: ", e.what());
      }
      auto wm = j.is_object() ? j.find("weight_map") : j.end();
      if (!j.is_object() || wm == j.end() || !wm->is_object()) fail(index.string(), ": missing object 'weight_map'");
      std::unordered_map<std::string, std::string> where;
      for (auto& [name, file] : wm->items()) {
        if (!file.is_string()) fail(index.string(), ": weight_map['", name, "'] is not a file name");
        std::string f = file.get<std::string>();
        if (f.find('/') != std::string::npos || f == "..") fail(index.string(), ": weight_map['", name, "'] names '", f, "' outside the directory");
        where[name] = f;
      }
      std::vector<std::string> files;
      for (auto& [n, f] : where) files.push_back(f);
      std::sort(files.begin(), files.end());
      files.erase(std::unique(files.begin(), files.end()), files.end());
      for (auto& f : files) ck.add_file(dir / f);
      for (auto& [name, f] : where) {
        auto it = ck.by_name_.find(name);
        if (it == ck.by_name_.end() || fs::path(it->second.file).filename() != f)
          fail(index.string(), ": tensor '", name, "' is listed in ", f, " but not found there");
      }
    } else if (fs::exists(dir / "model.safetensors", ec) || ec) {
      ck.add_file(dir / "model.safetensors");
    } else {
      std::vector<fs::path> files;
      for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        if (it->path().extension() == ".safetensors") files.push_back(it->path());
      if (ec) fail(dir.string(), ": cannot list: ", ec.message());
      if (files.empty()) fail(dir.string(), ": no model.safetensors, model.safetensors.index.json or *.safetensors");
      std::sort(files.begin(), files.end());
      for (auto& f : files) ck.add_file(f);
    }
    return ck;
  }

  const TensorView* find(const std::string& name) const {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) return nullptr;
    if (mode_ == MapMode::OnDemand && mapped_.insert(name).second) {
      const MappedFile& f = *maps_[map_of_.at(name)];
      f.map_range(size_t(it->second.data - f.data()), it->second.nbytes);
    }
    return &it->second;
  }
  // The entry of `name` without mapping its bytes: its data pointer only locates them, for
  // map_part / read_part (a rank of a tensor-parallel model uses a part of the tensor).
  const TensorView* find_unmapped(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &it->second;
  }
  // Makes bytes [p, p + n) of tensor t readable in place (no-op unless OnDemand).
  void map_part(const TensorView& t, const uint8_t* p, size_t n) const {
    if (mode_ != MapMode::OnDemand || n == 0 || mapped_.count(t.name)) return;
    const MappedFile& f = file_of(t, p, n);
    f.map_range(size_t(p - f.data()), n);
    part_bytes_ += n;
  }
  // Copies bytes [p, p + n) of tensor t into dst without mapping them (OnDemand: read from the file).
  void read_part(const TensorView& t, const uint8_t* p, size_t n, uint8_t* dst) const {
    if (n == 0) return;
    const MappedFile& f = file_of(t, p, n);
    f.read(size_t(p - f.data()), n, dst);
    part_bytes_ += n;
  }
  // n bytes of memory that lives as long as the checkpoint, for weights the loader rebuilt (a
  // column slice of a matrix is not contiguous in the file, so a rank holds a copy of it).
  uint8_t* own(size_t n) const {
    owned_.emplace_back(n);
    return owned_.back().data();
  }
  // Bytes of tensor data this process can read: whole tensors looked up with find()/get(), parts
  // mapped or read, and the loader's copies (OnDemand; the file sizes when Whole).
  size_t bytes_in_use() const {
    if (mode_ == MapMode::Whole) return total_bytes();
    size_t n = part_bytes_;
    for (const std::string& name : mapped_) n += by_name_.at(name).nbytes;
    return n;
  }

  const TensorView& get(const std::string& name) const {
    if (auto* t = find(name)) return *t;
    fail(dir_.string(), ": missing tensor '", name, "'");
  }
  const std::filesystem::path& dir() const { return dir_; }
  // Whether a tensor's bytes are mapped (always, unless OnDemand and never looked up).
  bool is_mapped(const std::string& name) const { return mode_ == MapMode::Whole || mapped_.count(name) > 0; }
  const std::unordered_map<std::string, TensorView>& tensors() const { return by_name_; }
  size_t total_bytes() const {
    size_t n = 0;
    for (auto& [k, v] : by_name_) n += v.nbytes;
    return n;
  }

 private:
  void add_file(const std::filesystem::path& p) {
    auto m = std::make_unique<MappedFile>(p.string(), mode_);
    if (mode_ == MapMode::OnDemand && m->size() >= 8) {  // the header, as far as its length field says
      m->map_range(0, 8);
      uint64_t n = 0;
      for (int i = 7; i >= 0; --i) n = (n << 8) | m->data()[i];
      m->map_range(0, size_t(std::min<uint64_t>(m->size(), 8 + std::min(n, kMaxSafetensorsHeader))));
    }
    for (auto& v : parse_safetensors({m->data(), m->size()}, p.string())) {
      if (by_name_.count(v.name)) fail(p.string(), ": tensor '", v.name, "' also appears in ", by_name_[v.name].file);
      std::string n = v.name;
      map_of_[n] = maps_.size();
      by_name_.emplace(std::move(n), std::move(v));
    }
    maps_.push_back(std::move(m));
  }
  const MappedFile& file_of(const TensorView& t, const uint8_t* p, size_t n) const {
    if (p < t.data || n > t.nbytes || size_t(p - t.data) > t.nbytes - n)
      fail(t.file, ": tensor '", t.name, "': bytes ", p - t.data, "+", n, " are outside its ", t.nbytes, " bytes");
    return *maps_[map_of_.at(t.name)];
  }
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<MappedFile>> maps_;
  std::unordered_map<std::string, TensorView> by_name_;
  MapMode mode_ = MapMode::Whole;
  std::unordered_map<std::string, size_t> map_of_;  // tensor -> index into maps_
  mutable std::unordered_set<std::string> mapped_;  // OnDemand: tensors whose bytes are mapped
  mutable std::deque<std::vector<uint8_t>> owned_;  // own(): a deque keeps every buffer where it is
  mutable size_t part_bytes_ = 0;
};

}  // namespace dsv4
