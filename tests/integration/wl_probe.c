/*
 * wl_probe.c: the workload client library (include/lanyard/workload.h,
 * linked as the shared liblanyard-workload a program gets) fetching from a
 * real agent, for the scenarios (wapi_large.py). Each verb prints what the
 * library handed out and exits 0, or prints one "refused: ..." line and
 * exits 1; 2 on usage errors.
 *
 *   wl_probe fetch-x509 ADDR      lanyard_fetch_x509_context: one response
 *   wl_probe source-x509 ADDR     lanyard_x509_source: the watcher's first context
 *
 * Output: "svids N", "first ID", "last ID", "bundles M", one a line.
 */
#include <stdio.h>
#include <string.h>

#include <lanyard/workload.h>

#define TIMEOUT_MS 120000

static int
refuse(const char *what, const struct lanyard_error *err)
{
	printf("refused: %s: %s: %s\n", what, lanyard_status_str(err->code), err->msg);
	return 1;
}

static void
print_context(const lanyard_x509_context *ctx)
{
	size_t n = lanyard_x509_context_svid_count(ctx);
	printf("svids %zu\n", n);
	printf("first %s\n", lanyard_x509_svid_id(lanyard_x509_context_svid(ctx, 0)));
	printf("last %s\n", lanyard_x509_svid_id(lanyard_x509_context_svid(ctx, n - 1)));
	printf("bundles %zu\n", lanyard_x509_context_bundle_count(ctx));
}

static int
fetch_x509(const char *addr)
{
	lanyard_client *c = NULL;
	lanyard_x509_context *ctx = NULL;
	struct lanyard_error err;
	int rc;

	if (lanyard_client_new(addr, &c, &err) != LANYARD_OK)
		return refuse("client", &err);
	lanyard_client_set_timeout(c, TIMEOUT_MS);
	if (lanyard_fetch_x509_context(c, &ctx, &err) != LANYARD_OK) {
		rc = refuse("FetchX509SVID", &err);
	} else {
		print_context(ctx);
		rc = 0;
	}
	lanyard_x509_context_free(ctx);
	lanyard_client_free(c);
	return rc;
}

static int
source_x509(const char *addr)
{
	lanyard_x509_source *src = NULL;
	lanyard_x509_context *ctx = NULL;
	struct lanyard_error err;
	int rc;

	if (lanyard_x509_source_new(addr, NULL, NULL, &src, &err) != LANYARD_OK)
		return refuse("source", &err);
	if (lanyard_x509_source_wait(src, TIMEOUT_MS, &err) != LANYARD_OK) {
		rc = refuse("source wait", &err);
	} else {
		ctx = lanyard_x509_source_get(src);
		print_context(ctx);
		rc = 0;
	}
	lanyard_x509_context_free(ctx);
	lanyard_x509_source_free(src);
	return rc;
}

int
main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "fetch-x509") == 0)
		return fetch_x509(argv[2]);
	if (argc == 3 && strcmp(argv[1], "source-x509") == 0)
		return source_x509(argv[2]);
	fprintf(stderr, "usage: wl_probe fetch-x509|source-x509 ADDR\n");
	return 2;
}
