/*
 * kubelet.h: the kubelet's pod list, fetched on the agent's loop without
 * blocking it, cached briefly and shared among concurrent lookups (SPEC §5;
 * NOTES-k8s "The kubelet").
 *
 * GET https://<host>:<port>/pods with "Authorization: Bearer <token>"; the
 * token file is read again for every fetch (projected service-account
 * tokens rotate) on a libuv worker, as is the parsing of the answer
 * (k8s_podlist.h); the request itself runs on libcurl's multi interface
 * driven by the loop (http_uv.h). TLS: the kubelet's certificate must chain
 * to `ca_file` and name `host`, unless `skip_verify` is set (off by
 * default; many clusters' kubelets serve self-signed certificates: logged
 * as a warning at start). HTTPS only, no redirects, no proxy from the
 * environment, TLS 1.2 or later, answers capped at LY_K8S_PODLIST_MAX bytes,
 * one overall timeout per fetch.
 *
 * Sharing: each completed fetch has a generation number (1, 2, ...). A
 * lookup asks for a list of generation >= min_gen (0: any). It is served
 * from the cached list when that is at most cache_ms old and recent enough;
 * otherwise it waits for the fetch in flight (when that one is recent
 * enough) or for the next one. At most one fetch is in flight: N
 * concurrent lookups cost one request. A caller that did not find its
 * container retries with min_gen = the generation it got + 1, which forces
 * a fresh list (a new pod may not be listed yet).
 *
 * Ownership: struct ly_kubelet is a heap object on one loop (loop thread
 * only). ly_kubelet_close drops waiting lookups without calling them (each
 * owner cancels or forgets its own), abandons the fetch in flight, and
 * frees the object once its handles and workers are done: keep running the
 * loop after close. struct ly_kubelet_wait is owned by the caller (embed it
 * in the lookup's own state); it must stay valid until its callback has
 * started or ly_kubelet_wait_cancel returned. The list passed to a callback
 * is borrowed: valid during the callback only (json_incref to keep it).
 * The bearer token is never logged and is wiped from our buffers after use.
 */
#ifndef LANYARD_AGENT_KUBELET_H
#define LANYARD_AGENT_KUBELET_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "lib/error.h"
#include "lib/queue.h"

#define LY_KUBELET_PORT_DEFAULT 10250
#define LY_KUBELET_TIMEOUT_MS_DEFAULT 10000
#define LY_KUBELET_CACHE_MS_DEFAULT 2000

struct ly_kubelet_config {
	const char *host;       /* the node name (downward API spec.nodeName) or an IP literal; required */
	unsigned port;          /* 0: LY_KUBELET_PORT_DEFAULT */
	const char *token_file; /* service-account token; required */
	const char *ca_file;    /* CA of the kubelet's serving certificate; required unless skip_verify */
	bool skip_verify;       /* do not verify the kubelet's certificate (logged at start) */
	uint64_t timeout_ms;    /* whole fetch; 0: LY_KUBELET_TIMEOUT_MS_DEFAULT */
	uint64_t cache_ms;      /* a list serves new lookups this long; 0: LY_KUBELET_CACHE_MS_DEFAULT */
};

struct ly_kubelet;

/*
 * A lookup's answer, on the loop. On LY_OK `pods` is a list checked by
 * ly_k8s_podlist_parse and `gen` its generation; otherwise pods is NULL,
 * `gen` the generation of the failed fetch (retry with gen + 1), and `err`
 * says why (valid during the call).
 */
typedef void (*ly_kubelet_pods_cb)(void *arg, ly_status rc, const struct ly_error *err, const json_t *pods,
    uint64_t gen);

/* A waiting lookup. Fields are private to kubelet.c. */
struct ly_kubelet_wait {
	ly_kubelet_pods_cb cb;
	void *arg;
	uint64_t min_gen;
	struct ly_queue link; /* on the kubelet's waiters while linked */
	bool linked;
};

struct ly_kubelet_stats {
	uint64_t fetches;      /* requests started */
	uint64_t failures;     /* fetches that gave no list */
	uint64_t cache_hits;   /* lookups served from the cached list */
};

/*
 * Checks `cfg` (host: [A-Za-z0-9.:-], at most 253 bytes; a ca_file unless
 * skip_verify; a token_file; a port 1..65535), copies it and prepares the
 * HTTP client on `loop`. Nothing is fetched yet.
 */
ly_status ly_kubelet_new(uv_loop_t *loop, const struct ly_kubelet_config *cfg, struct ly_kubelet **out,
    struct ly_error *err) LY_MUST_CHECK;

/* Closes as above. NULL is allowed. */
void ly_kubelet_close(struct ly_kubelet *k);

/*
 * Asks for a pod list of generation >= min_gen. On LY_OK `cb` runs once on
 * the loop, never from inside this call, unless the wait is cancelled or
 * the kubelet closed. `w` must not be waiting already.
 */
ly_status ly_kubelet_get_pods(struct ly_kubelet *k, uint64_t min_gen, struct ly_kubelet_wait *w,
    ly_kubelet_pods_cb cb, void *arg, struct ly_error *err) LY_MUST_CHECK;

/* Stops waiting; the callback will not run. A wait that is not waiting is left alone. */
void ly_kubelet_wait_cancel(struct ly_kubelet *k, struct ly_kubelet_wait *w);

void ly_kubelet_stats(const struct ly_kubelet *k, struct ly_kubelet_stats *out);

#endif /* LANYARD_AGENT_KUBELET_H */
