#!/usr/bin/env bash
# Installs Debian's OpenMPI (runtime + headers) and libclang (bindgen for the `mpi` crate).
# Idempotent: does nothing when everything is already there.
set -euo pipefail
need=()
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
[ -e /usr/include/x86_64-linux-gnu/openmpi/mpi.h ] || [ -e /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h ] || need+=(libopenmpi-dev)
# bindgen needs libclang itself (libclang-cpp, which other packages pull in, is not enough).
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null || compgen -G '/usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so*' >/dev/null || need+=(libclang-dev)
"$(dirname "$0")/apt-install.sh" install-mpi "${need[@]}"
mpirun --version | head -1
