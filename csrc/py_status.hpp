// What the CPU (_core) and CUDA (_cuda) modules share on the Python side: one mapping from
// fdjpeg::Status to Python exception classes, argument checks that name what was given, and the
// numpy sample type test. Included by csrc/bindings.cpp and cuda/bindings.cpp only.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
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

}  // namespace python
}  // namespace fdjpeg
