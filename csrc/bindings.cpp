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

using fdjpeg::python::int_arg;

fdjpeg::BatchView batch_view(const py::array& a, const char* name) {
  if (a.ndim() != 4) {
    std::ostringstream msg;
    msg << name << " must be a 4-D N x H x W x C array, got " << a.ndim() << " dimensions";
    throw py::value_error(msg.str());
  }
  fdjpeg::BatchView v;
  v.dtype = fdjpeg::python::sample_type(a.dtype(), name);
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

template <class E>
E enum_arg(const py::handle& value, int count, const char* name, const char* meaning) {
  return static_cast<E>(fdjpeg::python::enum_code(value, name, count, meaning));
}

constexpr const char* kColorCodes = " (0: none, 1: ycbcr)";
constexpr const char* kSubsamplingCodes = " (0: 444, 1: 422, 2: 420)";

using FloatTables = py::array_t<float, py::array::c_style | py::array::forcecast>;
using IndexMap = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

void quantize(const py::array& in, py::array& out, const FloatTables& quant,
              const FloatTables& dequant, const py::object& color, const py::object& subsampling,
              bool level_shift, const py::object& passes,
              const std::optional<IndexMap>& block_tables, const py::object& threads) {
  fdjpeg::BatchView src = batch_view(in, "input");
  fdjpeg::BatchView dst = batch_view(out, "output");
  if (!out.writeable()) throw py::value_error("output array is read-only");
  if (quant.ndim() != 2 || quant.shape(1) != 192 || dequant.ndim() != 2 ||
      dequant.shape(0) != quant.shape(0) || dequant.shape(1) != 192)
    throw py::value_error("tables must be K x 192 arrays (K sets of 3 components x 64 steps)");
  fdjpeg::QuantSpec spec;
  spec.color = enum_arg<fdjpeg::Color>(color, 2, "color", kColorCodes);
  spec.subsampling = enum_arg<fdjpeg::Subsampling>(subsampling, 3, "subsampling", kSubsamplingCodes);
  spec.level_shift = level_shift;
  spec.passes = static_cast<int>(int_arg(passes, "passes", 1, fdjpeg::kMaxPasses));
  const int thread_count =
      static_cast<int>(int_arg(threads, "threads", 0, fdjpeg::kMaxThreads, " (0: one per core)"));
  spec.table_sets = static_cast<int>(quant.shape(0));
  spec.quant = quant.data();
  spec.dequant = dequant.data();
  if (block_tables) {
    const IndexMap& map = *block_tables;
    if (map.ndim() != 3 || map.shape(0) != src.shape[0])
      throw py::value_error("block table map must be N x rows x cols");
    spec.block_tables = map.data();
    spec.block_rows = map.shape(1);
    spec.block_cols = map.shape(2);
  }
  fdjpeg::Result result;
  {
    py::gil_scoped_release release;
    result = fdjpeg::quantize(src, dst, spec, thread_count);
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
            enum_arg<fdjpeg::Subsampling>(subsampling, 3, "subsampling", kSubsamplingCodes),
            subsampled, &rows, &cols);
        return py::make_tuple(rows, cols);
      },
      py::arg("height"), py::arg("width"), py::arg("subsampling"), py::arg("subsampled"),
      "Size of the padded luma plane in 8x8 blocks (the shape of a block table map).");
  m.def("isa", &fdjpeg::detail::active_isa, "Instruction set of the kernels in use.");
  m.def("_force_baseline", &fdjpeg::detail::set_force_baseline, py::arg("force"),
        "Use the portable kernels whatever the CPU (for testing). FDJPEG_FORCE_PORTABLE=1 or "
        "FDJPEG_ISA=baseline in the environment does the same for the whole process.");
}
