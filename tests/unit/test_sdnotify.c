/*
 * test_sdnotify.c: lib/sdnotify.h against datagram sockets of our own, the
 * way systemd listens: a path socket, an abstract one ('@'), the address
 * taken from $NOTIFY_SOCKET, and every refusal (relative or vsock address,
 * one byte past sun_path, no listener, empty state).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib/sdnotify.h"

struct listener {
	char dir[64];
	char address[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
	int fd;
};

/* A datagram socket at a path ("/tmp/.../notify") or an abstract name ("@..."). */
static void
listen_at(struct listener *l, bool abstract)
{
	struct sockaddr_un sa;
	socklen_t len;

	memset(l, 0, sizeof(*l));
	l->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(l->fd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (abstract) {
		(void)snprintf(l->address, sizeof(l->address), "@lanyard-test-sdnotify-%ld-%d", (long)getpid(), rand());
		memcpy(sa.sun_path, l->address, strlen(l->address));
		sa.sun_path[0] = '\0';
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(l->address));
	} else {
		(void)snprintf(l->dir, sizeof(l->dir), "/tmp/lanyard-sdnotify.XXXXXX");
		assert_non_null(mkdtemp(l->dir));
		(void)snprintf(l->address, sizeof(l->address), "%s/notify", l->dir);
		memcpy(sa.sun_path, l->address, strlen(l->address) + 1);
		len = (socklen_t)sizeof(sa);
	}
	assert_int_equal(bind(l->fd, (struct sockaddr *)&sa, len), 0);
}

static void
listener_close(struct listener *l)
{
	(void)close(l->fd);
	if (l->dir[0] != '\0') {
		(void)unlink(l->address);
		(void)rmdir(l->dir);
	}
}

/* The next datagram, or "" when none is waiting. */
static void
receive(struct listener *l, char *buf, size_t size)
{
	ssize_t n = recv(l->fd, buf, size - 1, MSG_DONTWAIT);
	if (n < 0) {
		assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
		n = 0;
	}
	buf[n] = '\0';
}

static void
test_path(void **state)
{
	(void)state;
	struct listener l;
	char got[256];

	listen_at(&l, false);
	assert_int_equal(ly_sd_notify_to(l.address, "READY=1\nSTATUS=serving", NULL), LY_OK);
	receive(&l, got, sizeof(got));
	assert_string_equal(got, "READY=1\nSTATUS=serving");
	assert_int_equal(ly_sd_notify_to(l.address, "STOPPING=1", NULL), LY_OK);
	receive(&l, got, sizeof(got));
	assert_string_equal(got, "STOPPING=1");
	listener_close(&l);
}

static void
test_abstract(void **state)
{
	(void)state;
	struct listener l;
	char got[256];

	listen_at(&l, true);
	assert_int_equal(ly_sd_notify_to(l.address, "READY=1", NULL), LY_OK);
	receive(&l, got, sizeof(got));
	assert_string_equal(got, "READY=1");
	listener_close(&l);
}

static void
test_from_environment(void **state)
{
	(void)state;
	struct listener l;
	char got[256];

	listen_at(&l, true);
	assert_int_equal(setenv("NOTIFY_SOCKET", l.address, 1), 0);
	assert_int_equal(ly_sd_notify("READY=1", NULL), LY_OK);
	receive(&l, got, sizeof(got));
	assert_string_equal(got, "READY=1");
	/* Not under systemd: nothing sent, not an error. */
	assert_int_equal(unsetenv("NOTIFY_SOCKET"), 0);
	assert_int_equal(ly_sd_notify("READY=1", NULL), LY_OK);
	assert_int_equal(setenv("NOTIFY_SOCKET", "", 1), 0);
	assert_int_equal(ly_sd_notify("READY=1", NULL), LY_OK);
	receive(&l, got, sizeof(got));
	assert_string_equal(got, "");
	assert_int_equal(unsetenv("NOTIFY_SOCKET"), 0);
	listener_close(&l);
}

static void
test_refused(void **state)
{
	(void)state;
	struct ly_error e;
	char addr[sizeof(((struct sockaddr_un *)0)->sun_path) + 2];

	assert_int_equal(ly_sd_notify_to("run/notify", "READY=1", &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "neither a path nor an abstract name"));
	assert_int_equal(ly_sd_notify_to("vsock:2:1234", "READY=1", &e), LY_E_INVALID);
	assert_int_equal(ly_sd_notify_to("", "READY=1", &e), LY_E_INVALID);
	assert_int_equal(ly_sd_notify_to("/tmp/x", "", &e), LY_E_INVALID);

	/* A path of sizeof(sun_path) bytes leaves no room for its NUL: refused. */
	memset(addr, 'a', sizeof(addr));
	addr[0] = '/';
	addr[sizeof(((struct sockaddr_un *)0)->sun_path)] = '\0';
	assert_int_equal(ly_sd_notify_to(addr, "READY=1", &e), LY_E_LIMIT);
	/* An abstract name of that length fits (no NUL), a byte more does not. */
	addr[0] = '@';
	assert_int_not_equal(ly_sd_notify_to(addr, "READY=1", &e), LY_E_LIMIT);
	addr[sizeof(((struct sockaddr_un *)0)->sun_path)] = 'a';
	addr[sizeof(((struct sockaddr_un *)0)->sun_path) + 1] = '\0';
	assert_int_equal(ly_sd_notify_to(addr, "READY=1", &e), LY_E_LIMIT);

	/* Nobody listens there. */
	assert_int_equal(ly_sd_notify_to("/nonexistent/lanyard/notify", "READY=1", &e), LY_E_IO);
	assert_non_null(strstr(e.msg, "/nonexistent/lanyard/notify"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path),
		cmocka_unit_test(test_abstract),
		cmocka_unit_test(test_from_environment),
		cmocka_unit_test(test_refused),
	};
	srand((unsigned)getpid());
	return cmocka_run_group_tests(tests, NULL, NULL);
}
