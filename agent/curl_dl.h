/*
 * curl_dl.h: libcurl, loaded at run time by the agents that use it.
 *
 * Only the k8s workload attestor talks HTTP (the kubelet's /pods), and
 * Debian's libcurl brings GnuTLS, Kerberos, LDAP, p11-kit and a dozen more
 * libraries with it: ~3 MiB of resident pages and their start-up code in
 * every agent, k8s or not (docs/benchmarks.md, "Agent RSS"). So the agent
 * does not link libcurl: ly_curl_load() opens libcurl.so.4 the first time
 * a kubelet client is made and fills ly_curl; kubelet.c and http_uv.c call
 * libcurl through it with the usual names (the macros below), unchanged.
 *
 * Include this header instead of <curl/curl.h>. Threads: ly_curl_load runs
 * on the loop thread; once it succeeded the table never changes and may be
 * read from any thread (libcurl's resolver threads never call us). The
 * library stays loaded until the process exits.
 */
#ifndef LANYARD_AGENT_CURL_DL_H
#define LANYARD_AGENT_CURL_DL_H

/* Plain prototypes: curl.h's type-checking macros would hide the names redefined below. */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

#include "lib/error.h"

/* The soname the agent was built against (Debian 12: libcurl4, libcurl.so.4). */
#define LY_CURL_SONAME "libcurl.so.4"

struct ly_curl_api {
	CURLcode (*global_init)(long flags);
	void (*global_cleanup)(void);
	CURL *(*easy_init)(void);
	CURLcode (*easy_setopt)(CURL *easy, CURLoption option, ...);
	CURLcode (*easy_getinfo)(CURL *easy, CURLINFO info, ...);
	void (*easy_cleanup)(CURL *easy);
	const char *(*easy_strerror)(CURLcode code);
	CURLM *(*multi_init)(void);
	CURLMcode (*multi_setopt)(CURLM *multi, CURLMoption option, ...);
	CURLMcode (*multi_add_handle)(CURLM *multi, CURL *easy);
	CURLMcode (*multi_remove_handle)(CURLM *multi, CURL *easy);
	CURLMcode (*multi_assign)(CURLM *multi, curl_socket_t fd, void *ptr);
	CURLMcode (*multi_socket_action)(CURLM *multi, curl_socket_t fd, int ev_bitmask, int *running);
	CURLMsg *(*multi_info_read)(CURLM *multi, int *msgs_in_queue);
	CURLMcode (*multi_cleanup)(CURLM *multi);
	const char *(*multi_strerror)(CURLMcode code);
};

/* Filled by ly_curl_load; all NULL before. */
extern struct ly_curl_api ly_curl;

/*
 * Opens LY_CURL_SONAME and resolves every function above; idempotent.
 * LY_E_UNSUPPORTED naming the missing library or symbol (dlerror) when it
 * cannot: the k8s attestor then cannot start, and says why.
 */
ly_status ly_curl_load(struct ly_error *err) LY_MUST_CHECK;

/* curl.h wraps the variadic ones in argument-counting macros: replaced by ours. */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt
#define curl_global_init (ly_curl.global_init)
#define curl_global_cleanup (ly_curl.global_cleanup)
#define curl_easy_init (ly_curl.easy_init)
#define curl_easy_setopt (ly_curl.easy_setopt)
#define curl_easy_getinfo (ly_curl.easy_getinfo)
#define curl_easy_cleanup (ly_curl.easy_cleanup)
#define curl_easy_strerror (ly_curl.easy_strerror)
#define curl_multi_init (ly_curl.multi_init)
#define curl_multi_setopt (ly_curl.multi_setopt)
#define curl_multi_add_handle (ly_curl.multi_add_handle)
#define curl_multi_remove_handle (ly_curl.multi_remove_handle)
#define curl_multi_assign (ly_curl.multi_assign)
#define curl_multi_socket_action (ly_curl.multi_socket_action)
#define curl_multi_info_read (ly_curl.multi_info_read)
#define curl_multi_cleanup (ly_curl.multi_cleanup)
#define curl_multi_strerror (ly_curl.multi_strerror)

#endif /* LANYARD_AGENT_CURL_DL_H */
