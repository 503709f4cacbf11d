#pragma once
// Errors. Bad input (files, configs, token ids) raises dsv4::Error with a message that
// names the file, key or tensor; programmer errors trip DSV4_ASSERT, which aborts with
// file and line.
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace dsv4 {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates its arguments with operator<< (g++ 12 has no std::format).
template <class... Args>
std::string cat(Args&&... args) {
  std::ostringstream s;
  (s << ... << std::forward<Args>(args));
  return s.str();
}

template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(cat(std::forward<Args>(args)...));
}

}  // namespace dsv4

#define DSV4_ASSERT(cond)                                                              \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: internal error: assertion '%s' failed\n", __FILE__, \
                   __LINE__, #cond);                                                   \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

// Input validation that raises dsv4::Error; the message arguments are only evaluated on failure.
#define DSV4_CHECK(cond, ...)                   \
  do {                                          \
    if (!(cond)) ::dsv4::fail(__VA_ARGS__);     \
  } while (0)
