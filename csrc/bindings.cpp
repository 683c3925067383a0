// Python bindings of the core: numpy arrays (any strides) in; failures out as the exception classes
// of csrc/py_status.hpp (ValueError, InputRangeError, MemoryError). The GIL is released around
// every call into the core.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <sstream>
#include <string>

#include "dispatch.hpp"
#include "pipeline.hpp"
#include "py_status.hpp"

namespace py = pybind11;

namespace {

using fdjpeg::python::batch_view;
using fdjpeg::python::int_arg;

using fdjpeg::python::FloatTables;
using fdjpeg::python::IndexMap;

void quantize(const py::array& in, py::array& out, const FloatTables& quant,
              const FloatTables& dequant, const py::object& color, const py::object& subsampling,
              bool level_shift, const py::object& passes,
              const std::optional<IndexMap>& block_tables, const py::object& threads) {
  const fdjpeg::BatchView src = batch_view(in, "input");
  const fdjpeg::BatchView dst = batch_view(out, "output");
  if (!out.writeable()) throw py::value_error("output array is read-only");
  const fdjpeg::python::HostSpec h = fdjpeg::python::host_spec(
      quant, dequant, color, subsampling, level_shift, passes, block_tables, src.shape[0]);
  const int thread_count =
      static_cast<int>(int_arg(threads, "threads", 0, fdjpeg::kMaxThreads, " (0: one per core)"));
  fdjpeg::Result result;
  {
    py::gil_scoped_release release;
    result = fdjpeg::quantize(src, dst, h.spec, thread_count);
  }
  fdjpeg::python::raise_for(result);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fdjpeg native core: block quantization pipelines over strided image batches";
  // Raised for float samples outside [0, 1] (NaN, infinite), with the complete message.
  PyObject* range_error = PyErr_NewExceptionWithDoc(
      "fdjpeg._core.InputRangeError",
      "Float image samples outside [0, 1], NaN or infinite (a ValueError). The message names "
      "them: whether NaN or infinite values occur, and the smallest and largest finite sample.",
      PyExc_ValueError, nullptr);
  if (!range_error) throw py::error_already_set();
  fdjpeg::python::input_range_error() = range_error;  // the module's reference, never released
  m.add_object("InputRangeError", py::handle(range_error));
  m.attr("MAX_PASSES") = fdjpeg::kMaxPasses;
  m.attr("MAX_THREADS") = fdjpeg::kMaxThreads;
  m.def("quantize", &quantize, py::arg("input"), py::arg("output"), py::arg("quant"),
        py::arg("dequant"), py::arg("color"), py::arg("subsampling"), py::arg("level_shift"),
        py::arg("passes"), py::arg("block_tables") = py::none(), py::arg("threads") = 0,
        "Run the pipeline from `input` into `output` (both N x H x W x C, any strides).\n\n"
        "passes: 1..MAX_PASSES (64; a call cannot be interrupted). threads: 0 (one per core) .. "
        "MAX_THREADS (1024). Raises TypeError (sample type), ValueError (arguments), "
        "InputRangeError (float samples outside [0, 1]) or MemoryError.");
  m.def(
      "padded_blocks",
      [](int64_t height, int64_t width, const py::object& subsampling, bool subsampled) {
        int64_t rows = 0, cols = 0;
        fdjpeg::padded_blocks(
            height, width,
            fdjpeg::python::subsampling_arg(subsampling),
            subsampled, &rows, &cols);
        return py::make_tuple(rows, cols);
      },
      py::arg("height"), py::arg("width"), py::arg("subsampling"), py::arg("subsampled"),
      "Size of the padded luma plane in 8x8 blocks (the shape of a block table map).");
  m.def("isa", &fdjpeg::detail::active_isa,
        "Instruction set of the kernels in use: \"avx512\", \"avx2\" or \"baseline\" (FDJPEG_ISA caps it).");
  m.def("_force_baseline", &fdjpeg::detail::set_force_baseline, py::arg("force"),
        "Use the portable kernels whatever the CPU (for testing). FDJPEG_FORCE_PORTABLE=1 or "
        "FDJPEG_ISA=baseline in the environment does the same for the whole process.");
}
