"""The CUDA kernel's instruction budget and occupancy, read from its SASS (no GPU needed).

    python bench/cuda_budget.py [--size 1024] [--arch 90 80] [--keep DIR]

Compiles cuda/fdjpeg_cuda.cu with the flags of cuda/CMakeLists.txt plus -DFDJPEG_BUDGET, which
puts a marker instruction (NANOSLEEP k) at the head of the body of each phase's hot loop: 1 load
and colour conversion, 4 the chroma ring, 2 the block transforms (5 the chroma blocks where they
have a loop of their own), 3 upsampling, colour and the stores (k + 16 ends a body that may be
no loop of its own); 0 marks the variants of a loop
for lanes at the image's edges or layouts without vector access, not measured. For each
instantiation it disassembles the kernel (cuobjdump), finds the innermost loop around each marker
(a backward branch) and counts its instructions per pass through the body. A host build of the
same file runs the same tile code (the kernel's host emulation) over a --size x --size image and
counts how often each body runs. Thread instructions per output pixel of a phase are then

    (instructions of its loop body per pass) x (passes over all threads) / output pixels

Instructions outside the loops (tile set-up, the table copy, barriers) are left out; the last
column is the kernel's whole static size. A branch inside a loop body counts both of its sides. Occupancy: CTAs per SM that registers (cuobjdump -res-usage) and the
plan's dynamic shared memory allow, with the limits of sm_80 (A100) and sm_90 (H100/H200).

The markers are volatile, so the budget build schedules a little differently from the real one;
the counts are for the real source with those barriers to code motion.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "-std=c++17",
    "-O3",
    "--fmad=false",
    "-prec-div=true",
    "-Xcompiler=-ffp-contract=off",
]

# (label, dtype, color, subsampling, level shift): the calls the targets are stated for.
CASES = [
    ("FD", "u8", 0, 0, False),
    ("jpeg 4:4:4", "u8", 1, 0, True),
    ("jpeg 4:2:2", "u8", 1, 1, True),
    ("jpeg 4:2:0", "u8", 1, 2, True),
    ("FD", "f32", 0, 0, False),
    ("jpeg 4:4:4", "f32", 1, 0, True),
    ("jpeg 4:2:0", "f32", 1, 2, True),
]
PHASES = {
    1: "load",
    4: "ring",
    2: "transform",
    5: "transform",
    3: "store",
}  # 5: chroma blocks
# The kernel's Kind<components, YCbCr, HF, VF> for 3-channel images, by (color, subsampling).
KINDS = {
    (0, 0): "3, false, 1, 1",
    (1, 0): "3, true, 1, 1",
    (1, 1): "3, true, 2, 1",
    (1, 2): "3, true, 2, 2",
}

# Per-SM limits: registers, threads, CTAs, shared memory per SM and per CTA (opt-in), and the
# shared memory the runtime reserves per CTA.
LIMITS = {
    80: {
        "regs": 65536,
        "threads": 2048,
        "ctas": 32,
        "smem": 167936,
        "smem_cta": 166912,
        "reserved": 1024,
    },
    90: {
        "regs": 65536,
        "threads": 2048,
        "ctas": 32,
        "smem": 233472,
        "smem_cta": 232448,
        "reserved": 1024,
    },
}

HOST_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "fdjpeg_cuda.hpp"
namespace fdjpeg { namespace cuda {
extern long long budget_hits[BUDGET_MARKS];
Result budget_plan(const BatchView&, const BatchView&, const QuantSpec&, size_t*, int64_t*);
}}
using namespace fdjpeg;
template <class T> void run(int h, int w, int color, int sub, int shift) {
  std::vector<T> in(size_t(h) * w * 3), out(in.size());
  unsigned s = 12345;
  for (auto& v : in) { s = s * 1103515245u + 12345u; v = T((s >> 16) % 256) / (sizeof(T) == 1 ? T(1) : T(255)); }
  std::vector<float> q(192, 16.f);
  BatchView a, b;
  a.data = in.data(); b.data = out.data();
  a.dtype = b.dtype = sizeof(T) == 1 ? DType::u8 : DType::f32;
  // N x 3 x H x W (torch's default layout), seen as N, H, W, C
  const int64_t shape[4] = {1, h, w, 3}, stride[4] = {int64_t(h) * w * 3, w, 1, int64_t(h) * w};
  for (int d = 0; d < 4; ++d) { a.shape[d] = b.shape[d] = shape[d]; a.stride[d] = b.stride[d] = stride[d]; }
  QuantSpec spec;
  spec.color = Color(color); spec.subsampling = Subsampling(sub); spec.level_shift = shift;
  spec.quant = spec.dequant = q.data();
  size_t smem = 0; int64_t tiles = 0;
  Result r = cuda::budget_plan(a, b, spec, &smem, &tiles);
  if (r.ok()) r = cuda::emulate_on_host(a, b, spec EMULATION_ORDER);
  if (!r.ok()) { std::fprintf(stderr, "%s\n", r.message.c_str()); std::exit(1); }
  std::printf("%zu %lld", smem, (long long)tiles);
  for (int k = 1; k < 8; ++k) std::printf(" %lld", k < BUDGET_MARKS ? cuda::budget_hits[k] : 0);
  std::printf("\n");
}
int main(int argc, char** argv) {
  const int h = std::atoi(argv[2]), w = std::atoi(argv[3]), color = std::atoi(argv[4]),
            sub = std::atoi(argv[5]), shift = std::atoi(argv[6]);
  if (argv[1][0] == 'u') run<unsigned char>(h, w, color, sub, shift); else run<float>(h, w, color, sub, shift);
}
"""


