/*
 * psat_probe.c: runs one k8s_psat node attestation (server/attest.h)
 * against a Kubernetes API server, for tests/integration/fake_k8s_api.py.
 *
 * usage: psat_probe API_URL CA_FILE TOKEN_FILE CLUSTER ALLOW[,ALLOW...] AUDIENCE ASK_CLUSTER AGENT_TOKEN
 *   configures one cluster CLUSTER (trust domain example.org), then attests
 *   AGENT_TOKEN as an agent of ASK_CLUSTER. AUDIENCE "-" takes the default.
 * Prints "OK <agent ID>" and one "SEL <type>:<value>" line per selector and
 * exits 0, or prints "ERR <status>: <message>" and exits 3; exits 2 on
 * bad usage or a configuration refused.
 *
 * It also watches jansson's heap: every block jansson frees is searched for
 * the agent token, and the probe aborts if one held it. The TokenReview
 * response echoes the token, and jansson frees without wiping, so the
 * attestor must scrub the token from the response before parsing it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/attest.h"

#define ALLOW_MAX 16

static const char *watched; /* the agent token */

/* Each block carries its size in front, so that free can search it. */
static void *
watch_malloc(size_t n)
{
	size_t *p = malloc(sizeof(size_t) + n);
	if (p == NULL)
		return NULL;
	*p = n;
	return p + 1;
}

static void
watch_free(void *ptr)
{
	if (ptr == NULL)
		return;
	size_t *p = (size_t *)ptr - 1;
	if (watched != NULL && memmem(ptr, *p, watched, strlen(watched)) != NULL) {
		fprintf(stderr, "psat_probe: jansson held the agent token\n");
		abort();
	}
	free(p);
}

int
main(int argc, char **argv)
{
	struct ly_attest_k8s_psat *cfg = NULL;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	const char *allow[ALLOW_MAX];
	size_t n_allow = 0;
	int code = 2;

	if (argc != 9) {
		fprintf(stderr, "usage: psat_probe API_URL CA_FILE TOKEN_FILE CLUSTER ALLOW[,ALLOW...] AUDIENCE "
				"ASK_CLUSTER AGENT_TOKEN\n");
		return 2;
	}
	watched = argv[8];
	json_set_alloc_funcs(watch_malloc, watch_free);
	char *list = strdup(argv[5]);
	if (list == NULL)
		return 2;
	for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok != NULL && n_allow < ALLOW_MAX;
	     tok = strtok_r(NULL, ",", &save))
		allow[n_allow++] = tok;
	struct ly_psat_cluster_config c = {
		.name = argv[4],
		.allow = allow,
		.n_allow = n_allow,
		.audience = strcmp(argv[6], "-") == 0 ? NULL : argv[6],
		.api_url = argv[1],
		.ca_file = argv[2],
		.token_file = argv[3],
	};
	if (ly_attest_k8s_psat_new("example.org", &cfg, &err) != LY_OK ||
	    ly_attest_k8s_psat_add_cluster(cfg, &c, &err) != LY_OK) {
		fprintf(stderr, "psat_probe: configuration: %s\n", err.msg);
		goto out;
	}
	ly_status rc = ly_attest_k8s_psat(cfg, argv[7], argv[8], 0, &r, &err);
	if (rc != LY_OK) {
		printf("ERR %s: %s\n", ly_status_str(rc), err.msg);
		code = 3;
		goto out;
	}
	printf("OK %s\n", r.agent_id);
	for (size_t i = 0; i < r.n_selectors; i++)
		printf("SEL %s:%s\n", r.selectors[i].type, r.selectors[i].value);
	code = 0;
out:
	ly_attest_result_cleanup(&r);
	ly_attest_k8s_psat_free(cfg);
	free(list);
	return code;
}
