/*
 * federation.h: SPIFFE Federation on the server (issue 15; SPEC §9; spiffe
 * standards/SPIFFE_Federation.md), the parts that do no I/O:
 *   - the `server.federation` configuration (bundle_endpoint, federates_with),
 *     checked before anything is opened, with "file:line: key K: why" errors;
 *   - the refresh schedule derived from a bundle's spiffe_refresh_hint;
 *   - the checks of a bundle endpoint's answer (HTTP status line, headers,
 *     body size, the SPIFFE bundle itself, its trust domain);
 *   - the bundle endpoint's decision on a request head.
 * The I/O lives in fed_endpoint.c (the listener) and fed_fetch.c (the client).
 *
 * Ownership: struct ly_fed_config is caller-owned (ly_fed_config_cleanup);
 * its strings point into the struct ly_config it was read from, except the
 * relationships array (heap, freed by cleanup). Bundles returned are heap
 * (ly_bundle_free).
 */
#ifndef LANYARD_SERVER_FEDERATION_H
#define LANYARD_SERVER_FEDERATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/error.h"
#include "lib/spiffeid.h"
#include "server/datastore.h"

struct ly_config;

/*
 * Bundle endpoint profiles (SPIFFE_Federation.md §5): enum ly_fed_profile of
 * server/datastore.h, LY_FED_PROFILE_HTTPS_SPIFFE (the default for our
 * endpoint: the server's own X.509-SVID) or LY_FED_PROFILE_HTTPS_WEB.
 */

/* The refresh hint our endpoint publishes when none is configured (SPIRE: 5 min). */
#define LY_FED_REFRESH_HINT_DEFAULT 300
/* Bounds of a configured refresh_hint (seconds). */
#define LY_FED_REFRESH_HINT_MIN 1
#define LY_FED_REFRESH_HINT_MAX (24 * 3600)
/*
 * Client schedule: SPIRE tries 4 times per refresh hint, so that one failed
 * fetch does not miss a whole period; 5 min without a hint. The interval is
 * then kept within [LY_FED_FETCH_MIN_S, LY_FED_FETCH_MAX_S]: a hint of 0 from
 * the other side cannot make us poll in a loop, nor a huge one stop us
 * polling; and jittered by up to LY_FED_FETCH_JITTER_PCT percent down, so
 * that many servers do not poll in step.
 */
#define LY_FED_FETCH_ATTEMPTS_PER_HINT 4
#define LY_FED_FETCH_MIN_S 1
#define LY_FED_FETCH_MAX_S 3600
#define LY_FED_FETCH_JITTER_PCT 10
/* Caps (one fetch's time, answer size, endpoint connections): lib/caps.h, LY_FED_*. */
/* Where https_web trust anchors come from (Debian's ca-certificates). */
#define LY_FED_SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

struct ly_fed_endpoint_config {
	bool enabled;                 /* server.federation.bundle_endpoint present */
	const char *address;          /* IP literal, default 0.0.0.0 */
	uint16_t port;                /* default 8443 (SPIRE's) */
	uint64_t refresh_hint;        /* seconds, published in the bundle */
	enum ly_fed_profile profile;
	const char *cert_file_path;   /* https_web only */
	const char *key_file_path;    /* https_web only; must be mode 0600 or stricter */
};

/* One relationship: a foreign trust domain and where its bundle is served. */
struct ly_fed_relationship {
	char trust_domain[LY_TRUST_DOMAIN_MAX + 1];
	char url[LY_FED_URL_MAX + 1];
	enum ly_fed_profile profile;
	struct ly_spiffe_id endpoint_id; /* https_spiffe only */
};

struct ly_fed_config {
	struct ly_fed_endpoint_config endpoint;
	struct ly_fed_relationship *rels; /* static relationships, heap */
	size_t n_rels;
	/* https_web trust anchors (PEM file); default LY_FED_SYSTEM_CA_FILE. Tests point it at their own CA. */
	const char *web_ca_file;
};

/* Config keys under server.federation, for ly_config_check_known (the list ends with NULL). */
extern const char *const ly_fed_config_keys[];

/*
 * Reads server.federation from `file` (NULL: federation off) for our
 * trust domain `own_td` (a relationship with ourselves is refused).
 * LY_E_INVALID with "file:line: key K: why" on any mistake.
 */
