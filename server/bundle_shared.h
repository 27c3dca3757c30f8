/*
 * bundle_shared.h: the trust bundle of a trust domain served by several
 * servers on one PostgreSQL database (SPEC §10). Pure: no I/O, no clock.
 *
 * Each server keeps its own CA (its keys never leave its data_dir, ca.h)
 * and publishes the public half of its authorities into the database: one
 * row per authority, named by the publishing server's ID, with the
 * authority's expiry (struct ly_shared_authority). The bundle every server
 * serves is the union of the rows that have not expired:
 *  - a server's successor authorities are in its CA's bundle from the
 *    rotation's prepare step on (ca.h), so publishing that bundle at every
 *    change publishes a successor before it signs;
 *  - a server that has been gone longer than its CA's lifetime has only
 *    expired rows left: they drop out of the union at the next read
 *    (and are deleted by the next publish of any server);
 *  - the union's sequence is the database's bundle sequence, raised by
 *    every publish, never below the publishing CA's own sequence, so it
 *    grows across servers and agents notice every change.
 *
 * Ownership: a struct ly_shared_authorities owns its rows (strings and
 * DER buffers); release it with ly_shared_authorities_cleanup. A bundle
 * returned is the caller's (ly_bundle_free). Inputs are borrowed.
 */
#ifndef LANYARD_SERVER_BUNDLE_SHARED_H
#define LANYARD_SERVER_BUNDLE_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/error.h"

/* A server ID: a UUID made once per data_dir (<data_dir>/server-id). */
#define LY_SHARED_SERVER_ID_MAX 36
/* Rows one server may publish; the union may hold this many per server. */
#define LY_SHARED_AUTHORITIES_PER_SERVER 64
/* Rows a union is built from at most (a few dozen servers). */
#define LY_SHARED_AUTHORITIES_MAX 2048
/* A row's key ID: a JWT kid, or the hex SHA-256 of an X.509 authority's DER. */
#define LY_SHARED_KID_MAX 64

struct ly_shared_authority {
	char *server_id;
	bool jwt;           /* a JWT key (SubjectPublicKeyInfo DER), else an X.509 CA certificate (DER) */
	char *kid;          /* JWT: its kid; X.509: hex SHA-256 of the DER */
	struct ly_buf der;
	int64_t not_after;  /* Unix seconds: out of the union from then on */
};

struct ly_shared_authorities {
	struct ly_shared_authority *items;
	size_t n;
	uint64_t sequence; /* the database's bundle sequence (read), or 0 */
};

#define LY_SHARED_AUTHORITIES_INIT { NULL, 0, 0 }

void ly_shared_authorities_cleanup(struct ly_shared_authorities *a);

/*
 * Appends one row (copies of every argument). Refused: a server ID or kid
 * empty or over its cap, DER empty or over LY_CERT_DER_MAX, not_after <= 0,
 * more than LY_SHARED_AUTHORITIES_MAX rows (LY_E_LIMIT).
 */
ly_status ly_shared_authorities_add(struct ly_shared_authorities *a, const char *server_id, bool jwt,
    const char *kid, const uint8_t *der, size_t len, int64_t not_after, struct ly_error *err) LY_MUST_CHECK;

/*
 * The rows server `server_id` publishes for `local` (its CA's bundle):
 * every X.509 authority with its certificate's notAfter, every JWT key
 * with the expiry `jwt_not_after(arg, kid)` gives (0: unknown, the key is
 * left out). Appended to `out`.
 */
typedef int64_t ly_shared_jwt_expiry_fn(void *arg, const char *kid);
ly_status ly_shared_authorities_from_bundle(const struct ly_bundle *local, const char *server_id,
    ly_shared_jwt_expiry_fn *jwt_not_after, void *arg, struct ly_shared_authorities *out, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * The union of the rows of `rows` that are still valid at `now`
 * (not_after > now), for trust domain `td`, with sequence `sequence` and
 * refresh hint `refresh_hint` (seconds). The same X.509 authority from
 * two rows is held once; a JWT kid held twice keeps the first row's key
 * (rows come ordered by server). `*next_expiry` (may be NULL) gets the
 * earliest not_after among the rows kept (0 when none): when the union
 * must be rebuilt. A row that does not parse is skipped and counted in
 * *skipped (may be NULL): one bad row must not cut the domain off.
 * *out: ly_bundle_free.
 */
ly_status ly_shared_bundle_union(const char *td, const struct ly_shared_authorities *rows, int64_t now,
    uint64_t sequence, uint64_t refresh_hint, struct ly_bundle **out, int64_t *next_expiry, size_t *skipped,
    struct ly_error *err) LY_MUST_CHECK;

/* True when `a` and `b` hold the same authorities (sequence and hint aside), in any order. */
bool ly_shared_bundle_same_authorities(const struct ly_bundle *a, const struct ly_bundle *b);

#endif
