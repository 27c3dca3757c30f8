/*
 * crypto_floor.c: the CPU an X.509-SVID storm cannot do without, on this
 * machine, for bench/vs-spire's storm rows (issue 13).
 *
 * Whatever the implementation, each SVID of a storm needs, on the agent, a
 * P-256 key generated, a CSR signed with it and the returned leaf's
 * signature verified (a chain whose signing path is known is one verify);
 * on the server, the CSR's signature verified and the leaf signed. That is
 * one key generation, two ECDSA P-256 signatures and two verifications,
 * through OpenSSL's EVP interface (contexts reused where an implementation
 * can reuse them, as lib/keys.c does; ECDSA over SHA-256 of a message the
 * size of a leaf's TBSCertificate). Nothing else is counted: no parsing, no
 * DER, no gRPC, so no implementation reaches it.
 *
 * Each operation is repeated for about `-t` / 3 seconds of this thread's
 * CPU time (CLOCK_THREAD_CPUTIME_ID, as `openssl speed` divides); the
 * median of blocks of 16 is printed. Run it pinned (taskset -c 0).
 *
 * Output, one line (key=value, microseconds of CPU):
 *   keygen_us=.. sign_us=.. verify_us=.. agent_us=.. server_us=.. svid_us=..
 * agent_us = keygen + sign + verify, server_us = sign + verify,
 * svid_us = their sum. A storm of N SVIDs on C cores cannot take less than
 * N * svid_us / C of wall time.
 *
 * Usage: bench_crypto_floor [-t SECONDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#define BLOCK 16
#define MAX_BLOCKS 100000
#define MSG_LEN 450 /* a leaf's TBSCertificate, about */

static double
cpu_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void
die(const char *what)
{
	fprintf(stderr, "bench_crypto_floor: %s failed\n", what);
	exit(1);
}

enum op { OP_KEYGEN, OP_SIGN, OP_VERIFY };

struct state {
	EVP_PKEY_CTX *gen;
	EVP_PKEY *key;
	unsigned char msg[MSG_LEN];
	unsigned char sig[80];
	size_t sig_len;
};

static void
run_op(struct state *st, enum op op)
{
	EVP_MD_CTX *md = NULL;
	EVP_PKEY *k = NULL;

	switch (op) {
	case OP_KEYGEN:
		if (EVP_PKEY_generate(st->gen, &k) != 1)
			die("EVP_PKEY_generate");
		EVP_PKEY_free(k);
		return;
	case OP_SIGN:
		st->sig_len = sizeof(st->sig);
		if ((md = EVP_MD_CTX_new()) == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, st->key) != 1 ||
		    EVP_DigestSign(md, st->sig, &st->sig_len, st->msg, sizeof(st->msg)) != 1)
			die("EVP_DigestSign");
		break;
	case OP_VERIFY:
		if ((md = EVP_MD_CTX_new()) == NULL ||
		    EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, st->key) != 1 ||
		    EVP_DigestVerify(md, st->sig, st->sig_len, st->msg, sizeof(st->msg)) != 1)
			die("EVP_DigestVerify");
		break;
	}
	EVP_MD_CTX_free(md);
}

/* Median CPU µs of one `op`, over blocks of BLOCK for about `seconds`. */
static double
measure(struct state *st, enum op op, double seconds)
{
	static double samples[MAX_BLOCKS];
	size_t n = 0;
	double total = 0;

	for (int i = 0; i < BLOCK; i++) /* warm up */
		run_op(st, op);
	while (total < seconds * 1e6 && n < MAX_BLOCKS) {
		double c0 = cpu_us();
		for (int i = 0; i < BLOCK; i++)
			run_op(st, op);
		double dt = cpu_us() - c0;
		samples[n++] = dt / BLOCK;
		total += dt;
	}
	qsort(samples, n, sizeof(double), cmp_double);
	return samples[n / 2];
}

int
main(int argc, char **argv)
{
	double seconds = 1.5;
	int opt;
	struct state st;

	while ((opt = getopt(argc, argv, "t:")) != -1) {
		if (opt == 't')
			seconds = atof(optarg);
		else {
			fprintf(stderr, "usage: bench_crypto_floor [-t SECONDS]\n");
			return 2;
		}
	}
	if (seconds <= 0 || seconds > 600) {
		fprintf(stderr, "bench_crypto_floor: -t must be in (0, 600]\n");
		return 2;
	}
	memset(&st, 0, sizeof(st));
	for (size_t i = 0; i < sizeof(st.msg); i++)
		st.msg[i] = (unsigned char)(i * 131u + 7u);
	if ((st.gen = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL || EVP_PKEY_keygen_init(st.gen) != 1 ||
	    EVP_PKEY_CTX_set_group_name(st.gen, "P-256") != 1 || EVP_PKEY_generate(st.gen, &st.key) != 1)
		die("P-256 key generation set-up");
	run_op(&st, OP_SIGN); /* a signature for the verify loop */

	double keygen = measure(&st, OP_KEYGEN, seconds / 3);
	double sign = measure(&st, OP_SIGN, seconds / 3);
	double verify = measure(&st, OP_VERIFY, seconds / 3);
	printf("keygen_us=%.1f sign_us=%.1f verify_us=%.1f agent_us=%.1f server_us=%.1f svid_us=%.1f\n", keygen, sign,
	    verify, keygen + sign + verify, sign + verify, keygen + 2 * sign + 2 * verify);
	EVP_PKEY_free(st.key);
	EVP_PKEY_CTX_free(st.gen);
	return 0;
}
