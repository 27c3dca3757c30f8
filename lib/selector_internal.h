/*
 * selector_internal.h: the character and host-name rules of selector.c that
 * entry.c uses too (entry IDs, an entry's DNS names), so that each rule has
 * one home. Not for other modules; no ownership: nothing here allocates.
 */
#ifndef LANYARD_SELECTOR_INTERNAL_H
#define LANYARD_SELECTOR_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* [A-Za-z0-9._-]: POSIX portable filename characters. */
bool ly_sel_is_portable(unsigned char c);
/*
 * RFC 1123 §2.1 host name of `n` bytes at `a`, with an optional leading
 * "*." wildcard label; at most LY_DNS_NAME_MAX bytes. `what` names it in
 * the message, which never echoes it.
 */
ly_status ly_sel_check_hostname(const char *what, const char *a, size_t n, struct ly_error *err) LY_MUST_CHECK;
/* `s`, or "" when it is NULL. */
const char *ly_sel_or_empty(const char *s);

#endif /* LANYARD_SELECTOR_INTERNAL_H */