ly_status ly_fed_config_load(const struct ly_config *file, const char *own_td, struct ly_fed_config *out,
    struct ly_error *err) LY_MUST_CHECK;
void ly_fed_config_cleanup(struct ly_fed_config *cfg);

/*
 * Checks a bundle_endpoint_url: "https://host[:port][/path]", host a DNS
 * name or an IP literal ([v6]), no user info, query or fragment. Fills
 * host (at most 255 bytes), port (443 by default) and path ("/" by default).
 */
struct ly_fed_url {
	char host[256];
	uint16_t port;
	char path[LY_HTTP_PATH_MAX + 1];
	bool host_is_ip;
};
ly_status ly_fed_url_parse(const char *url, struct ly_fed_url *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Milliseconds until the next fetch of a bundle whose refresh hint is
 * `hint_s` (0: none): hint/4 (5 min/4 without one), within
 * [LY_FED_FETCH_MIN_S, LY_FED_FETCH_MAX_S], less `jitter_permille` (0..1000)
 * of LY_FED_FETCH_JITTER_PCT percent.
 */
uint64_t ly_fed_next_fetch_ms(uint64_t hint_s, unsigned jitter_permille);

/* Why a fetched answer was not taken (metrics label and log word). */
enum ly_fed_refusal {
	LY_FED_R_CONNECT = 0, /* no connection (down, refused, name unknown) */
	LY_FED_R_TIMEOUT,     /* no whole answer within LY_FED_FETCH_TIMEOUT_MS */
	LY_FED_R_TLS,         /* handshake or peer authentication failed */
	LY_FED_R_HTTP,        /* a malformed answer or a status other than 200 */
	LY_FED_R_OVERSIZED,   /* over LY_FED_RESPONSE_MAX / LY_JWKS_MAX */
	LY_FED_R_BUNDLE,      /* not a valid SPIFFE bundle */
	LY_FED_R_DOMAIN,      /* a bundle of another trust domain */
	LY_FED_R_STALE,       /* spiffe_sequence went backwards */
	LY_FED_R_STORE,       /* the datastore refused it */
	LY_FED_R_NO_TRUST,    /* https_spiffe without a bundle to authenticate the endpoint */
	LY_FED_R_COUNT,
};
const char *ly_fed_refusal_name(enum ly_fed_refusal r);

/*
 * Checks a whole HTTP/1.x answer (`len` bytes, read until the peer closed
 * or Content-Length was reached) from a bundle endpoint of trust domain
 * `td`, and parses its body as that domain's bundle:
 *   - status line "HTTP/1.x 200 ..."; headers well-formed (no bare LF);
 *   - Content-Length, when present, equal to the body's length;
 *     "Transfer-Encoding" refused (we never ask for chunks);
 *   - body at most LY_JWKS_MAX bytes, a SPIFFE bundle (ly_bundle_parse_jwks);
 *   - every X.509 authority that names a SPIFFE ID (URI SAN) names `td`'s
 *     (a CA of another domain served as this one's is refused: never merge).
 * On success *out is the new bundle. On refusal *why says which kind and
 * `err` the detail. `previous` (may be NULL) is the bundle we hold: a lower
 * spiffe_sequence than its is refused as stale.
 */
ly_status ly_fed_check_response(const char *td, const uint8_t *buf, size_t len, const struct ly_bundle *previous,
    struct ly_bundle **out, enum ly_fed_refusal *why, struct ly_error *err) LY_MUST_CHECK;

/* The bundle endpoint's decision on one request head (the body of its answer is the caller's). */
enum ly_fed_route {
	LY_FED_ROUTE_NEED_MORE = 0, /* well-formed so far */
	LY_FED_ROUTE_BUNDLE,        /* GET / : 200 with the bundle */
	LY_FED_ROUTE_BAD_REQUEST,   /* 400 */
	LY_FED_ROUTE_NOT_FOUND,     /* 404: any other path */
	LY_FED_ROUTE_METHOD,        /* 405: another method on / */
	LY_FED_ROUTE_TOO_LARGE,     /* 431 */
};
enum ly_fed_route ly_fed_route_request(const char *buf, size_t len);
/* The status line and a short body for a route other than BUNDLE/NEED_MORE. */
void ly_fed_route_status(enum ly_fed_route r, int *code, const char **reason);

#endif /* LANYARD_SERVER_FEDERATION_H */
