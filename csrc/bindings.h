// Helpers shared by the binding files: argument checks that name the offending argument.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <string>
#include <vector>

#include "core.h"
#include "matmul.h"

namespace tellme::bind {

namespace nb = nanobind;

using Array = nb::ndarray<nb::ro>;

template <class T> const char* dtype_name();
template <> inline const char* dtype_name<int8_t>() { return "int8"; }
template <> inline const char* dtype_name<uint8_t>() { return "uint8"; }
template <> inline const char* dtype_name<uint16_t>() { return "uint16"; }
template <> inline const char* dtype_name<int32_t>() { return "int32"; }
template <> inline const char* dtype_name<float>() { return "float32"; }

inline std::string shape_str(const Array& a) {
  std::string s = "(";
  for (size_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Checks dtype, device, C-contiguity and shape (-1 = any extent) and returns the data pointer.
template <class T>
const T* checked(const Array& a, const char* name, std::initializer_list<int64_t> shape) {
  if (a.device_type() != nb::device::cpu::value)
    throw nb::value_error((std::string(name) + " must be a CPU array").c_str());
  if (a.dtype() != nb::dtype<T>())
    throw nb::type_error((std::string(name) + " must have dtype " + dtype_name<T>()).c_str());
  if (a.ndim() != shape.size())
    throw nb::value_error((std::string(name) + " must be " + std::to_string(shape.size()) +
                           "-D, got shape " + shape_str(a)).c_str());
  size_t i = 0;
  for (int64_t want : shape) {
    if (want >= 0 && static_cast<int64_t>(a.shape(i)) != want)
      throw nb::value_error((std::string(name) + " has shape " + shape_str(a) + ", expected " +
                             std::to_string(want) + " in dimension " + std::to_string(i)).c_str());
    ++i;
  }
  int64_t expect = 1;
  for (size_t d = a.size() ? a.ndim() : 0; d-- > 0;) {  // an empty array has no layout to check
    if (a.shape(d) != 1 && a.stride(d) != expect)
      throw nb::value_error((std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)").c_str());
    expect *= static_cast<int64_t>(a.shape(d));
  }
  return static_cast<const T*>(a.data());
}

template <class T>
nb::ndarray<nb::numpy, T> new_array(std::vector<size_t> shape, T** data) {
  size_t n = 1;
  for (size_t s : shape) n *= s;
  T* p = new T[n ? n : 1]();
  nb::capsule owner(p, [](void* q) noexcept { delete[] static_cast<T*>(q); });
  *data = p;
  return nb::ndarray<nb::numpy, T>(p, shape.size(), shape.data(), owner);
}

inline void check_features(int64_t out_features, int64_t in_features) {
  if (out_features < 1 || in_features < 1)
    throw nb::value_error("out_features and in_features must be positive");
}

inline TlmmWeights check_tlmm(const Array& tiles, const Array& neg_count, int64_t out_features,
                   int64_t in_features) {
  check_features(out_features, in_features);
  const int64_t out_pad = round_up(out_features, ROW_BLOCK), in_pad = round_up(in_features, KB_WEIGHTS);
  return {checked<uint8_t>(tiles, "tiles", {out_pad / ROW_BLOCK, in_pad / KB_WEIGHTS, TILE_BYTES}),
          checked<int32_t>(neg_count, "neg_count", {out_pad}), out_features, in_features, out_pad,
          in_pad};
}

inline I2Weights check_i2(const Array& codes, int64_t out_features, int64_t in_features) {
  check_features(out_features, in_features);
  const int64_t out_pad = round_up(out_features, ROW_BLOCK), in_pad = round_up(in_features, I2_K_PAD);
  return {checked<uint8_t>(codes, "codes", {out_pad, in_pad / 4}), out_features, in_features,
          out_pad, in_pad};
}

// Group scales of i2 weights w: float32 [out_pad, in / group], group a multiple of 32 dividing `in`.
inline const float* check_group_scale(const Array& scales, int64_t group, const I2Weights& w) {
  if (group < 32 || group % 32 || w.in % group)
    throw nb::value_error(("group size " + std::to_string(group) + " must be a multiple of 32 that divides " +
                           std::to_string(w.in) + " input features").c_str());
  return checked<float>(scales, "group_scale", {w.out_pad, w.in / group});
}

void bind_engine(nb::module_& m);

}  // namespace tellme::bind
