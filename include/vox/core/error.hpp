#pragma once
// vox::Error: the one exception type for bad input. Messages name the operation and what was
// wrong with it (shapes, dtypes, axes, file offsets), so a user can fix the call site.
#include <sstream>
#include <stdexcept>
#include <string>

namespace vox {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}
}  // namespace detail

// Throws vox::Error("op: message") built from any streamable parts.
template <class... Parts>
[[noreturn]] void fail(const char* op, const Parts&... parts) {
  throw Error(detail::concat(op, ": ", parts...));
}

}  // namespace vox

// VOX_CHECK(condition, "op", parts...): throw vox::Error unless condition holds.
#define VOX_CHECK(cond, op, ...)               \
  do {                                         \
    if (!(cond)) ::vox::fail(op, __VA_ARGS__); \
  } while (0)
