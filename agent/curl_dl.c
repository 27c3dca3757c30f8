/* curl_dl.c: see curl_dl.h. */
#include "agent/curl_dl.h"

#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

struct ly_curl_api ly_curl;

static void *curl_handle;

ly_status
ly_curl_load(struct ly_error *err)
{
	/* Names and table slots, in the order of struct ly_curl_api. */
	static const struct {
		const char *name;
		size_t off;
	} syms[] = {
		{ "curl_global_init", offsetof(struct ly_curl_api, global_init) },
		{ "curl_global_cleanup", offsetof(struct ly_curl_api, global_cleanup) },
		{ "curl_easy_init", offsetof(struct ly_curl_api, easy_init) },
		{ "curl_easy_setopt", offsetof(struct ly_curl_api, easy_setopt) },
		{ "curl_easy_getinfo", offsetof(struct ly_curl_api, easy_getinfo) },
		{ "curl_easy_cleanup", offsetof(struct ly_curl_api, easy_cleanup) },
		{ "curl_easy_strerror", offsetof(struct ly_curl_api, easy_strerror) },
		{ "curl_multi_init", offsetof(struct ly_curl_api, multi_init) },
		{ "curl_multi_setopt", offsetof(struct ly_curl_api, multi_setopt) },
		{ "curl_multi_add_handle", offsetof(struct ly_curl_api, multi_add_handle) },
		{ "curl_multi_remove_handle", offsetof(struct ly_curl_api, multi_remove_handle) },
		{ "curl_multi_assign", offsetof(struct ly_curl_api, multi_assign) },
		{ "curl_multi_socket_action", offsetof(struct ly_curl_api, multi_socket_action) },
		{ "curl_multi_info_read", offsetof(struct ly_curl_api, multi_info_read) },
		{ "curl_multi_cleanup", offsetof(struct ly_curl_api, multi_cleanup) },
		{ "curl_multi_strerror", offsetof(struct ly_curl_api, multi_strerror) },
	};
	struct ly_curl_api api;
	void *h;

	if (curl_handle != NULL)
		return LY_OK;
	/* RTLD_LOCAL: its symbols stay out of the global namespace; RTLD_NOW: a missing one fails here. */
	h = dlopen(LY_CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *why = dlerror();
		return ly_error_set(err, LY_E_UNSUPPORTED, "cannot load %s (install libcurl4): %s", LY_CURL_SONAME,
		    why != NULL ? why : "?");
	}
	memset(&api, 0, sizeof(api));
	for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
		void *fn = dlsym(h, syms[i].name);
		if (fn == NULL) {
			(void)dlclose(h);
			return ly_error_set(err, LY_E_UNSUPPORTED, "%s has no %s", LY_CURL_SONAME, syms[i].name);
		}
		/* POSIX: a function's address fits a void * (dlsym's contract); copied, not cast, for ISO C. */
		memcpy((char *)&api + syms[i].off, &fn, sizeof(fn));
	}
	ly_curl = api;
	curl_handle = h;
	return LY_OK;
}
