/*
 * sdnotify.c: sd_notify(3)'s datagram, see sdnotify.h.
 */
#include "sdnotify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

ly_status
ly_sd_notify(const char *state, struct ly_error *err)
{
	const char *address = getenv("NOTIFY_SOCKET");

	if (address == NULL || address[0] == '\0')
		return LY_OK;
	return ly_sd_notify_to(address, state, err);
}

ly_status
ly_sd_notify_to(const char *address, const char *state, struct ly_error *err)
{
	struct sockaddr_un sa;
	socklen_t sa_len;
	size_t len;
	ly_status rc = LY_OK;
	int fd = -1;

	if (state == NULL || state[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "sd_notify: empty state");
	if (address[0] != '/' && address[0] != '@')
		return ly_error_set(err, LY_E_INVALID, "sd_notify: NOTIFY_SOCKET \"%.64s\" is neither a path nor an "
		    "abstract name ('@')", address);
	len = strlen(address);
	/* A path needs its terminating NUL inside sun_path; an abstract name does not. */
	if (len > sizeof(sa.sun_path) - (address[0] == '/' ? 1 : 0))
		return ly_error_set(err, LY_E_LIMIT, "sd_notify: NOTIFY_SOCKET is %zu bytes, more than sun_path holds",
		    len);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, address, len);
	if (address[0] == '@')
		sa.sun_path[0] = '\0';
	sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (address[0] == '/' ? 1 : 0));

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = ly_error_set(err, LY_E_IO, "sd_notify: socket: %s", strerror(errno));
		goto out;
	}
	ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)&sa, sa_len);
	if (n < 0) {
		rc = ly_error_set(err, LY_E_IO, "sd_notify: sendto %s: %s", address, strerror(errno));
		goto out;
	}
	if ((size_t)n != strlen(state))
		rc = ly_error_set(err, LY_E_IO, "sd_notify: sendto %s: short datagram", address);
out:
	if (fd >= 0)
		(void)close(fd);
	return rc;
}
