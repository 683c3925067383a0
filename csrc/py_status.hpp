// What the CPU (_core) and CUDA (_cuda) modules share on the Python side: one mapping from
// fdjpeg::Status to Python exception classes, argument checks that name what was given, and
// numpy arrays as batch views (sample type by kind, size and byte order). Included by csrc/bindings.cpp and cuda/bindings.cpp only.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>

#include "pipeline.hpp"

namespace fdjpeg {
namespace python {

namespace py = pybind11;

// fdjpeg._core.InputRangeError (a ValueError): created by _core, looked up by _cuda at import, so
// both modules raise the very same class. Each module holds its own reference for its lifetime.
inline PyObject*& input_range_error() {
  static PyObject* type = nullptr;
  return type;
}

[[noreturn]] inline void raise_as(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  throw py::error_already_set();
}

inline void raise_for(const Result& r) {
  switch (r.status) {
    case Status::ok:
      return;
    case Status::bad_input:
      throw py::value_error(r.message);
    case Status::input_range:
      raise_as(input_range_error() ? input_range_error() : PyExc_ValueError, r.message);
    case Status::out_of_memory:
      raise_as(PyExc_MemoryError, r.message);
    case Status::no_gpu:
    case Status::device_error:
    default:
      raise_as(PyExc_RuntimeError, r.message);
  }
}

// The integer an argument stands for (a Python int of any size, or an object with __index__, as
// numpy integers); `overflow` is set when it does not fit 64 bits.
inline long long index_value(const py::handle& value, const char* name, bool* overflow) {
  if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr()))
    throw py::type_error(std::string(name) + " must be an integer, got " +
                         py::repr(value).cast<std::string>() + " (" + Py_TYPE(value.ptr())->tp_name +
                         ")");
  const py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
  if (!index) throw py::error_already_set();
  int over = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &over);
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  *overflow = over != 0;
  return v;
}

// An integer argument checked against [lo, hi] before it is narrowed: a huge value gets a
// ValueError naming it, not pybind11's "incompatible function arguments".
inline int64_t int_arg(const py::handle& value, const char* name, int64_t lo, int64_t hi,
                       const char* note = "") {
  bool overflow = false;
  const long long v = index_value(value, name, &overflow);
  if (overflow || v < lo || v > hi) {
    std::ostringstream msg;
    msg << name << " must be in [" << lo << ", " << hi << "]" << note << ", got "
        << py::repr(value).cast<std::string>();
    throw py::value_error(msg.str());
  }
  return v;
}

// A code of an enumeration with `count` members, `meaning` listing them.
inline int enum_code(const py::handle& value, const char* name, int count, const char* meaning) {
  bool overflow = false;
  const long long v = index_value(value, name, &overflow);
  if (overflow || v < 0 || v >= count)
    throw py::value_error(std::string("unknown ") + name + " code " +
                          py::repr(value).cast<std::string>() + meaning);
  return static_cast<int>(v);
}

// The sample type of a numpy array, compared by kind, size and byte order rather than by dtype
// identity: arrays that crossed a process (pickle, multiprocessing, Ray) carry dtype objects
// equal to, but not the same as, numpy's built-in ones.
inline DType sample_type(const py::dtype& dt, const char* name) {
  // Plain fields only on the way in (no Python calls): this runs on every call.
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  const bool known = (kind == 'u' && size == 1) || (kind == 'f' && (size == 4 || size == 8));
  auto given = [&] { return py::str(static_cast<const py::object&>(dt)).cast<std::string>(); };
  if (!known)
    throw py::type_error(std::string(name) + " must hold uint8, float32 or float64 samples, got " +
                         given());
  // numpy writes native order as '=' (and '|' where order does not apply).
  const char order = dt.byteorder();
  if (order != '=' && order != '|')
    throw py::type_error(std::string(name) + " holds " + given() +
                         " samples in non-native byte order; convert them first, e.g. "
                         "x.astype(x.dtype.newbyteorder('='))");
  if (kind == 'u') return DType::u8;
  return size == 4 ? DType::f32 : DType::f64;
}

// A numpy N x H x W x C array (any strides) as the core sees it.
inline BatchView batch_view(const py::array& a, const char* name) {
  if (a.ndim() != 4) {
    std::ostringstream msg;
    msg << name << " must be a 4-D N x H x W x C array, got " << a.ndim() << " dimensions";
    throw py::value_error(msg.str());
  }
  BatchView v;
  v.dtype = sample_type(a.dtype(), name);
  const auto item = static_cast<int64_t>(a.itemsize());
  for (int d = 0; d < 4; ++d) {
    v.shape[d] = a.shape(d);
    if (a.strides(d) % item != 0)
      throw py::value_error(std::string(name) + " has strides that are not whole samples");
    v.stride[d] = a.strides(d) / item;
  }
  v.data = const_cast<void*>(a.data());
  return v;
}

using FloatTables = py::array_t<float, py::array::c_style | py::array::forcecast>;
using IndexMap = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

inline Color color_arg(const py::handle& value) {
  return static_cast<Color>(enum_code(value, "color", 2, " (0: none, 1: ycbcr)"));
}

inline Subsampling subsampling_arg(const py::handle& value) {
  return static_cast<Subsampling>(enum_code(value, "subsampling", 3, " (0: 444, 1: 422, 2: 420)"));
}

// Tables and the optional block map, checked for shape; their contents are checked by the core.
struct HostSpec {
  FloatTables quant, dequant;
  std::optional<IndexMap> map;
  QuantSpec spec;
};

// The call's pipeline description; `images` is the batch size N (the block map must match it).
inline HostSpec host_spec(const FloatTables& quant, const FloatTables& dequant,
                          const py::object& color, const py::object& subsampling, bool level_shift,
                          const py::object& passes, const std::optional<IndexMap>& block_tables,
                          int64_t images) {
  if (quant.ndim() != 2 || quant.shape(1) != 192 || dequant.ndim() != 2 ||
      dequant.shape(0) != quant.shape(0) || dequant.shape(1) != 192)
    throw py::value_error("tables must be K x 192 arrays (K sets of 3 components x 64 steps)");
  HostSpec h{quant, dequant, block_tables, {}};
  QuantSpec& s = h.spec;
  s.color = color_arg(color);
  s.subsampling = subsampling_arg(subsampling);
  s.level_shift = level_shift;
  s.passes = static_cast<int>(int_arg(passes, "passes", 1, kMaxPasses));
  s.table_sets = static_cast<int>(quant.shape(0));
  s.quant = h.quant.data();
  s.dequant = h.dequant.data();
  if (h.map) {
    if (h.map->ndim() != 3 || h.map->shape(0) != images)
      throw py::value_error("block table map must be N x rows x cols");
    s.block_tables = h.map->data();
    s.block_rows = h.map->shape(1);
    s.block_cols = h.map->shape(2);
  }
  return h;
}

}  // namespace python
}  // namespace fdjpeg
