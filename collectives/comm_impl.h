/* Private to collectives/: backend constructors and shared helpers. */
#ifndef EPB_COMM_IMPL_H
#define EPB_COMM_IMPL_H
#include "collectives.h"

int epb_comm_self_create(epb_comm_t **out, epb_err_t *err);
int epb_comm_mpi_create(epb_comm_t **out, epb_err_t *err);
int epb_runtime_mpi_active(void);
void epb_reduce_host(void *inout, const void *in, size_t n, epb_dtype_t dt, epb_redop_t op);

#endif
