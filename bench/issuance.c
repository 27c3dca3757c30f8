/*
 * issuance.c: X.509-SVID issuance speed of the server's CA (server/ca.h).
 *
 * Makes a CA in a temporary directory, pregenerates CSRs from P-256 keys
 * (not timed: an agent makes them), then signs batches of 1, 50 and 500
 * CSRs with ly_ca_sign_batch (each CSR parsed and its signature checked,
 * a leaf signed, the chain returned), each for about `-t` seconds.
 * Per batch it records CPU time (CLOCK_THREAD_CPUTIME_ID, what
 * `openssl speed` divides by unless given -elapsed) and wall time.
 *
 * Output, one line per batch size (bench/run-issuance.sh reads it):
 *   batch=<n> svids=<total> median_us=<per SVID> p99_us=<per SVID> svids_per_s=<CPU> wall_svids_per_s=<wall>
 * median and p99 are over batches, of (batch time / batch size).
 * Also one line "lib_csr_parse_us=<median>": lib/csr.c's generic
 * ly_csr_parse on the same CSRs, for comparison.
 *
 * Usage: bench_issuance [-t SECONDS] [-n CSRS]   (run pinned: taskset -c 0)
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/csr.h"
#include "lib/keys.h"
#include "lib/log.h"
#include "server/ca.h"

#define MAX_CSRS 500

static double
clock_us(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
die(const char *what, const struct ly_error *err)
{
	fprintf(stderr, "bench_issuance: %s: %s\n", what, err != NULL ? err->msg : "");
	exit(1);
}

int
main(int argc, char **argv)
{
	double seconds = 3;
	int ncsr = MAX_CSRS;
	int opt;
	while ((opt = getopt(argc, argv, "t:n:")) != -1) {
		if (opt == 't')
			seconds = atof(optarg);
		else if (opt == 'n')
			ncsr = atoi(optarg);
		else {
			fprintf(stderr, "usage: bench_issuance [-t SECONDS] [-n CSRS (50..%d)]\n", MAX_CSRS);
			return 2;
		}
	}
	if (seconds <= 0 || ncsr < 50 || ncsr > MAX_CSRS) {
		fprintf(stderr, "bench_issuance: -t must be > 0, -n 50..%d\n", MAX_CSRS);
		return 2;
	}
	ly_log_set_level(LY_LOG_WARN);

	char dir[] = "/tmp/lanyard-bench-ca-XXXXXX";
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	struct ly_error err;
	struct ly_ca_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.trust_domain = "bench.example";
	cfg.data_dir = dir;
	time_t now = time(NULL);
	struct ly_ca *ca = NULL;
	if (ly_ca_open(&cfg, now, &ca, &err) != LY_OK)
		die("ly_ca_open", &err);

	/* CSRs and IDs, made beforehand. */
	static struct ly_buf csrs[MAX_CSRS];
	static struct ly_spiffe_id ids[MAX_CSRS];
	static struct ly_ca_sign_req reqs[MAX_CSRS];
	static struct ly_ca_sign_res res[MAX_CSRS];
	for (int i = 0; i < ncsr; i++) {
		EVP_PKEY *key = NULL;
		char id[128];
		snprintf(id, sizeof(id), "spiffe://bench.example/ns/bench/sa/workload-%d", i);
		if (ly_spiffe_id_parse_str(id, &ids[i], &err) != LY_OK || ly_key_generate(LY_KEY_EC_P256, &key, &err) != LY_OK ||
		    ly_csr_build(key, &ids[i], NULL, 0, &csrs[i], &err) != LY_OK)
			die("making CSRs", &err);
		EVP_PKEY_free(key);
		reqs[i].csr_der = csrs[i].data;
		reqs[i].csr_len = csrs[i].len;
		reqs[i].id = &ids[i];
	}

	/* Warm up (page faults, OpenSSL's lazy initialisation). */
	if (ly_ca_sign_batch(ca, reqs, 50, now, res, &err) != LY_OK)
		die("warm-up", &err);
	ly_ca_sign_res_cleanup(res, 50);

	static const int sizes[] = { 1, 50, 500 };
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		int bs = sizes[si] > ncsr ? ncsr : sizes[si];
		size_t cap = 1 << 20, n = 0;
		double *samples = malloc(cap * sizeof(double));
		if (samples == NULL)
			die("malloc", NULL);
		double cpu_total = 0, wall_total = 0;
		long svids = 0;
		int off = 0;
		while (cpu_total < seconds * 1e6 && n < cap) {
			const struct ly_ca_sign_req *batch = &reqs[off];
			if (off + bs > ncsr) {
				off = 0;
				batch = reqs;
			}
			double w0 = clock_us(CLOCK_MONOTONIC), c0 = clock_us(CLOCK_THREAD_CPUTIME_ID);
			if (ly_ca_sign_batch(ca, batch, (size_t)bs, now, res, &err) != LY_OK)
				die("sign batch", &err);
			double c1 = clock_us(CLOCK_THREAD_CPUTIME_ID), w1 = clock_us(CLOCK_MONOTONIC);
			for (int i = 0; i < bs; i++) {
				if (res[i].status != LY_OK)
					die("a request failed", &res[i].err);
			}
			ly_ca_sign_res_cleanup(res, (size_t)bs);
			samples[n++] = (c1 - c0) / bs;
			cpu_total += c1 - c0;
			wall_total += w1 - w0;
			svids += bs;
			off = (off + bs) % ncsr;
		}
		qsort(samples, n, sizeof(double), cmp_double);
		double median = samples[n / 2], p99 = samples[(size_t)((double)(n - 1) * 0.99)];
		printf("batch=%d svids=%ld median_us=%.1f p99_us=%.1f svids_per_s=%.0f wall_svids_per_s=%.0f\n", bs, svids,
		    median, p99, (double)svids / (cpu_total / 1e6), (double)svids / (wall_total / 1e6));
		fflush(stdout);
		free(samples);
	}

	/* For comparison: the generic parser of lib/csr.c (d2i_X509_REQ + decoder + verify), per CSR. */
	{
		size_t reps = (size_t)ncsr * 4, n = 0;
		double *samples = malloc(reps * sizeof(double));
		if (samples == NULL)
			die("malloc", NULL);
		for (size_t r = 0; r < reps; r++) {
			struct ly_csr parsed;
			double c0 = clock_us(CLOCK_THREAD_CPUTIME_ID);
			ly_status rc = ly_csr_parse(csrs[r % (size_t)ncsr].data, csrs[r % (size_t)ncsr].len, &parsed, &err);
			double c1 = clock_us(CLOCK_THREAD_CPUTIME_ID);
			if (rc != LY_OK)
				die("ly_csr_parse", &err);
			ly_csr_cleanup(&parsed);
			samples[n++] = c1 - c0;
		}
		qsort(samples, n, sizeof(double), cmp_double);
		printf("lib_csr_parse_us=%.1f\n", samples[n / 2]);
		free(samples);
	}

	for (int i = 0; i < ncsr; i++)
		ly_buf_free(&csrs[i]);
	ly_ca_free(ca);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}