def tool(name: str) -> str:
    """A CUDA binary: on PATH, in /usr/local/cuda/bin, or from the nvidia-cuda-* wheels."""
    found = shutil.which(name) or (
        f"/usr/local/cuda/bin/{name}"
        if os.path.exists(f"/usr/local/cuda/bin/{name}")
        else None
    )
    if found:
        return found
    try:
        import nvidia  # type: ignore[import-not-found]

        for base in nvidia.__path__:
            for path in Path(base).glob(f"*/bin/{name}"):
                return str(path)
    except ImportError:
        pass
    sys.exit(
        f"{name} not found: install it with `pip install nvidia-cuda-{name}` or put the CUDA toolkit's bin on PATH"
    )


def sh(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)}\n{done.stdout}{done.stderr}")
    return done.stdout


def demangle(names: list[str]) -> dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt:
        return {n: n for n in names}
    out = subprocess.run(
        [cxxfilt], input="\n".join(names), capture_output=True, text=True, check=False
    ).stdout.split("\n")
    return dict(zip(names, out))


INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")


def parse_sass(text: str) -> dict[str, list[tuple[int, str]]]:
    """Kernel name -> [(address, instruction text)], NOPs left out."""
    kernels: dict[str, list[tuple[int, str]]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            current = kernels.setdefault(m.group(1), [])
            continue
        m = INSTR.search(line)
        if m and current is not None:
            ins = m.group(2).strip()
            if not re.match(r"(@!?U?P\w+\s+)?NOP\b", ins):
                current.append((int(m.group(1), 16), ins))
    return kernels


def marker_id(ins: str) -> int:
    """k of a marker NANOSLEEP k (0 shows as RZ: loops not measured)."""
    arg = re.match(r"NANOSLEEP\s+(\S+)", ins).group(1)
    return 0 if arg == "RZ" else int(arg, 0)


def loop_costs(code: list[tuple[int, str]]) -> dict[int, float]:
    """Marker k -> instructions per pass through the loop body it heads. A loop the compiler
    unrolled (its trip count is bounded by the tile) shows the marker once per copy: the cost is
    then the distance between consecutive copies; else the innermost loop (a backward branch)
    around the marker is the body. A body that is no loop of its own (at most one pass per
    thread: the innermost loop around it holds other phases' markers) ends with an end marker
    NANOSLEEP k + 16: its cost is the instructions between the two markers."""
    loops = []
    for addr, ins in code:
        m = re.search(r"\bBRA\b.*?(0x[0-9a-f]+)", ins)
        if m and int(m.group(1), 16) <= addr:
            loops.append((int(m.group(1), 16), addr))
    heads = [
        (a, marker_id(i))
        for a, i in code
        if i.startswith("NANOSLEEP") and 0 < marker_id(i) < 16
    ]
    costs: dict[int, float] = {}
    for addr, ins in code:
        if not ins.startswith("NANOSLEEP"):
            continue
        k = marker_id(ins)
        if k in costs or k == 0 or k >= 16:
            continue
        around = [(lo, hi) for lo, hi in loops if lo <= addr <= hi]
        own = [
            (lo, hi)
            for lo, hi in around
            if all(j == k for a, j in heads if lo <= a <= hi)
        ]
        if not own:
            spans = []
            start = None
            for a, i in code:
                if i.startswith("NANOSLEEP") and marker_id(i) == k:
                    start, n = a, 0
                elif i.startswith("NANOSLEEP") and marker_id(i) == k + 16 and start is not None:
                    spans.append(n)
                    start = None
                elif start is not None and not i.startswith("NANOSLEEP"):
                    n += 1
            if spans:
                costs[k] = sum(spans) / len(spans)
            continue
        lo, hi = min(own, key=lambda r: r[1] - r[0])
        body = [(a, i) for a, i in code if lo <= a <= hi]
        copies = [
            n
            for n, (a, i) in enumerate(body)
            if i.startswith("NANOSLEEP") and marker_id(i) == k
        ]
        if len(copies) > 1:
            span = body[copies[0] : copies[-1]]
            costs[k] = sum(not i.startswith("NANOSLEEP") for _, i in span) / (
                len(copies) - 1
            )
        else:
            costs[k] = sum(not i.startswith("NANOSLEEP") for _, i in body)
    return costs


def resources(text: str) -> dict[str, tuple[int, int]]:
    """Kernel name -> (registers, static shared bytes)."""
    out = {}
    for m in re.finditer(r"Function (\S+):\s*\n?\s*REG:(\d+).*?SHARED:(\d+)", text):
        out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


def ctas_per_sm(arch: int, regs: int, smem: int, threads: int) -> tuple[int, str]:
    """CTAs per SM; smem: the CTA's shared memory, the runtime's reserved 1 KB included."""
    lim = LIMITS[arch]
    warps = (threads + 31) // 32
    regs_per_warp = ((regs * 32 + 255) // 256) * 256
    by_regs = lim["regs"] // (regs_per_warp * warps)
    by_smem = lim["smem"] // smem if smem - lim["reserved"] <= lim["smem_cta"] else 0
    by_threads = lim["threads"] // threads
    n = min(by_regs, by_smem, by_threads, lim["ctas"])
    limiter = {by_regs: "registers", by_smem: "shared memory", by_threads: "threads"}[
        min(by_regs, by_smem, by_threads)
    ]
    return n, limiter


def kernel_for(
    names: dict[str, str], dtype: str, color: int, sub: int, shift: bool
) -> str:
    """The kernel a call launches: pipeline_kernel<T> (one per sample type), or
    pipeline_kernel<T, Kind<...>> where the kernel is also a template on the kind of image."""
    ctype = "unsigned char" if dtype == "u8" else "float"
    ours = [m for m, d in names.items() if "pipeline_kernel<" in d and f"<{ctype}" in d]
    kinded = [m for m in ours if "Kind<" in names[m]]
    if kinded:
        kind = f"Kind<{KINDS[color, sub]}"
        ours = [
            m
            for m in kinded
            if re.search(rf"{kind}(, {'true' if shift else 'false'})?>", names[m])
        ]
    if len(ours) != 1:
        sys.exit(
            f"cannot tell the kernel of {dtype} color {color} subsampling {sub} among {[names[m] for m in ours]}"
        )
    return ours[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--size",
        type=int,
        default=1024,
        help="image side for the trip counts (default 1024)",
    )
    ap.add_argument("--arch", type=int, nargs="+", default=[90, 80])
    ap.add_argument("--keep", help="keep the build products in this folder")
    ap.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="the source tree to measure (e.g. a worktree of an older commit)",
    )
    args = ap.parse_args()
    nvcc, cuobjdump = tool("nvcc"), tool("cuobjdump")
    # cuobjdump -sass runs nvdisasm (nvidia-cuda-nvdisasm), found through PATH.
    os.environ["PATH"] = (
        os.path.dirname(tool("nvdisasm")) + os.pathsep + os.environ["PATH"]
    )
    work = Path(args.keep or tempfile.mkdtemp(prefix="fdjpeg-budget-"))
    work.mkdir(parents=True, exist_ok=True)
    root = args.root.resolve()
    src = root / "cuda" / "fdjpeg_cuda.cu"
    inc = ["-I", str(root / "csrc"), "-I", str(root / "cuda"), "-DFDJPEG_BUDGET"]
    # Older trees: fewer marker slots, emulate_on_host() without an order argument.
    marks = re.search(r"budget_hits\[(\d+)\]", src.read_text()).group(1)
    order = (
        ", cuda::EmulationOrder{}"
        if "EmulationOrder" in (root / "cuda" / "fdjpeg_cuda.hpp").read_text()
        else ""
    )

    (work / "main.cu").write_text(
        HOST_MAIN.replace("BUDGET_MARKS", marks).replace(" EMULATION_ORDER", order)
    )
    host = work / "budget_host"
    sh(
        [
            nvcc,
            *FLAGS,
            *inc,
            "-gencode",
            "arch=compute_90,code=compute_90",
            str(src),
            str(root / "csrc" / "spec.cpp"),
            str(work / "main.cu"),
            "-o",
            str(host),
        ]
    )

    sass: dict[int, dict[str, list]] = {}
    res: dict[int, dict[str, tuple[int, int]]] = {}
    names: dict[str, str] = {}
    for arch in args.arch:
        cubin = work / f"kernel_sm{arch}.cubin"
        sh(
            [
                nvcc,
                *FLAGS,
                *inc,
                "-cubin",
                f"-arch=sm_{arch}",
                str(src),
                "-o",
                str(cubin),
            ]
        )
        text = sh([cuobjdump, "-sass", str(cubin)])
        (work / f"kernel_sm{arch}.sass").write_text(text)
        sass[arch] = parse_sass(text)
        res[arch] = resources(sh([cuobjdump, "-res-usage", str(cubin)]))
        names.update(demangle(list(sass[arch])))

    threads = 256
    print(
        f"image {args.size} x {args.size} x 3, CTAs of {threads} threads; thread instructions per output pixel"
    )
    head = (
        f"{'case':<12}{'dtype':<6}{'arch':>5}{'load':>7}{'ring':>7}{'transf':>7}{'store':>7}{'total':>7}"
        f"{'regs':>6}{'smem B':>8}  CTAs/SM (limit)   kernel instrs"
    )
    print(head)
    for label, dtype, color, sub, shift in CASES:
        out = sh(
            [
                str(host),
                dtype,
                str(args.size),
                str(args.size),
                str(color),
                str(sub),
                str(int(shift)),
            ]
        ).split()
        smem, _tiles, *hits = (int(v) for v in out)
        pixels = args.size * args.size
        for arch in args.arch:
            k = kernel_for(names, dtype, color, sub, shift)
            code = sass[arch][k]
            costs = loop_costs(code)
            # a phase without hits (no ring) costs nothing; one with hits but no marker is unknown
            per = {
                p: (costs.get(p, float("nan")) * hits[p - 1] if hits[p - 1] else 0.0)
                / pixels
                for p in PHASES
            }
            regs, static = res[arch].get(k, (0, 0))
            # cuobjdump counts the runtime's reserved 1 KB as static shared memory on sm_90.
            cta_smem = smem + max(static, LIMITS[arch]["reserved"])
            n, limiter = ctas_per_sm(arch, regs, cta_smem, threads)
            print(
                f"{label:<12}{dtype:<6}{arch:>5}{per[1]:>7.1f}{per[4]:>7.1f}{per[2] + per[5]:>7.1f}{per[3]:>7.1f}"
                f"{sum(per.values()):>7.1f}"
                f"{regs:>6}{cta_smem:>8}  {n} ({limiter}){'':<6}{len(code)}"
            )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
