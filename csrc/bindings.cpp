// Python bindings of the core: numpy arrays (any strides) in, validation errors out as ValueError.
// The only file that knows pybind11; the GIL is released around every call into the core.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <sstream>
#include <string>

#include "dispatch.hpp"
#include "pipeline.hpp"

namespace py = pybind11;

namespace {

fdjpeg::BatchView batch_view(const py::array& a, const char* name) {
  if (a.ndim() != 4) {
    std::ostringstream msg;
    msg << name << " must be a 4-D N x H x W x C array, got " << a.ndim() << " dimensions";
    throw py::value_error(msg.str());
  }
  fdjpeg::BatchView v;
  const py::dtype dt = a.dtype();
  if (dt.is(py::dtype::of<uint8_t>()))
    v.dtype = fdjpeg::DType::u8;
  else if (dt.is(py::dtype::of<float>()))
    v.dtype = fdjpeg::DType::f32;
  else if (dt.is(py::dtype::of<double>()))
    v.dtype = fdjpeg::DType::f64;
  else
    throw py::type_error(std::string(name) + " must hold uint8, float32 or float64 samples, got " +
                         py::str(static_cast<py::object>(dt)).cast<std::string>());
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
E enum_arg(int value, int count, const char* name) {
  if (value < 0 || value >= count)
    throw py::value_error(std::string("unknown ") + name + " code " + std::to_string(value));
  return static_cast<E>(value);
}

using FloatTables = py::array_t<float, py::array::c_style | py::array::forcecast>;
using IndexMap = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

void quantize(const py::array& in, py::array& out, const FloatTables& quant,
              const FloatTables& dequant, int color, int subsampling, bool level_shift, int passes,
              const std::optional<IndexMap>& block_tables, int threads) {
  fdjpeg::BatchView src = batch_view(in, "input");
  fdjpeg::BatchView dst = batch_view(out, "output");
  if (!out.writeable()) throw py::value_error("output array is read-only");
  if (quant.ndim() != 2 || quant.shape(1) != 192 || dequant.ndim() != 2 ||
      dequant.shape(0) != quant.shape(0) || dequant.shape(1) != 192)
    throw py::value_error("tables must be K x 192 arrays (K sets of 3 components x 64 steps)");
  fdjpeg::QuantSpec spec;
  spec.color = enum_arg<fdjpeg::Color>(color, 2, "color");
  spec.subsampling = enum_arg<fdjpeg::Subsampling>(subsampling, 3, "subsampling");
  spec.level_shift = level_shift;
  spec.passes = passes;
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
  std::string error;
  {
    py::gil_scoped_release release;
    error = fdjpeg::quantize(src, dst, spec, threads);
  }
  if (!error.empty()) throw py::value_error(error);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fdjpeg native core: block quantization pipelines over strided image batches";
  m.def("quantize", &quantize, py::arg("input"), py::arg("output"), py::arg("quant"),
        py::arg("dequant"), py::arg("color"), py::arg("subsampling"), py::arg("level_shift"),
        py::arg("passes"), py::arg("block_tables") = py::none(), py::arg("threads") = 0,
        "Run the pipeline from `input` into `output` (both N x H x W x C, any strides).");
  m.def(
      "padded_blocks",
      [](int64_t height, int64_t width, int subsampling, bool subsampled) {
        int64_t rows = 0, cols = 0;
        fdjpeg::padded_blocks(height, width,
                              enum_arg<fdjpeg::Subsampling>(subsampling, 3, "subsampling"),
                              subsampled, &rows, &cols);
        return py::make_tuple(rows, cols);
      },
      py::arg("height"), py::arg("width"), py::arg("subsampling"), py::arg("subsampled"),
      "Size of the padded luma plane in 8x8 blocks (the shape of a block table map).");
  m.def("isa", &fdjpeg::detail::active_isa, "Instruction set of the kernels in use.");
  m.def("_force_baseline", &fdjpeg::detail::set_force_baseline, py::arg("force"),
        "Use the portable kernels whatever the CPU (for testing).");
}
