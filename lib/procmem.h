/*
 * procmem.h: this process's resident memory, as /proc/self/statm counts it.
 * The one reader behind the rpc memory guard (rpc/bridge.c) and the agent's
 * trim-after-a-burst debug line (agent/sync_base.c).
 *
 * No state, any thread; an open, a read and a close (a few µs).
 */
#ifndef LANYARD_PROCMEM_H
#define LANYARD_PROCMEM_H

#include <stdint.h>

/* Resident bytes of this process; 0 when /proc cannot say (not mounted). */
uint64_t ly_procmem_rss_bytes(void);

#endif /* LANYARD_PROCMEM_H */
