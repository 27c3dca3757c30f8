/*
 * rlimit.h: process limits the daemons set for themselves at start-up.
 *
 * Open files: every Workload API connection costs the agent 3 descriptors
 * (the socket, its pidfd, gRPC's wakeup), every agent connection costs the
 * server one or two, and the common soft limit of 1024 would let ~330 idle
 * local connections starve everyone else (docs/security.md, "Attacks").
 * The soft limit is raised to the hard limit the operator allows, never
 * beyond it (no privilege is used; systemd's LimitNOFILE or the container
 * runtime set the hard limit).
 */
#ifndef LANYARD_RLIMIT_H
#define LANYARD_RLIMIT_H

#include <stdint.h>

#include "error.h"

/*
 * Raises RLIMIT_NOFILE's soft limit to its hard limit (capped at
 * `at_most` when that is not 0). *now (may be NULL) gets the soft limit in
 * force afterwards. LY_E_IO when getrlimit/setrlimit refuse.
 */
ly_status ly_rlimit_raise_nofile(uint64_t at_most, uint64_t *now, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_RLIMIT_H */
