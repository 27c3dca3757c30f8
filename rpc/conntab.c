/* conntab.c: see conntab.h. */
#include "rpc/conntab.h"

#include <stdlib.h>
#include <string.h>

#include "lib/caps.h"

void
ly_conntab_init(struct ly_conntab *t)
{
	t->slots = NULL;
	t->size = 0;
	t->count = 0;
}

void
ly_conntab_cleanup(struct ly_conntab *t)
{
	free(t->slots);
	ly_conntab_init(t);
}

/* Grows the array so that index `fd` exists (doubling, capped at LY_RPC_FD_MAX). */
static ly_status
conntab_grow(struct ly_conntab *t, size_t fd, struct ly_error *err)
{
	size_t size = t->size != 0 ? t->size : 64;

	while (size <= fd)
		size *= 2;
	if (size > LY_RPC_FD_MAX)
		size = LY_RPC_FD_MAX;
	void **slots = realloc(t->slots, size * sizeof(*slots));
	if (slots == NULL)
		return ly_error_set(err, LY_E_NOMEM, "connection table: out of memory");
	memset(slots + t->size, 0, (size - t->size) * sizeof(*slots));
	t->slots = slots;
	t->size = size;
	return LY_OK;
}

ly_status
ly_conntab_put(struct ly_conntab *t, int fd, void *conn, void **displaced, struct ly_error *err)
{
	*displaced = NULL;
	if (conn == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "connection table: NULL entry");
	if (fd < 0 || fd >= LY_RPC_FD_MAX)
		return ly_error_set(err, LY_E_LIMIT, "connection table: fd %d outside [0, %d)",
		    fd, LY_RPC_FD_MAX);
	size_t i = (size_t)fd;
	if (i >= t->size)
		LY_TRY(conntab_grow(t, i, err));
	*displaced = t->slots[i];
	if (*displaced == NULL)
		t->count++;
	t->slots[i] = conn;
	return LY_OK;
}

void *
ly_conntab_get(const struct ly_conntab *t, int fd)
{
	if (fd < 0 || (size_t)fd >= t->size)
		return NULL;
	return t->slots[fd];
}

bool
ly_conntab_remove(struct ly_conntab *t, int fd, const void *conn)
{
	if (conn == NULL || fd < 0 || (size_t)fd >= t->size || t->slots[fd] != conn)
		return false;
	t->slots[fd] = NULL;
	t->count--;
	return true;
}

ly_status
ly_rpc_parse_fd_peer(const char *peer, int *fd, struct ly_error *err)
{
	long n = 0;

	if (peer == NULL || strncmp(peer, "fd:", 3) != 0)
		return ly_error_set(err, LY_E_INVALID, "peer is not \"fd:<N>\"");
	const char *p = peer + 3;
	if (*p == '\0')
		return ly_error_set(err, LY_E_INVALID, "peer \"fd:\" has no number");
	if (p[0] == '0' && p[1] != '\0')
		return ly_error_set(err, LY_E_INVALID, "peer fd number has a leading zero");
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return ly_error_set(err, LY_E_INVALID, "peer fd number is not decimal");
		n = n * 10 + (*p - '0');
		if (n >= LY_RPC_FD_MAX)
			return ly_error_set(err, LY_E_LIMIT, "peer fd number over %d", LY_RPC_FD_MAX);
	}
	*fd = (int)n;
	return LY_OK;
}
