"""`python -m gn_native --cflags --libs`: compiler and linker flags for C users.

    cc demo.c $(python -m gn_native --cflags --libs) -o demo

--libs links libgn_native (with an rpath to it, so the program runs without
LD_LIBRARY_PATH), the math library and POSIX threads.  --version prints the
version alone (the C core's gn_version(): GN_VERSION_STRING of gn_native.h,
which is also the package's metadata version); with no option the
configuration is printed.
"""
import argparse
import sys

import gn_native


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gn_native", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    ap.add_argument("--cflags", action="store_true", help="print the compiler flags")
    ap.add_argument("--libs", action="store_true", help="print the linker flags")
    ap.add_argument("--config", action="store_true", help="print the configuration")
    args = ap.parse_args(argv)
    if args.version:
        print(gn_native.__version__)
        return 0
    out = []
    if args.cflags:
        out.append(f"-I{gn_native.get_include()}")
    if args.libs:
        d = gn_native.get_lib_dir()
        # -lm and -pthread: what a C consumer of the library (examples/c/demo.c, the
        # README's `cc demo.c $(python -m gn_native --cflags --libs)`) needs besides it
        out.append(f"-L{d} -Wl,-rpath,{d} -lgn_native -lm -pthread")
    if out:
        print(" ".join(out))
    if args.config or not out:
        gn_native.show_config()
    return 0


if __name__ == "__main__":
    sys.exit(main())
