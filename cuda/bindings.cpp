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
              const std::optional<IndexMap>& block_tables, int device, std::uintptr_t stream,
              std::uintptr_t workspace, size_t workspace_bytes) {
  const fdjpeg::DType code = dtype_code(dtype);
  const fdjpeg::BatchView in = device_batch(in_ptr, code, shape, in_strides, "input");
  const fdjpeg::BatchView out = device_batch(out_ptr, code, shape, out_strides, "output");
  const HostSpec h = host_spec(quant, dequant, color, subsampling, level_shift, passes,
                               block_tables, shape[0]);
  fdjpeg::Result r;
  {
    py::gil_scoped_release release;
    r = fdjpeg::cuda::quantize_on_device(in, out, h.spec, device, stream,
                                         reinterpret_cast<void*>(workspace), workspace_bytes);
  }
  fdjpeg::python::raise_for(r);
}

// A dense N x H x W x C view at a placeholder address: what the size queries need of a call.
fdjpeg::BatchView shape_only(fdjpeg::DType code, const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(4, 1);
  if (shape.size() == 4)
    for (int d = 2; d >= 0; --d) strides[d] = strides[d + 1] * shape[d + 1];
  return device_batch(4096, code, shape, strides, "input");
}

size_t workspace_size(const std::string& dtype, const std::vector<int64_t>& shape,
                      const FloatTables& quant, const FloatTables& dequant, const py::object& color,
                      const py::object& subsampling, bool level_shift, const py::object& passes,
                      const std::optional<IndexMap>& block_tables) {
  const fdjpeg::BatchView in = shape_only(dtype_code(dtype), shape);
  fdjpeg::BatchView out = in;
  out.data = reinterpret_cast<void*>(uintptr_t{1} << 40);  // apart from `in`
  const HostSpec h = host_spec(quant, dequant, color, subsampling, level_shift, passes,
                               block_tables, shape[0]);
  size_t bytes = 0;
  fdjpeg::python::raise_for(fdjpeg::cuda::workspace_size(in, out, h.spec, &bytes));
  return bytes;
}

int occupancy(const std::string& dtype, const std::vector<int64_t>& shape, const py::object& color,
              const py::object& subsampling, bool level_shift, int device) {
  const fdjpeg::DType code = dtype_code(dtype);
  fdjpeg::QuantSpec spec;
  spec.color = fdjpeg::python::color_arg(color);
  spec.subsampling = fdjpeg::python::subsampling_arg(subsampling);
  spec.level_shift = level_shift;
  int ctas = 0;
  fdjpeg::Result r;
  {
    py::gil_scoped_release release;
    r = fdjpeg::cuda::occupancy(code, shape_only(code, shape), spec, device, &ctas);
  }
  fdjpeg::python::raise_for(r);
  return ctas;
}

void emulate(const py::array& in, py::array& out, const FloatTables& quant,
             const FloatTables& dequant, const py::object& color, const py::object& subsampling,
             bool level_shift, const py::object& passes,
             const std::optional<IndexMap>& block_tables, std::optional<uint64_t> seed,
             int drop_barrier) {
  const fdjpeg::BatchView src = fdjpeg::python::batch_view(in, "input");
  const fdjpeg::BatchView dst = fdjpeg::python::batch_view(out, "output");
  if (!out.writeable()) throw py::value_error("output array is read-only");
  const HostSpec h = host_spec(quant, dequant, color, subsampling, level_shift, passes,
                               block_tables, src.shape[0]);
  fdjpeg::Result r;
  {
    py::gil_scoped_release release;
    fdjpeg::cuda::EmulationOrder order;
    order.shuffle = seed.has_value();
    order.seed = seed.value_or(0);
    order.drop_barrier = drop_barrier;
    r = fdjpeg::cuda::emulate_on_host(src, dst, h.spec, order);
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
        py::arg("stream") = 0, py::arg("workspace") = 0, py::arg("workspace_bytes") = 0,
        "Enqueue the pipeline on `stream` of `device`: device pointers, N x H x W x C shape and "
        "element strides; host tables (K x 192) and block map; a device workspace of "
        "workspace_size() bytes. Does not wait for the GPU.");
  m.def("workspace_size", &workspace_size, py::arg("dtype"), py::arg("shape"), py::arg("quant"),
        py::arg("dequant"), py::arg("color"), py::arg("subsampling"), py::arg("level_shift"),
        py::arg("passes"), py::arg("block_tables") = py::none(),
        "Bytes of device workspace quantize() needs for this call (often 0).");
  m.def("occupancy", &occupancy, py::arg("dtype"), py::arg("shape"), py::arg("color"),
        py::arg("subsampling"), py::arg("level_shift"), py::arg("device") = 0,
        "CTAs of the kernel for such a call that fit on one multiprocessor of `device`.");
  m.def("emulate", &emulate, py::arg("input"), py::arg("output"), py::arg("quant"),
        py::arg("dequant"), py::arg("color"), py::arg("subsampling"), py::arg("level_shift"),
        py::arg("passes"), py::arg("block_tables") = py::none(), py::arg("seed") = py::none(),
        py::arg("drop_barrier") = -1,
        "Run the kernel's tile code on the CPU over numpy N x H x W x C arrays (for tests): "
        "256 emulated threads per tile, shared memory NaN at the start of each; with `seed`, "
        "tiles, threads, warps and lanes in a shuffled order; drop_barrier leaves out a barrier "
        "(0, 1, 2) to show that the comparison catches it.");
  m.def("device_problem", &fdjpeg::cuda::device_problem,
        "Why no GPU can be used ('' when one can).");
}
