"""Build the Cython example against an installed gn_native:

    python setup.py build_ext --inplace
    python -c "import gn_example, numpy as np; print(gn_example.group_norm_f32(np.ones((2, 4)), 2))"

Everything it needs from gn_native: the Cython declarations (gn_native/capi.pxd,
found next to the package), the C header (get_include()) and the library
(get_lib_dir(), also set as the run-time search path).
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

import gn_native

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(gn_native.__file__)))

ext = Extension(
    "gn_example",
    [os.path.join(HERE, "gn_example.pyx")],
    include_dirs=[gn_native.get_include()],
    library_dirs=[gn_native.get_lib_dir()],
    runtime_library_dirs=[gn_native.get_lib_dir()],
    libraries=["gn_native"],
    # group_norm_each_f32 calls the core from a prange team (GCC/Clang flags)
    extra_compile_args=["-fopenmp"],
    extra_link_args=["-fopenmp"],
)

setup(
    name="gn_example",
    ext_modules=cythonize([ext], include_path=[PACKAGE_PARENT],
                          compiler_directives={"language_level": 3}),
    zip_safe=False,
)
