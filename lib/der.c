/* der.c: concatenated DER certificates and PEM, see der.h. */
#include "der.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "fileread.h"

/* ASN.1 universal SEQUENCE, constructed: every certificate starts with it. */
#define DER_SEQUENCE 0x30

/*
 * Reads one DER element header at der[0..avail) and sets *total to the
 * element's whole size (header + contents). Only what a certificate can
 * be: a SEQUENCE with a definite length in minimal form, 1..4 length
 * bytes. Returns a static reason, or NULL when the header is fine (the
 * element may still run past `avail`: the caller checks).
 */
static const char *
der_element(const uint8_t *der, size_t avail, size_t *total)
{
	if (avail < 2)
		return "truncated element header";
	if (der[0] != DER_SEQUENCE)
		return "element is not a SEQUENCE";
	uint8_t b = der[1];
	if (b < 0x80) {
		*total = 2 + (size_t)b;
		return NULL;
	}
	if (b == 0x80)
		return "indefinite length (BER, not DER)";
	size_t nbytes = b & 0x7fu;
	if (nbytes > 4)
		return "length field longer than 4 bytes";
	if (avail < 2 + nbytes)
		return "truncated length field";
	if (der[2] == 0)
		return "length not minimally encoded";
	size_t clen = 0;
	for (size_t i = 0; i < nbytes; i++)
		clen = (clen << 8) | der[2 + i];
	if (clen < 0x80)
		return "length not minimally encoded";
	*total = 2 + nbytes + clen;
	return NULL;
}

ly_status
ly_der_split(const uint8_t *der, size_t len, size_t max_certs, size_t max_total, struct ly_der_span *spans,
    size_t *count, struct ly_error *err)
{
	*count = 0;
	if (der == NULL || len == 0)
		return ly_error_set(err, LY_E_INVALID, "no certificates: empty DER");
	if (len > max_total)
		return ly_error_set(err, LY_E_LIMIT, "DER certificates: %zu bytes, over the cap of %zu", len,
		    max_total);

	size_t off = 0, n = 0;
	while (off < len) {
		size_t total = 0;
		const char *why = der_element(der + off, len - off, &total);
		if (why != NULL)
			return ly_error_set(err, LY_E_INVALID, "certificate %zu at byte %zu: %s", n, off, why);
		if (total > LY_CERT_DER_MAX)
			return ly_error_set(err, LY_E_LIMIT, "certificate %zu: %zu bytes, over the cap of %d", n,
			    total, LY_CERT_DER_MAX);
		if (total > len - off)
			return ly_error_set(err, LY_E_INVALID,
			    "certificate %zu at byte %zu: truncated (%zu bytes declared, %zu left)", n, off, total,
			    len - off);
		if (n >= max_certs)
			return ly_error_set(err, LY_E_LIMIT, "more than %zu certificates", max_certs);
		if (spans != NULL) {
			spans[n].off = off;
			spans[n].len = total;
		}
		n++;
		off += total;
	}
	*count = n;
	return LY_OK;
}

/* d2i of exactly `len` bytes; `index` names the certificate in messages. */
static ly_status
parse_exact(const uint8_t *der, size_t len, size_t index, X509 **out, struct ly_error *err)
{
	const unsigned char *p = der;
	X509 *x = d2i_X509(NULL, &p, (long)len);
	if (x == NULL)
		return ly_error_openssl(err, LY_E_INVALID, "certificate %zu: not a valid X.509 certificate", index);
	if ((size_t)(p - der) != len) {
		X509_free(x);
		return ly_error_set(err, LY_E_INVALID, "certificate %zu: %zu trailing bytes inside its element",
		    index, len - (size_t)(p - der));
	}
	*out = x;
	return LY_OK;
}

/*
 * The spans of der's certificates, counted first so the array is only as
 * large as the input needs. *spans (*count of them) is the caller's to free.
 */
