/*
 * shared.c: the shared library's own translation unit (CMake wants one;
 * everything else comes whole from lanyard_workload_internal): an ident
 * string, so `strings liblanyard-workload.so` tells its version.
 */
#include "lanyard/workload.h"

__attribute__((used)) static const char wl_ident[] = "@(#)liblanyard-workload " LANYARD_WORKLOAD_VERSION;
