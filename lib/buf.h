/*
 * buf.h: an owned, growable byte buffer with a hard cap (curl's dynbuf),
 * and wiping helpers for secrets.
 *
 * struct ly_buf owns `data` (heap, malloc'd), `len` bytes of it in use and
 * `alloc` allocated. It grows by doubling, never past its cap: the `cap`
 * argument of ly_buf_append, and the one stored by ly_buf_init (0: none)
 * for ly_buf_add; past it the append fails with LY_E_LIMIT and the buffer
 * is left as it was. A buffer made secret (ly_buf_init(.., true)) never
 * leaves a copy behind: growing moves the bytes to a new allocation and
 * wipes the old one (a wiping realloc), and freeing wipes. Every cap
 * comes from lib/caps.h.
 *
 * ly_buf_free() releases it (wiping first when secret);
 * ly_buf_free_secret() always wipes the whole allocation first, for key
 * bytes, packed responses that carry a key, and tokens. Both leave the
 * buffer empty, keeping its cap and secrecy, ready for reuse.
 * ly_buf_take() hands the bytes over and leaves the source empty.
 *
 * Hazard: code that makes the bytes itself (a malloc of its own) hands
 * them over with ly_buf_adopt, never by setting `data` and `len` alone:
 * `alloc` is believed only for the allocation this module made
 * (`alloc_at`), else `len` is taken as the allocation's size.
 */
#ifndef LANYARD_BUF_H
#define LANYARD_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct ly_buf {
	uint8_t *data;
	size_t len;
	size_t alloc;     /* bytes allocated at alloc_at (see the hazard above) */
	uint8_t *alloc_at;
	size_t cap;       /* ly_buf_add's limit on len; 0: none stored */
	bool secret;      /* wipe on growth and on free */
};

#define LY_BUF_INIT { NULL, 0, 0, NULL, 0, false }

/* An empty buffer with a stored cap (0: none; ly_buf_add then refuses everything) and secrecy. */
void ly_buf_init(struct ly_buf *buf, size_t cap, bool secret);
/*
 * Makes *buf own `data` (malloc'd, `len` bytes; NULL and 0: empty),
 * whatever *buf held (not freed): no cap, not secret.
 */
void ly_buf_adopt(struct ly_buf *buf, uint8_t *data, size_t len);
/*
 * Makes *buf a copy of `len` bytes (len 0 gives a 1-byte allocation),
 * whatever it held (not freed: it must be empty or uninitialised): no
 * cap, not secret.
 */
ly_status ly_buf_set(struct ly_buf *buf, const void *data, size_t len, struct ly_error *err) LY_MUST_CHECK;
/*
 * Appends `len` bytes, refusing to grow past `cap` bytes in all, or past
 * the stored cap when one is set and smaller (LY_E_LIMIT; the buffer is
 * unchanged).
 */
ly_status ly_buf_append(struct ly_buf *buf, const void *data, size_t len, size_t cap,
    struct ly_error *err) LY_MUST_CHECK;
/* Appends within the stored cap (ly_buf_init). */
ly_status ly_buf_add(struct ly_buf *buf, const void *data, size_t len, struct ly_error *err) LY_MUST_CHECK;
void ly_buf_free(struct ly_buf *buf);
void ly_buf_free_secret(struct ly_buf *buf);
/* Moves *src into *dst (dst must be empty), leaving src empty (its cap and secrecy kept). */
void ly_buf_take(struct ly_buf *dst, struct ly_buf *src);

/*
 * A response body received piece by piece (libcurl's CURLOPT_WRITEFUNCTION
 * with CURLOPT_WRITEDATA pointing at the sink): the bytes go to `buf`
 * within its stored cap (ly_buf_init first); past it `over` is set, on
 * allocation failure `nomem`, and the transfer is stopped (0 returned).
 */
struct ly_buf_sink {
	struct ly_buf buf;
	bool over;
	bool nomem;
};
size_t ly_buf_sink_write(char *data, size_t size, size_t nmemb, void *sink);

/* Wipes and frees a NUL-terminated heap string (tokens, PEM keys). */
void ly_free_secret_str(char *s);

#endif /* LANYARD_BUF_H */
