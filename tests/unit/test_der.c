/* test_der.c: walking concatenated DER certificates, concatenation, PEM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "lib/caps.h"
#include "lib/der.h"
#include "testutil_x509.h"

/* Three certificates (root, intermediate, leaf) as X509 and as DER. */
struct fixture {
	struct tu_pki pki;
	X509 *leaf;
	struct ly_buf one[3]; /* leaf, intermediate, root */
	struct ly_buf chain;  /* the three concatenated */
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	tu_pki_init(&f->pki);
	struct tu_spec ls = tu_leaf_spec("spiffe://example.org/web");
	f->leaf = tu_make(&ls, f->pki.leaf_key, f->pki.inter, f->pki.int_key);
	X509 *certs[3] = { f->leaf, f->pki.inter, f->pki.root };
	for (int i = 0; i < 3; i++)
		tu_der(certs[i], &f->one[i]);
	tu_chain(certs, 3, &f->chain);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	for (int i = 0; i < 3; i++)
		ly_buf_free(&f->one[i]);
	ly_buf_free(&f->chain);
	X509_free(f->leaf);
	tu_pki_free(&f->pki);
	free(f);
	return 0;
}

/* `len` bytes of `base` with `extra` appended, in an exact-size allocation. */
static uint8_t *
with_suffix(const struct ly_buf *base, const void *extra, size_t extra_len, size_t *len)
{
	uint8_t *p = malloc(base->len + extra_len);
	assert_non_null(p);
	memcpy(p, base->data, base->len);
	memcpy(p + base->len, extra, extra_len);
	*len = base->len + extra_len;
	return p;
}

static void
test_split_spans(void **state)
{
	struct fixture *f = *state;
	struct ly_der_span spans[4];
	size_t count = 0;
	assert_int_equal(ly_der_split(f->chain.data, f->chain.len, 4, LY_CHAIN_DER_MAX, spans, &count, NULL), LY_OK);
	assert_int_equal(count, 3);
	size_t off = 0;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(spans[i].off, off);
		assert_int_equal(spans[i].len, f->one[i].len);
		assert_memory_equal(f->chain.data + off, f->one[i].data, f->one[i].len);
		off += f->one[i].len;
	}
	/* Count only. */
	assert_int_equal(ly_der_split(f->chain.data, f->chain.len, 3, LY_CHAIN_DER_MAX, NULL, &count, NULL), LY_OK);
	assert_int_equal(count, 3);
}

