// Python bindings of the CUDA pipeline: raw device pointers, shapes, strides and a stream handle
// in (no libtorch, no Python objects below this file); failures out as the exception classes of
// csrc/py_status.hpp, the same as the CPU core's.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "../csrc/py_status.hpp"
#include "fdjpeg_cuda.hpp"

namespace py = pybind11;

namespace {

using fdjpeg::python::FloatTables;
using fdjpeg::python::host_spec;
using fdjpeg::python::HostSpec;
using fdjpeg::python::IndexMap;

const char* const kDtypeNames[] = {"uint8", "float32", "float64"};

fdjpeg::DType dtype_code(const std::string& name) {
  for (int i = 0; i < 3; ++i)
    if (name == kDtypeNames[i]) return static_cast<fdjpeg::DType>(i);
  throw py::type_error("samples must be uint8, float32 or float64, got " + name);
}

fdjpeg::BatchView device_batch(std::uintptr_t ptr, fdjpeg::DType dtype,
                               const std::vector<int64_t>& shape,
                               const std::vector<int64_t>& strides, const char* name) {
  if (shape.size() != 4 || strides.size() != 4)
    throw py::value_error(std::string(name) + ": shape and strides must have 4 entries (N, H, W, C)");
  fdjpeg::BatchView v;
  v.data = reinterpret_cast<void*>(ptr);
  v.dtype = dtype;
  for (int d = 0; d < 4; ++d) {
    v.shape[d] = shape[d];
    v.stride[d] = strides[d];
    if (strides[d] < 0) throw py::value_error(std::string(name) + ": negative strides");
  }
  return v;
}

void quantize(std::uintptr_t in_ptr, std::uintptr_t out_ptr, const std::string& dtype,
              const std::vector<int64_t>& shape, const std::vector<int64_t>& in_strides,
              const std::vector<int64_t>& out_strides, const FloatTables& quant,
              const FloatTables& dequant, const py::object& color, const py::object& subsampling,
              bool level_shift, const py::object& passes,
              const std::optional<IndexMap>& block_tables, int device, std::uintptr_t stream) {
  const fdjpeg::DType code = dtype_code(dtype);
  const fdjpeg::BatchView in = device_batch(in_ptr, code, shape, in_strides, "input");
  const fdjpeg::BatchView out = device_batch(out_ptr, code, shape, out_strides, "output");
  const HostSpec h = host_spec(quant, dequant, color, subsampling, level_shift, passes,
                               block_tables, shape[0]);
  fdjpeg::Result r;
  {
    py::gil_scoped_release release;
    r = fdjpeg::cuda::quantize_on_device(in, out, h.spec, device, stream);
  }
  fdjpeg::python::raise_for(r);
}

void emulate(const py::array& in, py::array& out, const FloatTables& quant,
             const FloatTables& dequant, const py::object& color, const py::object& subsampling,
             bool level_shift, const py::object& passes,
             const std::optional<IndexMap>& block_tables) {
  const fdjpeg::BatchView src = fdjpeg::python::batch_view(in, "input");
  const fdjpeg::BatchView dst = fdjpeg::python::batch_view(out, "output");
  if (!out.writeable()) throw py::value_error("output array is read-only");
  const HostSpec h = host_spec(quant, dequant, color, subsampling, level_shift, passes,
                               block_tables, src.shape[0]);
  fdjpeg::Result r;
  {
    py::gil_scoped_release release;
    r = fdjpeg::cuda::emulate_on_host(src, dst, h.spec);
  }
  fdjpeg::python::raise_for(r);
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fdjpeg CUDA kernel: the block-quantization pipeline as one fused kernel";
  // The CPU core's exception class, so that both back ends raise the same one.
  py::object range_error = py::module_::import("fdjpeg._core").attr("InputRangeError");
  fdjpeg::python::input_range_error() = range_error.ptr();
  m.attr("InputRangeError") = range_error;
  range_error.release();  // the module's reference, never released
  m.def("quantize", &quantize, py::arg("input_ptr"), py::arg("output_ptr"), py::arg("dtype"),
        py::arg("shape"), py::arg("input_strides"), py::arg("output_strides"), py::arg("quant"),
        py::arg("dequant"), py::arg("color"), py::arg("subsampling"), py::arg("level_shift"),
        py::arg("passes"), py::arg("block_tables") = py::none(), py::arg("device") = 0,
        py::arg("stream") = 0,
        "Enqueue the pipeline on `stream` of `device`: device pointers, N x H x W x C shape and "
        "element strides; host tables (K x 192) and block map. Does not wait for the GPU.");
  m.def("emulate", &emulate, py::arg("input"), py::arg("output"), py::arg("quant"),
        py::arg("dequant"), py::arg("color"), py::arg("subsampling"), py::arg("level_shift"),
        py::arg("passes"), py::arg("block_tables") = py::none(),
        "Run the kernel's tile code on the CPU over numpy N x H x W x C arrays (for tests).");
  m.def("device_problem", &fdjpeg::cuda::device_problem,
        "Why no GPU can be used ('' when one can).");
}
