"""Build of axis_steer's compiled parts.

Three pieces:

* ``axs_core`` - the framework-free C core (``csrc/core``), a static library
  linked into both extensions below.
* ``axis_steer._C`` - the CPython + NumPy module over the core. Always built.
* ``axis_steer._ops`` - the torch operators (``csrc/torch``). Built when torch
  is importable at build time, which needs ``pip install --no-build-isolation``
  so that the build sees the torch already installed (an isolated build would
  try to download one). Its CUDA kernels are built when torch is a CUDA build
  and ``nvcc`` is found; otherwise the operators are CPU-only and the build
  says so.

Build knobs (environment variables):

* ``AXIS_STEER_CUDA_ARCHS``   - CUDA architectures, ``"80;90"`` by default.
* ``AXIS_STEER_NO_CUDA=1``    - build CPU-only even where CUDA is available.
* ``AXIS_STEER_NO_TORCH=1``   - skip the torch operators even if torch imports.
* ``AXIS_STEER_NO_OPENMP=1``  - build the core single-threaded.
* ``AXIS_STEER_DEBUG=1``      - ``-O0 -g`` instead of ``-O3``.
"""

import os
import shutil
import sys

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def env_flag(name):
    return os.environ.get(name, "") not in ("", "0", "false", "False")


DEBUG = env_flag("AXIS_STEER_DEBUG")
OPENMP = not env_flag("AXIS_STEER_NO_OPENMP") and sys.platform.startswith("linux")
OPT = ["-O0", "-g"] if DEBUG else ["-O3"]
# No fast-math anywhere: NaN and Inf must behave as documented. No FMA
# contraction either, so every build computes the same bits.
COMMON = OPT + ["-Wall", "-Wextra", "-ffp-contract=off", "-fno-fast-math"]
OMP = ["-fopenmp"] if OPENMP else []
CORE_SOURCES = ["csrc/core/validate.c", "csrc/core/programs.c", "csrc/core/cpu.c"]
CORE_LIB = (
    "axs_core",
    {"sources": CORE_SOURCES, "cflags": ["-std=c11", "-fPIC", *COMMON, *OMP]},
)


class BuildExt(build_ext):
    """Builds the core library first (editable installs skip build_clib)."""

    def run(self):
        if self.distribution.has_c_libraries():
            self.run_command("build_clib")
        super().run()


numpy_module = Extension(
    "axis_steer._C",
    sources=["csrc/python/module.c"],
    include_dirs=[numpy.get_include(), os.path.join(HERE, "csrc")],
    extra_compile_args=["-std=c11", *COMMON, *OMP],
    extra_link_args=OMP,
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_21_API_VERSION")],
)


def torch_modules():
    """The torch extension, or [] with a message when it cannot be built."""
    if env_flag("AXIS_STEER_NO_TORCH"):
        print("axis_steer: AXIS_STEER_NO_TORCH set; building without the torch operators")
        return [], None
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print(
            "axis_steer: torch is not importable in the build environment; building the "
            "NumPy module only. To get the torch operators, install torch first and build "
            "with `pip install --no-build-isolation .`"
        )
        return [], None
    sources = ["csrc/torch/ops.cpp"]
    # torch's headers as system headers, so -Wall -Wextra speak of our code only;
    # the C++ standard is left to torch (C++17 or C++20 depending on its version)
    system_includes = [f"-isystem{p}" for p in cpp_extension.include_paths()]
    cxx = [*COMMON, *OMP, *system_includes]
    macros = []
    want_cuda = not env_flag("AXIS_STEER_NO_CUDA")
    nvcc = shutil.which("nvcc") or (
        os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc") if cpp_extension.CUDA_HOME else None
    )
    has_cuda = want_cuda and torch.version.cuda is not None and nvcc and os.path.exists(nvcc)
    if not has_cuda:
        why = (
            "AXIS_STEER_NO_CUDA is set"
            if not want_cuda
            else "torch is a CPU build"
            if torch.version.cuda is None
            else "nvcc was not found"
        )
        print(f"axis_steer: building the torch operators for CPU only ({why})")
        ext = cpp_extension.CppExtension(
            "axis_steer._ops",
            sources,
            include_dirs=[os.path.join(HERE, "csrc")],
            extra_compile_args={"cxx": cxx},
            extra_link_args=OMP,
        )
        return [ext], cpp_extension.BuildExtension
    archs = os.environ.get("AXIS_STEER_CUDA_ARCHS", "80;90").replace(",", ";").split(";")
    gencode = []
    for arch in filter(None, (a.strip() for a in archs)):
        gencode += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    print(f"axis_steer: building the torch operators with CUDA for sm_{', sm_'.join(archs)}")
    macros.append(("AXS_WITH_CUDA", "1"))
    ext = cpp_extension.CUDAExtension(
        "axis_steer._ops",
        sources + ["csrc/torch/ops_cuda.cpp", "csrc/core/cuda.cu"],
        include_dirs=[os.path.join(HERE, "csrc")],
        define_macros=macros,
        extra_compile_args={
            "cxx": cxx + ["-DAXS_WITH_CUDA=1"],
            "nvcc": ["-O3", "--fmad=false", *gencode],
        },
        extra_link_args=OMP,
    )
    return [ext], cpp_extension.BuildExtension


torch_exts, torch_build_ext = torch_modules()

if torch_build_ext is not None:

    class BuildExtWithTorch(torch_build_ext):
        """torch's builder for the operators; the plain C compiler for the
        NumPy module (torch's would compile module.c as C++)."""

        def run(self):
            if self.distribution.has_c_libraries():
                self.run_command("build_clib")
            super().run()

        def build_extension(self, ext):
            if ext.name != numpy_module.name:
                return super().build_extension(ext)
            patched = {k: self.compiler.__dict__.pop(k) for k in ("compile", "_compile") if k in self.compiler.__dict__}
            try:
                return build_ext.build_extension(self, ext)
            finally:
                self.compiler.__dict__.update(patched)

    cmdclass = {"build_ext": BuildExtWithTorch}
else:
    cmdclass = {"build_ext": BuildExt}

setup(
    ext_modules=[numpy_module, *torch_exts],
    libraries=[CORE_LIB],
    cmdclass=cmdclass,
)
