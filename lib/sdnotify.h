/*
 * sdnotify.h: systemd's service notification protocol (sd_notify(3)) for
 * Type=notify units, without libsystemd. The protocol is one datagram: the
 * service manager puts the address of an AF_UNIX datagram socket in
 * $NOTIFY_SOCKET, and the daemon sends newline-separated assignments to it:
 *
 *   READY=1      start-up is over and the daemon serves (systemd then starts
 *                the units ordered after it, `systemctl start` returns)
 *   RELOADING=1  re-reading configuration; READY=1 again when done
 *   STOPPING=1   an orderly stop has begun
 *   STATUS=text  one line shown by `systemctl status`
 *
 * The address is a path ("/run/systemd/notify") or, with a leading '@', a
 * name in the abstract namespace (sun_path[0] = '\0', the rest of the name
 * without a terminating NUL, its length in the address length).
 *
 * Not run by systemd (no $NOTIFY_SOCKET): nothing is sent, LY_OK. The
 * variable is left in the environment: children started later are not
 * ours to speak for, but the daemons start none.
 * Errors are for a log line only: a daemon keeps running when its
 * notification fails (systemd then times the start-up out, as it should).
 */
#ifndef LANYARD_SDNOTIFY_H
#define LANYARD_SDNOTIFY_H

#include "error.h"

/*
 * Sends `state` (e.g. "READY=1\nSTATUS=serving") to the socket $NOTIFY_SOCKET
 * names; LY_OK without sending when it is unset or empty. See
 * ly_sd_notify_to for the errors.
 */
ly_status ly_sd_notify(const char *state, struct ly_error *err) LY_MUST_CHECK;

/*
 * Sends `state` to `address` ('/'-path or '@'-abstract name). LY_E_INVALID
 * for another form of address (systemd's vsock: addresses are not
 * supported) or an empty state, LY_E_LIMIT for an address longer than
 * sun_path, LY_E_IO when socket or sendto fail (the message names the
 * address and errno's text).
 */
ly_status ly_sd_notify_to(const char *address, const char *state, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_SDNOTIFY_H */
