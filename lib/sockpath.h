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
 * Every directory from / down to the socket's is checked too
 * (ly_fsperm_dir_chain: root's or the daemon's, writable by no one else,
 * a sticky /tmp allowed above): whoever may write to a parent could swap
 * the directory between any check and bind, or squat it before the first
 * start. A client judges a socket with ly_sockpath_peer_check before it
 * sends or believes anything.
 *
 * Paths are borrowed for the call; nothing is kept.
 */
#ifndef LANYARD_SOCKPATH_H
#define LANYARD_SOCKPATH_H

#include <sys/types.h>

#include "error.h"

/*
 * Readies `path` for a private socket: its parents are created 0755 when
 * missing, its directory 0700; every directory on the way must pass
 * ly_fsperm_dir_chain for our effective uid (else LY_E_UNTRUSTED); the
 * socket's directory must then be a directory (not a link) owned by our
 * effective uid with no group or other permission bits (else
 * LY_E_INVALID); a socket left at `path` by an earlier run is removed
 * (ly_sockpath_replace_stale). The path must first pass
 * ly_config_check_socket_path (config.h: absolute, inside a directory,
 * within sockaddr_un; LY_E_INVALID or LY_E_LIMIT). LY_E_IO when the
 * system refuses. Error messages name the path or directory; the caller
 * adds what the socket is for.
 */
ly_status ly_sockpath_private_prepare(const char *path, struct ly_error *err) LY_MUST_CHECK;

/*
 * Removes a socket left at `path` by an earlier run. Nothing there is
 * fine; anything but a socket (a file, a directory, a link) is refused
 * with LY_E_INVALID and left in place: it is not ours to delete.
 */
ly_status ly_sockpath_replace_stale(const char *path, struct ly_error *err) LY_MUST_CHECK;

/*
 * Judges the daemon listening at `path` before a client talks to it
 * (docs/security.md, "Who a CLI talks to"). It connects a plain socket,
 * reads the listener's uid P with SO_PEERCRED, closes it, then requires:
 *   1. every directory from / to the socket's passes ly_fsperm_dir_chain
 *      for P (root's or P's, writable by no one else, a sticky /tmp
 *      allowed above the socket's directory), so nobody but root and P
 *      can put another socket at `path` afterwards;
 *   2. P is root, or our own effective uid, or the first directory on the
 *      way that is not root's sits in one that is root's and writable by
 *      root alone (root gave that directory to P: /run/lanyard/server
 *      made for a service user), which a user taking a name under /tmp
 *      first cannot arrange.
 * With fd_out (may be NULL), *fd_out is that very connection on LY_OK
 * (the caller's to close, or to hand to ly_rpc_channel_new_fd): nothing
 * is left to race. Without it the connection is closed, and a caller that
 * connects again by path relies on (1): only root or P can have changed
 * what is there meanwhile. *peer_uid (may be NULL) receives P.
 * LY_E_IO when nothing answers at `path` (the system's reason in the
 * message), LY_E_UNTRUSTED when a rule fails (one line naming the uid, the
 * directory and the rule), LY_E_INVALID or LY_E_LIMIT for a malformed path.
 */
ly_status ly_sockpath_peer_check(const char *path, uid_t *peer_uid, int *fd_out, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * The same rule without connecting, for a client that cannot hand gRPC a
 * connection of its own (lib/workload: its channel connects and
 * reconnects by path): U, the owner of the socket's directory, stands for
 * P. Rule (1) for U means only root or U can have bound the socket there,
 * so whoever listens holds a socket root or U made. *owner_uid (may be
 * NULL) receives U. LY_E_NOT_FOUND when the directory is absent (nothing
 * to talk to yet), LY_E_UNTRUSTED when a rule fails, LY_E_IO, LY_E_INVALID
 * or LY_E_LIMIT otherwise.
 */
ly_status ly_sockpath_owner_check(const char *path, uid_t *owner_uid, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_SOCKPATH_H */
