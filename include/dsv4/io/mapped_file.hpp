#pragma once
// A read-only memory map of a file. Weights are used in place from the map. Either the whole file
// is mapped at once, or (OnDemand) only address space is reserved and the byte ranges asked for are
// mapped into it: a rank of a split model then never maps the tensors it does not use.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "dsv4/core/error.hpp"

namespace dsv4 {

enum class MapMode { Whole, OnDemand };

class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path, MapMode mode = MapMode::Whole) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      fail(path, ": not a regular file");
    }
    size_ = size_t(st.st_size);
    if (size_ > 0 && mode == MapMode::OnDemand) {
      void* p = ::mmap(nullptr, size_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) {
        int e = errno;
        ::close(fd);
        fail(path, ": cannot reserve ", size_, " bytes of address space: ", std::strerror(e));
      }
      data_ = static_cast<const uint8_t*>(p);
      fd_ = fd;
      return;
    }
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        int e = errno;
        ::close(fd);
        fail(path, ": mmap failed: ", std::strerror(e));
      }
      data_ = static_cast<const uint8_t*>(p);
    }
    ::close(fd);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& o) noexcept { *this = std::move(o); }
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      release();
      path_ = std::move(o.path_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~MappedFile() { release(); }

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // OnDemand: makes bytes [offset, offset + bytes) readable (whole pages around them); no-op for
  // a whole-file map.
  void map_range(size_t offset, size_t bytes) const {
    if (fd_ < 0 || bytes == 0) return;
    if (offset > size_ || bytes > size_ - offset) fail(path_, ": range ", offset, "+", bytes, " is past the end");
    const size_t page = size_t(::sysconf(_SC_PAGESIZE));
    const size_t begin = offset / page * page, end = std::min(size_, (offset + bytes + page - 1) / page * page);
    void* p = ::mmap(const_cast<uint8_t*>(data_) + begin, end - begin, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd_,
                     off_t(begin));
    if (p == MAP_FAILED) fail(path_, ": mmap of bytes ", begin, "..", end, " failed: ", std::strerror(errno));
  }

  // Copies bytes [offset, offset + bytes) into dst. OnDemand: read from the file, nothing mapped
  // (a rank's column slice of a matrix, copied out row by row); whole-file map: from the map.
  void read(size_t offset, size_t bytes, uint8_t* dst) const {
    if (offset > size_ || bytes > size_ - offset) fail(path_, ": range ", offset, "+", bytes, " is past the end");
    if (fd_ < 0) {
      std::memcpy(dst, data_ + offset, bytes);
      return;
    }
    for (size_t done = 0; done < bytes;) {
      const ssize_t n = ::pread(fd_, dst + done, bytes - done, off_t(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail(path_, ": read of bytes ", offset + done, "..", offset + bytes, " failed",
                       n < 0 ? std::string(": ") + std::strerror(errno) : std::string(": end of file"));
      done += size_t(n);
    }
  }

 private:
  void release() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    data_ = nullptr;
    size_ = 0;
  }
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;  // kept open while ranges are mapped on demand
};

}  // namespace dsv4