static ly_status
split_spans(const uint8_t *der, size_t len, size_t max_certs, size_t max_total, struct ly_der_span **spans,
    size_t *count, struct ly_error *err)
{
	struct ly_der_span *v;
	ly_status rc;

	*spans = NULL;
	*count = 0;
	LY_TRY(ly_der_split(der, len, max_certs, max_total, NULL, count, err));
	v = calloc(*count, sizeof(*v));
	if (v == NULL)
		return ly_error_set(err, LY_E_NOMEM, "allocating %zu spans", *count);
	rc = ly_der_split(der, len, *count, max_total, v, count, err);
	if (rc != LY_OK) {
		free(v);
		return rc;
	}
	*spans = v;
	return LY_OK;
}

ly_status
ly_der_parse_certs(const uint8_t *der, size_t len, size_t max_certs, size_t max_total, STACK_OF(X509) **out,
    struct ly_error *err)
{
	struct ly_der_span *spans = NULL;
	STACK_OF(X509) *sk = NULL;
	size_t count = 0;
	ly_status rc;

	*out = NULL;
	if (max_certs == 0)
		return ly_error_set(err, LY_E_LIMIT, "no certificates allowed");
	LY_TRY(split_spans(der, len, max_certs, max_total, &spans, &count, err));
	sk = sk_X509_new_reserve(NULL, (int)count);
	if (sk == NULL) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "allocating a certificate stack");
		goto out;
	}
	for (size_t i = 0; i < count; i++) {
		X509 *x = NULL;
		rc = parse_exact(der + spans[i].off, spans[i].len, i, &x, err);
		if (rc != LY_OK)
			goto out;
		/* Cannot fail: space was reserved. */
		(void)sk_X509_push(sk, x);
	}
	*out = sk;
	sk = NULL;
	rc = LY_OK;
out:
	sk_X509_pop_free(sk, X509_free);
	free(spans);
	return rc;
}

ly_status
ly_der_parse_chain(const uint8_t *der, size_t len, STACK_OF(X509) **out, struct ly_error *err)
{
	return ly_der_parse_certs(der, len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, out, err);
}

ly_status
ly_der_parse_bundle(const uint8_t *der, size_t len, STACK_OF(X509) **out, struct ly_error *err)
{
	return ly_der_parse_certs(der, len, LY_BUNDLE_CERTS_MAX, LY_BUNDLE_DER_MAX, out, err);
}

ly_status
ly_der_parse_one(const uint8_t *der, size_t len, X509 **out, struct ly_error *err)
{
	size_t total = 0;

	*out = NULL;
	if (der == NULL || len == 0)
		return ly_error_set(err, LY_E_INVALID, "no certificate: empty DER");
	const char *why = der_element(der, len, &total);
	if (why != NULL)
		return ly_error_set(err, LY_E_INVALID, "certificate: %s", why);
	if (total > LY_CERT_DER_MAX)
		return ly_error_set(err, LY_E_LIMIT, "certificate: %zu bytes, over the cap of %d", total,
		    LY_CERT_DER_MAX);
	if (total > len)
		return ly_error_set(err, LY_E_INVALID, "certificate: truncated (%zu bytes declared, %zu given)",
		    total, len);
	if (total < len)
		return ly_error_set(err, LY_E_INVALID, "certificate: %zu trailing bytes after it", len - total);
	return parse_exact(der, len, 0, out, err);
}

ly_status
ly_der_concat(const struct ly_der_view *parts, size_t n, size_t max_certs, size_t max_total,
    struct ly_buf *out, struct ly_error *err)
{
	size_t total = 0, certs = 0;

	if (n == 0)
		return ly_error_set(err, LY_E_INVALID, "no certificates to concatenate");
	for (size_t i = 0; i < n; i++) {
		size_t c = 0;
		ly_status rc = ly_der_split(parts[i].der, parts[i].len, max_certs - certs, max_total - total, NULL,
		    &c, err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "part %zu", i);
		certs += c;
		total += parts[i].len;
	}
	uint8_t *p = malloc(total);
	if (p == NULL)
		return ly_error_set(err, LY_E_NOMEM, "allocating %zu bytes", total);
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		memcpy(p + off, parts[i].der, parts[i].len);
		off += parts[i].len;
	}
	ly_buf_adopt(out, p, total);
	return LY_OK;
}

