# Sourced by the ci/ and experiments/ scripts: the environment a build and a run need on these machines.
# The CUDA toolkit (with NCCL and cuBLAS) lives at /usr/local/cuda; meson finds nvcc on PATH.
if [ -x /usr/local/cuda/bin/nvcc ]; then
    case ":$PATH:" in *:/usr/local/cuda/bin:*) ;; *) export PATH=/usr/local/cuda/bin:$PATH ;; esac
fi
# Open MPI refuses root unless told; tests also start more ranks than cores (bench adds --oversubscribe
# itself when it launches, these cover a bare mpirun in a test).
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1
EPB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
EPB_BUILD=${EPB_BUILD:-$EPB_ROOT/build}
export EPB_ROOT EPB_BUILD
