/*
 * fuzz_config.c: loads arbitrary bytes as a configuration file and, when
 * accepted, runs every getter on every key (abort on a broken invariant).
 */
#include <stdint.h>
#include <stdlib.h>

#include "lib/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const known[] = { "server.trust_domain", "server.server_port", "a.*", NULL };
	struct ly_config *cfg = NULL;
	struct ly_error err;

	if (ly_config_load_buf("fuzz.yaml", data, size, &cfg, &err) != LY_OK)
		return 0;
	for (size_t i = 0; i < ly_config_count(cfg); i++) {
		const char *key = ly_config_key_at(cfg, i), *s, *const *list;
		uint64_t u;
		uint16_t port;
		bool b;
		size_t n;
		if (!ly_config_has(cfg, key) || ly_config_line(cfg, key) == 0)
			abort();
		ly_status rs = ly_config_get_string(cfg, key, NULL, &s, &err);
		ly_status rl = ly_config_get_list(cfg, key, &list, &n, &err);
		if ((rs == LY_OK && s == NULL) || (rs == LY_OK && rl == LY_OK) ||
		    (rl == LY_OK && (list == NULL || list[n] != NULL)))
			abort();
		ly_status rest[] = { ly_config_get_u64(cfg, key, 0, &u, &err), ly_config_get_port(cfg, key, 1, &port, &err),
			ly_config_get_bool(cfg, key, false, &b, &err), ly_config_get_duration(cfg, key, 0, &u, &err),
			ly_config_wrap_item(cfg, key, rl == LY_OK ? n : 0, &err, LY_E_INVALID) };
		(void)rest;
	}
	ly_status rk = ly_config_check_known(cfg, known, &err);
	(void)rk;
	ly_config_free(cfg);
	return 0;
}