ly_status
ly_der_from_x509s(const STACK_OF(X509) *certs, size_t max_total, struct ly_buf *out, struct ly_error *err)
{
	int n = sk_X509_num(certs);
	size_t total = 0;

	if (n <= 0)
		return ly_error_set(err, LY_E_INVALID, "no certificates to encode");
	for (int i = 0; i < n; i++) {
		int l = i2d_X509(sk_X509_value(certs, i), NULL);
		if (l <= 0)
			return ly_error_openssl(err, LY_E_CRYPTO, "certificate %d: DER encoding failed", i);
		if ((size_t)l > max_total - total)
			return ly_error_set(err, LY_E_LIMIT, "certificates: over the cap of %zu bytes", max_total);
		total += (size_t)l;
	}
	uint8_t *buf = malloc(total);
	if (buf == NULL)
		return ly_error_set(err, LY_E_NOMEM, "allocating %zu bytes", total);
	unsigned char *p = buf;
	for (int i = 0; i < n; i++) {
		if (i2d_X509(sk_X509_value(certs, i), &p) <= 0) {
			free(buf);
			return ly_error_openssl(err, LY_E_CRYPTO, "certificate %d: DER encoding failed", i);
		}
	}
	if ((size_t)(p - buf) != total) {
		free(buf);
		return ly_error_set(err, LY_E_INTERNAL, "certificates changed size while encoding");
	}
	ly_buf_adopt(out, buf, total);
	return LY_OK;
}

/* True when the newest queued OpenSSL error says the PEM input simply ended. */
static bool
pem_at_end(void)
{
	unsigned long e = ERR_peek_last_error();
	return ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

ly_status
ly_pem_to_der_certs(const char *pem, size_t len, size_t max_certs, size_t max_total, struct ly_buf *out,
    struct ly_error *err)
{
	struct ly_buf acc = LY_BUF_INIT;
	BIO *bio = NULL;
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	size_t blocks = 0;
	ly_status rc;

	if (len > LY_PEM_FILE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "PEM: %zu bytes, over the cap of %d", len, LY_PEM_FILE_MAX);
	if (pem == NULL || len == 0)
		return ly_error_set(err, LY_E_INVALID, "PEM: empty input, no certificates");
	ERR_clear_error();
	bio = BIO_new_mem_buf(pem, (int)len);
	if (bio == NULL)
		return ly_error_openssl(err, LY_E_NOMEM, "PEM: allocating a BIO");
	for (;;) {
		long dlen = 0;
		if (!PEM_read_bio_ex(bio, &name, &header, &data, &dlen, PEM_FLAG_ONLY_B64)) {
			if (pem_at_end()) {
				ERR_clear_error();
				break;
			}
			rc = ly_error_openssl(err, LY_E_INVALID, "PEM block %zu: malformed", blocks);
			goto out;
		}
		if (strcmp(name, PEM_STRING_X509) != 0) {
			rc = ly_error_set(err, LY_E_INVALID, "PEM block %zu: a \"%.64s\" block, only CERTIFICATE allowed",
			    blocks, name);
			goto out;
		}
		if (header[0] != '\0') {
			rc = ly_error_set(err, LY_E_INVALID, "PEM block %zu: PEM headers are not allowed", blocks);
			goto out;
		}
		size_t count = 0;
		rc = ly_der_split(data, (size_t)dlen, 1, LY_CERT_DER_MAX, NULL, &count, err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "PEM block %zu", blocks);
			goto out;
		}
		if (blocks >= max_certs) {
			rc = ly_error_set(err, LY_E_LIMIT, "PEM: more than %zu certificates", max_certs);
			goto out;
		}
		rc = ly_buf_append(&acc, data, (size_t)dlen, max_total, err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "PEM block %zu", blocks);
			goto out;
		}
		blocks++;
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_free(data);
		name = header = NULL;
		data = NULL;
	}
	if (blocks == 0) {
		rc = ly_error_set(err, LY_E_INVALID, "PEM: no CERTIFICATE block found");
		goto out;
	}
	ly_buf_take(out, &acc);
	rc = LY_OK;
out:
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(data);
	BIO_free(bio);
	ly_buf_free(&acc);
	return rc;
}