static void
test_split_refusals(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	size_t count = 99, len = 0;

	/* Empty input. */
	assert_int_equal(ly_der_split(f->chain.data, 0, 4, LY_CHAIN_DER_MAX, NULL, &count, &err), LY_E_INVALID);
	assert_int_equal(count, 0);
	assert_int_equal(ly_der_split(NULL, 5, 4, LY_CHAIN_DER_MAX, NULL, &count, &err), LY_E_INVALID);

	/* One garbage byte after the last certificate. */
	uint8_t *p = with_suffix(&f->chain, "\x00", 1, &len);
	assert_int_equal(ly_der_split(p, len, 4, LY_CHAIN_DER_MAX, NULL, &count, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "certificate 3"));
	free(p);
	/* A second, truncated certificate after the first. */
	p = with_suffix(&f->one[0], f->one[1].data, f->one[1].len - 1, &len);
	assert_int_equal(ly_der_split(p, len, 4, LY_CHAIN_DER_MAX, NULL, &count, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "truncated"));
	free(p);

	/* Over the count cap: three certificates, at most two. */
	assert_int_equal(ly_der_split(f->chain.data, f->chain.len, 2, LY_CHAIN_DER_MAX, NULL, &count, &err),
	    LY_E_LIMIT);
	/* Over the total cap. */
	assert_int_equal(ly_der_split(f->chain.data, f->chain.len, 4, f->chain.len - 1, NULL, &count, &err),
	    LY_E_LIMIT);

	/* Headers a certificate cannot have; each with the rule it breaks. */
	static const struct {
		const char *rule;
		uint8_t bytes[8];
		size_t len;
	} bad[] = {
		{ "not a SEQUENCE", { 0x31, 0x01, 0x00 }, 3 },
		{ "indefinite length", { 0x30, 0x80, 0x00, 0x00 }, 4 },
		{ "not minimally encoded", { 0x30, 0x81, 0x01, 0x00 }, 4 },
		{ "not minimally encoded", { 0x30, 0x82, 0x00, 0x90 }, 4 },
		{ "longer than 4 bytes", { 0x30, 0x85, 0x01, 0x00, 0x00, 0x00, 0x00 }, 7 },
		{ "truncated length field", { 0x30, 0x82, 0x01 }, 3 },
		{ "truncated element header", { 0x30 }, 1 },
		{ "truncated (7 bytes declared, 3 left)", { 0x30, 0x05, 0x00 }, 3 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* An exact-size copy, so a read past the end is caught by ASan. */
		uint8_t *exact = malloc(bad[i].len);
		assert_non_null(exact);
		memcpy(exact, bad[i].bytes, bad[i].len);
		ly_status rc = ly_der_split(exact, bad[i].len, 4, LY_CHAIN_DER_MAX, NULL, &count, &err);
		free(exact);
		if (rc != LY_E_INVALID || strstr(err.msg, bad[i].rule) == NULL)
			fail_msg("%s: got %d (%s)", bad[i].rule, rc, err.msg);
	}
}

/* An element declaring one byte more than LY_CERT_DER_MAX is refused as too big. */
static void
test_split_cert_over_cap(void **state)
{
	size_t clen = LY_CERT_DER_MAX + 1 - 4;
	size_t len = 4 + clen;
	uint8_t *p = calloc(1, len);
	assert_non_null(p);
	p[0] = 0x30;
	p[1] = 0x82;
	p[2] = (uint8_t)(clen >> 8);
	p[3] = (uint8_t)clen;
	struct ly_error err;
	size_t count;
	assert_int_equal(ly_der_split(p, len, 4, LY_CHAIN_DER_MAX, NULL, &count, &err), LY_E_LIMIT);
	assert_non_null(strstr(err.msg, "certificate 0"));
	/* Exactly at the cap the header is fine (the contents are not a certificate). */
	clen -= 1;
	p[2] = (uint8_t)(clen >> 8);
	p[3] = (uint8_t)clen;
	assert_int_equal(ly_der_split(p, len - 1, 4, LY_CHAIN_DER_MAX, NULL, &count, &err), LY_OK);
	STACK_OF(X509) *sk = NULL;
	assert_int_equal(ly_der_parse_certs(p, len - 1, 4, LY_CHAIN_DER_MAX, &sk, &err), LY_E_INVALID);
	assert_null(sk);
	free(p);
}

static void
test_parse_certs(void **state)
{
	struct fixture *f = *state;
	STACK_OF(X509) *sk = NULL;
	assert_int_equal(ly_der_parse_chain(f->chain.data, f->chain.len, &sk, NULL), LY_OK);
	assert_int_equal(sk_X509_num(sk), 3);
	assert_int_equal(X509_cmp(sk_X509_value(sk, 0), f->leaf), 0);
	assert_int_equal(X509_cmp(sk_X509_value(sk, 2), f->pki.root), 0);

	/* And back to the same bytes. */
	struct ly_buf back = LY_BUF_INIT;
	assert_int_equal(ly_der_from_x509s(sk, LY_CHAIN_DER_MAX, &back, NULL), LY_OK);
	assert_int_equal(back.len, f->chain.len);
	assert_memory_equal(back.data, f->chain.data, back.len);
	ly_buf_free(&back);
	assert_int_equal(ly_der_from_x509s(sk, f->chain.len - 1, &back, NULL), LY_E_LIMIT);
	sk_X509_pop_free(sk, X509_free);

	assert_int_equal(ly_der_parse_bundle(f->chain.data, f->chain.len, &sk, NULL), LY_OK);
	sk_X509_pop_free(sk, X509_free);
}

static void
test_parse_certs_refusals(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	STACK_OF(X509) *sk = NULL;
	size_t len;

	/* A well-formed SEQUENCE that is not a certificate, after a good one. */
	static const uint8_t notcert[] = { 0x30, 0x03, 0x02, 0x01, 0x00 };
	uint8_t *p = with_suffix(&f->one[0], notcert, sizeof(notcert), &len);
	assert_int_equal(ly_der_parse_chain(p, len, &sk, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "certificate 1"));
	assert_null(sk);
	free(p);

	/*
	 * A certificate whose outer length claims one byte more than the
	 * certificate holds: the split accepts it, the parse must not.
	 */
	struct ly_buf c = f->one[0];
	assert_int_equal(c.data[0], 0x30);
	assert_int_equal(c.data[1], 0x82);
	p = with_suffix(&c, "\x00", 1, &len);
	size_t inner = ((size_t)p[2] << 8 | p[3]) + 1;
	p[2] = (uint8_t)(inner >> 8);
	p[3] = (uint8_t)inner;
	assert_int_equal(ly_der_parse_chain(p, len, &sk, &err), LY_E_INVALID);
	X509 *x = NULL;
	assert_int_equal(ly_der_parse_one(p, len, &x, &err), LY_E_INVALID);
	assert_null(x);
	free(p);

	/* Count cap: the chain caps refuse LY_CHAIN_CERTS_MAX + 1 certificates. */
	struct ly_buf many = LY_BUF_INIT;
	for (int i = 0; i <= LY_CHAIN_CERTS_MAX; i++)
		assert_int_equal(ly_buf_append(&many, f->one[0].data, f->one[0].len, (size_t)1 << 24, NULL), LY_OK);
	assert_int_equal(ly_der_parse_chain(many.data, many.len, &sk, &err), LY_E_LIMIT);
	assert_int_equal(ly_der_parse_chain(many.data, many.len - f->one[0].len, &sk, &err), LY_OK);
	assert_int_equal(sk_X509_num(sk), LY_CHAIN_CERTS_MAX);
	sk_X509_pop_free(sk, X509_free);
	ly_buf_free(&many);
}

static void
test_parse_one(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	X509 *x = NULL;
	assert_int_equal(ly_der_parse_one(f->one[1].data, f->one[1].len, &x, NULL), LY_OK);
	assert_int_equal(X509_cmp(x, f->pki.inter), 0);
	X509_free(x);
	x = NULL;
	/* Two certificates are not one. */
	assert_int_equal(ly_der_parse_one(f->chain.data, f->chain.len, &x, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "trailing"));
	assert_int_equal(ly_der_parse_one(f->one[1].data, f->one[1].len - 1, &x, &err), LY_E_INVALID);
	assert_int_equal(ly_der_parse_one(f->one[1].data, 0, &x, &err), LY_E_INVALID);
	assert_null(x);
}

static void
test_concat(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	struct ly_buf out = LY_BUF_INIT;
	struct ly_der_view parts[3] = {
		{ f->one[0].data, f->one[0].len },
		{ f->one[1].data, f->one[1].len },
		{ f->one[2].data, f->one[2].len },
	};
	assert_int_equal(ly_der_concat(parts, 3, 3, LY_CHAIN_DER_MAX, &out, NULL), LY_OK);
	assert_int_equal(out.len, f->chain.len);
	assert_memory_equal(out.data, f->chain.data, out.len);
	ly_buf_free(&out);

	/* A part may hold several certificates. */
	struct ly_der_view two[2] = { { f->chain.data, f->chain.len }, { f->one[0].data, f->one[0].len } };
	assert_int_equal(ly_der_concat(two, 2, 4, LY_CHAIN_DER_MAX, &out, NULL), LY_OK);
	ly_buf_free(&out);
	/* Over the count cap across parts, and over the byte cap. */
	assert_int_equal(ly_der_concat(two, 2, 3, LY_CHAIN_DER_MAX, &out, &err), LY_E_LIMIT);
	assert_non_null(strstr(err.msg, "part 1"));
	assert_int_equal(ly_der_concat(two, 2, 4, f->chain.len, &out, &err), LY_E_LIMIT);
	/* A part that is not whole certificates. */
	struct ly_der_view bad[2] = { { f->one[0].data, f->one[0].len }, { f->one[1].data, f->one[1].len - 3 } };
	assert_int_equal(ly_der_concat(bad, 2, 4, LY_CHAIN_DER_MAX, &out, &err), LY_E_INVALID);
	assert_int_equal(ly_der_concat(parts, 0, 4, LY_CHAIN_DER_MAX, &out, &err), LY_E_INVALID);
	assert_null(out.data);
}

static void
test_pem_round_trip(void **state)
{
	struct fixture *f = *state;
	struct ly_buf pem = LY_BUF_INIT, der = LY_BUF_INIT;
	assert_int_equal(ly_der_certs_to_pem(f->chain.data, f->chain.len, 3, LY_CHAIN_DER_MAX, &pem, NULL), LY_OK);
	const char *text = (const char *)pem.data;
	assert_int_equal(strlen(text), pem.len);
	size_t blocks = 0;
	for (const char *s = text; (s = strstr(s, "-----BEGIN CERTIFICATE-----\n")) != NULL; s++)
		blocks++;
	assert_int_equal(blocks, 3);
	assert_int_equal(ly_pem_to_der_certs(text, pem.len, 3, LY_CHAIN_DER_MAX, &der, NULL), LY_OK);
	assert_int_equal(der.len, f->chain.len);
	assert_memory_equal(der.data, f->chain.data, der.len);
	ly_buf_free(&der);

	/* OpenSSL reads what we wrote. */
	BIO *bio = BIO_new_mem_buf(pem.data, (int)pem.len);
	X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	assert_non_null(x);
	assert_int_equal(X509_cmp(x, f->leaf), 0);
	X509_free(x);
	BIO_free(bio);

	/* Text around and between blocks is ignored (openssl x509 -text output). */
	size_t tlen = pem.len + 64;
	char *around = malloc(tlen);
	assert_non_null(around);
	int n = snprintf(around, tlen, "Certificate:\n  Data: ...\n%s# end\n", text);
	assert_int_equal(ly_pem_to_der_certs(around, (size_t)n, 3, LY_CHAIN_DER_MAX, &der, NULL), LY_OK);
	assert_int_equal(der.len, f->chain.len);
	ly_buf_free(&der);
	free(around);

	/* Caps: three blocks with a cap of two; total over the byte cap. */
	assert_int_equal(ly_pem_to_der_certs(text, pem.len, 2, LY_CHAIN_DER_MAX, &der, NULL), LY_E_LIMIT);
	assert_int_equal(ly_pem_to_der_certs(text, pem.len, 3, f->chain.len - 1, &der, NULL), LY_E_LIMIT);
	/* Valid PEM padded with blank lines to one byte over the PEM cap. */
	char *huge = malloc((size_t)LY_PEM_FILE_MAX + 1);
	assert_non_null(huge);
	memset(huge, '\n', (size_t)LY_PEM_FILE_MAX + 1);
	memcpy(huge, text, pem.len);
	assert_int_equal(ly_pem_to_der_certs(huge, (size_t)LY_PEM_FILE_MAX + 1, 3, LY_CHAIN_DER_MAX, &der, NULL),
	    LY_E_LIMIT);
	assert_int_equal(ly_pem_to_der_certs(huge, (size_t)LY_PEM_FILE_MAX, 3, LY_CHAIN_DER_MAX, &der, NULL), LY_OK);
	ly_buf_free(&der);
	free(huge);
	assert_null(der.data);
	ly_buf_free(&pem);
}

static void
test_pem_refusals(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	struct ly_buf der = LY_BUF_INIT, pem = LY_BUF_INIT;
	char buf[8192];

	assert_int_equal(ly_pem_to_der_certs("", 0, 4, LY_CHAIN_DER_MAX, &der, &err), LY_E_INVALID);
	assert_int_equal(ly_pem_to_der_certs("no blocks here\n", 15, 4, LY_CHAIN_DER_MAX, &der, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "no CERTIFICATE"));

	/* A private key block in a bundle file. */
	snprintf(buf, sizeof(buf), "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n");
	assert_int_equal(ly_pem_to_der_certs(buf, strlen(buf), 4, LY_CHAIN_DER_MAX, &der, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "PRIVATE KEY"));

	/* Another label carrying a valid certificate. */
	assert_int_equal(ly_pem_encode("TRUSTED CERTIFICATE", f->one[0].data, f->one[0].len, &pem, NULL), LY_OK);
	assert_int_equal(ly_pem_to_der_certs((const char *)pem.data, pem.len, 4, LY_CHAIN_DER_MAX, &der, &err),
	    LY_E_INVALID);
	ly_buf_free(&pem);

	/* One block holding two certificates. */
	assert_int_equal(ly_pem_encode("CERTIFICATE", f->chain.data, f->chain.len, &pem, NULL), LY_OK);
	assert_int_equal(ly_pem_to_der_certs((const char *)pem.data, pem.len, 4, LY_CHAIN_DER_MAX, &der, &err),
	    LY_E_LIMIT);
	assert_non_null(strstr(err.msg, "PEM block 0"));
	ly_buf_free(&pem);

	/* A good block followed by one whose base64 is broken, and one cut short. */
	assert_int_equal(ly_pem_encode("CERTIFICATE", f->one[0].data, f->one[0].len, &pem, NULL), LY_OK);
	snprintf(buf, sizeof(buf), "%s-----BEGIN CERTIFICATE-----\nMI!!IB\n-----END CERTIFICATE-----\n",
	    (const char *)pem.data);
	assert_int_equal(ly_pem_to_der_certs(buf, strlen(buf), 4, LY_CHAIN_DER_MAX, &der, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "PEM block 1"));
	assert_int_equal(ly_pem_to_der_certs((const char *)pem.data, pem.len - 10, 4, LY_CHAIN_DER_MAX, &der, &err),
	    LY_E_INVALID);

	/* PEM headers. */
	const char *body = strchr((const char *)pem.data, '\n') + 1;
	snprintf(buf, sizeof(buf), "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\n%s", body);
	assert_int_equal(ly_pem_to_der_certs(buf, strlen(buf), 4, LY_CHAIN_DER_MAX, &der, &err), LY_E_INVALID);

	ly_buf_free(&pem);

	/* Not a certificate inside the block. */
	struct ly_buf blk = LY_BUF_INIT;
	assert_int_equal(ly_pem_encode("CERTIFICATE", (const uint8_t *)"\x31\x00", 2, &blk, NULL), LY_OK);
	assert_int_equal(ly_pem_to_der_certs((const char *)blk.data, blk.len, 4, LY_CHAIN_DER_MAX, &der, &err),
	    LY_E_INVALID);
	ly_buf_free(&blk);
	assert_null(der.data);
	assert_null(pem.data);
}

static void
test_pem_encode(void **state)
{
	struct ly_buf pem = LY_BUF_INIT;
	uint8_t data[100];
	for (int i = 0; i < 100; i++)
		data[i] = (uint8_t)i;
	/* 48 bytes per 64-column line; the last line shorter. */
	assert_int_equal(ly_pem_encode("TEST", data, 100, &pem, NULL), LY_OK);
	const char *expect_head = "-----BEGIN TEST-----\n";
	assert_true(strncmp((const char *)pem.data, expect_head, strlen(expect_head)) == 0);
	const char *l1 = (const char *)pem.data + strlen(expect_head);
	const char *l2 = strchr(l1, '\n') + 1;
	const char *l3 = strchr(l2, '\n') + 1;
	assert_int_equal(l2 - l1, 65);
	assert_int_equal(l3 - l2, 65);
	assert_true(strncmp(strchr(l3, '\n') + 1, "-----END TEST-----\n", 19) == 0);
	assert_int_equal(strlen((const char *)pem.data), pem.len);
	ly_buf_free(&pem);
	/* Exactly one line. */
	assert_int_equal(ly_pem_encode("TEST", data, 48, &pem, NULL), LY_OK);
	assert_int_equal(pem.len, strlen("-----BEGIN TEST-----\n") + 65 + strlen("-----END TEST-----\n"));
	ly_buf_free(&pem);
	assert_int_equal(ly_pem_encode("TEST", data, 0, &pem, NULL), LY_E_INVALID);
}

static void
test_pem_files(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	struct ly_buf pem = LY_BUF_INIT, der = LY_BUF_INIT;
	assert_int_equal(ly_der_certs_to_pem(f->chain.data, f->chain.len, 3, LY_CHAIN_DER_MAX, &pem, NULL), LY_OK);
	char path[] = "/tmp/lanyard-test-bundle-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, pem.data, pem.len), (ssize_t)pem.len);
	close(fd);
	assert_int_equal(ly_pem_file_to_der_certs(path, LY_BUNDLE_CERTS_MAX, LY_BUNDLE_DER_MAX, &der, NULL), LY_OK);
	assert_int_equal(der.len, f->chain.len);
	assert_memory_equal(der.data, f->chain.data, der.len);
	ly_buf_free(&der);
	/* Error messages name the file. */
	assert_int_equal(ly_pem_file_to_der_certs(path, 2, LY_BUNDLE_DER_MAX, &der, &err), LY_E_LIMIT);
	assert_non_null(strstr(err.msg, path));
	unlink(path);
	assert_int_equal(ly_pem_file_to_der_certs(path, 4, LY_BUNDLE_DER_MAX, &der, &err), LY_E_IO);
	assert_int_equal(ly_pem_file_to_der_certs("/", 4, LY_BUNDLE_DER_MAX, &der, &err), LY_E_IO);
	assert_int_equal(ly_pem_file_to_der_certs("/dev/null", 4, LY_BUNDLE_DER_MAX, &der, &err), LY_E_IO);
	assert_non_null(strstr(err.msg, "not a regular file"));
	assert_null(der.data);
	ly_buf_free(&pem);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_split_spans),
		cmocka_unit_test(test_split_refusals),
		cmocka_unit_test(test_split_cert_over_cap),
		cmocka_unit_test(test_parse_certs),
		cmocka_unit_test(test_parse_certs_refusals),
		cmocka_unit_test(test_parse_one),
		cmocka_unit_test(test_concat),
		cmocka_unit_test(test_pem_round_trip),
		cmocka_unit_test(test_pem_refusals),
		cmocka_unit_test(test_pem_encode),
		cmocka_unit_test(test_pem_files),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
