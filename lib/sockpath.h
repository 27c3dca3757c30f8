/*
 * sockpath.h: the filesystem side of a Unix socket a daemon listens on,
 * made ready before bind.
 *
 * A private socket (the server's admin socket; rpc/'s Unix listener) is
 * guarded by its directory, not by its own mode: the directory is created
 * 0700 before the socket exists, so no other user can connect between
 * bind and any chmod, and an existing directory is used only when it is
 * ours with no group or other access. The agent's Workload API socket is
 * public and keeps its own directory rule (agent/wapi.c), but replaces a
 * stale socket the same way.
 *
 * Paths are borrowed for the call; nothing is kept. The checks are
 * lstat-based: whoever may write to a parent directory could still swap
 * the directory between the check and bind, so a socket path belongs under
 * parents only root or the daemon's own user may write.
 */
#ifndef LANYARD_SOCKPATH_H
#define LANYARD_SOCKPATH_H

#include "error.h"

/*
 * Readies `path` for a private socket: its parents are created 0755 (less
 * the umask) when missing, its directory 0700; the directory must then be
 * a directory (not a link) owned by our effective uid with no group or
 * other permission bits; a socket left at `path` by an earlier run is
 * removed (ly_sockpath_replace_stale). The path must first pass
 * ly_config_check_socket_path (config.h: absolute, inside a directory,
 * within sockaddr_un; LY_E_INVALID or LY_E_LIMIT). LY_E_INVALID for a
 * directory we may not trust, LY_E_IO when the system refuses. Error
 * messages name the path or directory; the caller adds what the socket is
 * for.
 */
ly_status ly_sockpath_private_prepare(const char *path, struct ly_error *err) LY_MUST_CHECK;

/*
 * Removes a socket left at `path` by an earlier run. Nothing there is
 * fine; anything but a socket (a file, a directory, a link) is refused
 * with LY_E_INVALID and left in place: it is not ours to delete.
 */
ly_status ly_sockpath_replace_stale(const char *path, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_SOCKPATH_H */