ly_status
ly_pem_file_to_der_certs(const char *path, size_t max_certs, size_t max_total, struct ly_buf *out,
    struct ly_error *err)
{
	struct ly_buf text = LY_BUF_INIT;

	LY_TRY(ly_pem_read_file(path, &text, err));
	ly_status rc = ly_pem_to_der_certs((const char *)text.data, text.len, max_certs, max_total, out, err);
	if (rc != LY_OK)
		(void)ly_error_wrap(err, rc, "%s", path);
	ly_buf_free(&text);
	return rc;
}

/* Size of the PEM block ly_pem_encode() writes, without the NUL. */
static size_t
pem_block_size(size_t label_len, size_t len)
{
	size_t lines = (len + 47) / 48;
	size_t b64 = 4 * ((len + 2) / 3);
	/* "-----BEGIN " label "-----\n" ... "-----END " label "-----\n" */
	return (11 + label_len + 6) + b64 + lines + (9 + label_len + 6);
}

/* Writes one block at `p` (pem_block_size bytes); returns the end. */
static char *
pem_block_write(char *p, const char *label, size_t label_len, const uint8_t *der, size_t len)
{
	memcpy(p, "-----BEGIN ", 11);
	p += 11;
	memcpy(p, label, label_len);
	p += label_len;
	memcpy(p, "-----\n", 6);
	p += 6;
	for (size_t off = 0; off < len; off += 48) {
		size_t chunk = len - off < 48 ? len - off : 48;
		/* EVP_EncodeBlock NUL-terminates: the '\n' overwrites it. */
		int n = EVP_EncodeBlock((unsigned char *)p, der + off, (int)chunk);
		p += n;
		*p++ = '\n';
	}
	memcpy(p, "-----END ", 9);
	p += 9;
	memcpy(p, label, label_len);
	p += label_len;
	memcpy(p, "-----\n", 6);
	p += 6;
	return p;
}

ly_status
ly_pem_encode(const char *label, const uint8_t *der, size_t len, struct ly_buf *out, struct ly_error *err)
{
	if (der == NULL || len == 0)
		return ly_error_set(err, LY_E_INVALID, "PEM: nothing to encode");
	if (len > LY_PEM_FILE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "PEM: %zu bytes, over the cap of %d", len, LY_PEM_FILE_MAX);
	size_t label_len = strlen(label);
	size_t size = pem_block_size(label_len, len);
	char *text = malloc(size + 1);
	if (text == NULL)
		return ly_error_set(err, LY_E_NOMEM, "allocating %zu bytes", size + 1);
	char *end = pem_block_write(text, label, label_len, der, len);
	*end = '\0';
	ly_buf_adopt(out, (uint8_t *)text, size);
	return LY_OK;
}

ly_status
ly_der_certs_to_pem(const uint8_t *der, size_t len, size_t max_certs, size_t max_total, struct ly_buf *out,
    struct ly_error *err)
{
	struct ly_der_span *spans = NULL;
	size_t count = 0, size = 0;
	const size_t label_len = strlen(PEM_STRING_X509);
	ly_status rc;

	LY_TRY(split_spans(der, len, max_certs, max_total, &spans, &count, err));
	for (size_t i = 0; i < count; i++)
		size += pem_block_size(label_len, spans[i].len);
	char *text = malloc(size + 1);
	if (text == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "allocating %zu bytes", size + 1);
		goto out;
	}
	char *p = text;
	for (size_t i = 0; i < count; i++)
		p = pem_block_write(p, PEM_STRING_X509, label_len, der + spans[i].off, spans[i].len);
	*p = '\0';
	ly_buf_adopt(out, (uint8_t *)text, size);
	rc = LY_OK;
out:
	free(spans);
	return rc;
}

ly_status
ly_pem_read_file(const char *path, struct ly_buf *out, struct ly_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return ly_error_set(err, LY_E_IO, "%s: cannot open: %s", path, strerror(errno));
	ly_status rc = ly_fileread_fd(fd, path, LY_PEM_FILE_MAX, out, err);
	close(fd);
	return rc;
}
