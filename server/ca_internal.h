/*
 * ca_internal.h: the parts of the CA (ca.h) shared between its files, not
 * for other modules:
 *  - ca_der.c: a bounded DER reader and writer, certificate assembly and
 *    signing (the fast leaf path of ca.h, "Cost");
 *  - ca_csr.c: the strict PKCS#10 parser and its signature check;
 *  - ca_store.c: the files in <data_dir>/ca (atomic writes, slot format);
 *  - ca_slotfile.c: a slot to its file and back, and loading every slot;
 *  - ca_issue.c: SVID issuance (X.509 leaves, JWT-SVIDs);
 *  - ca.c: slots, rotation, the bundle, the upstream CA, open and free.
 *
 * Ownership: spans (struct ca_span) point into the caller's buffers and
 * live as long as them. Everything else is documented per function.
 */
#ifndef LANYARD_SERVER_CA_INTERNAL_H
#define LANYARD_SERVER_CA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "server/ca.h"

/* A borrowed run of bytes. */
struct ca_span {
	const uint8_t *p;
	size_t n;
};

/* ---- DER reader: every length checked, definite minimal lengths only ---- */

/* Input still to read. */
struct ca_dr {
	const uint8_t *p;
	size_t n;
};

/*
 * Reads one TLV. Single-byte tags only (high tag numbers refused);
 * definite lengths in their shortest form, at most 3 length octets.
 * *val gets the contents; `whole` (may be NULL) the whole TLV. False when
 * malformed or nothing is left.
 */
bool ca_dr_next(struct ca_dr *in, uint8_t *tag, struct ca_dr *val, struct ca_span *whole);
/* ca_dr_next that also requires `tag`. */
bool ca_dr_expect(struct ca_dr *in, uint8_t tag, struct ca_dr *val, struct ca_span *whole);
/* True when `v` holds exactly `len` bytes equal to `p`. */
bool ca_dr_equal(const struct ca_dr *v, const uint8_t *p, size_t len);

/* ---- DER writer into a fixed buffer; an overflow is sticky ---- */

struct ca_dw {
	uint8_t *p;
	size_t len, cap;
	bool overflow;
};

void ca_dw_init(struct ca_dw *w, uint8_t *buf, size_t cap);
void ca_dw_raw(struct ca_dw *w, const void *p, size_t n);
void ca_dw_tlv(struct ca_dw *w, uint8_t tag, const void *p, size_t n);
/* Opens a constructed element; returns the mark that ca_dw_close needs. Contents up to 65535 bytes. */
size_t ca_dw_open(struct ca_dw *w, uint8_t tag);
void ca_dw_close(struct ca_dw *w, size_t mark);
/* An INTEGER from `n` unsigned big-endian bytes (minimal, non-negative). */
void ca_dw_uint(struct ca_dw *w, const uint8_t *be, size_t n);
/* UTCTime for 1950..2049, GeneralizedTime otherwise (RFC 5280 §4.1.2.5). */
void ca_dw_time(struct ca_dw *w, time_t t);

/* ---- algorithms ---- */

/* Digests fetched once (EVP_MD_fetch); ca_crypto_init/cleanup. */
struct ca_crypto {
	EVP_MD *sha1, *sha256, *sha384, *sha512;
	/* Public-only template keys on P-256, P-384, P-521 (ca_csr.c imports by dup + set point). */
	EVP_PKEY *ec_tmpl[3];
};

ly_status ca_crypto_init(struct ca_crypto *c, struct ly_error *err) LY_MUST_CHECK;
void ca_crypto_cleanup(struct ca_crypto *c);

/*
 * How `key` signs certificates: the digest (borrowed from `c`) and the
 * DER AlgorithmIdentifier (into `alg`, at least 32 bytes). EC: ECDSA with
 * SHA-256/384/512 by curve size; RSA: PKCS#1 v1.5 with SHA-256.
 */
ly_status ca_sig_alg(const struct ca_crypto *c, const EVP_PKEY *key, const EVP_MD **md, uint8_t *alg,
    size_t *alg_len, struct ly_error *err) LY_MUST_CHECK;

/* A signing context for `key` with `md` set (EVP_PKEY_sign ready). *out: EVP_PKEY_CTX_free. */
ly_status ca_sign_ctx_new(EVP_PKEY *key, const EVP_MD *md, EVP_PKEY_CTX **out, struct ly_error *err) LY_MUST_CHECK;

/* ---- certificates ---- */

#define CA_MAX_EXTS 8

/* Everything a TBSCertificate holds, as DER pieces (the writer adds the framing). */
struct ca_cert_spec {
	const uint8_t *serial; /* 16 random bytes */
	struct ca_span alg;    /* signature AlgorithmIdentifier */
	struct ca_span issuer; /* Name DER */
	struct ca_span subject;
	struct ca_span spki;   /* SubjectPublicKeyInfo DER */
	time_t not_before, not_after;
	struct ca_span exts[CA_MAX_EXTS]; /* each one or more whole Extension DERs */
	size_t nexts;
};

/*
 * Writes and signs a certificate into `w`: hashes the TBS with `md` in
 * `mdctx` (re-initialised) and signs the digest with `sctx`
 * (ca_sign_ctx_new or a duplicate of one).
 */
ly_status ca_cert_write(const struct ca_cert_spec *s, EVP_PKEY_CTX *sctx, EVP_MD_CTX *mdctx, const EVP_MD *md,
    struct ca_dw *w, struct ly_error *err) LY_MUST_CHECK;

/* The subjectPublicKey bits (BIT STRING contents after the unused-bits octet) of a SPKI DER. */
bool ca_spki_key_bits(struct ca_span spki, struct ca_span *bits);

/* RFC 5280 §4.2.1.2 (1): SHA-1 of the subjectPublicKey bits, 20 bytes into `out`. */
ly_status ca_key_id(const struct ca_crypto *c, EVP_MD_CTX *mdctx, struct ca_span spki, uint8_t out[20],
    struct ly_error *err) LY_MUST_CHECK;

/* Extension encoders (whole Extension DER into `w`). */
void ca_ext_basic_constraints(struct ca_dw *w, bool ca, int pathlen);
void ca_ext_key_usage(struct ca_dw *w, bool ca, bool key_encipherment);
void ca_ext_eku_server_client(struct ca_dw *w);
void ca_ext_skid(struct ca_dw *w, const uint8_t *id, size_t len);
void ca_ext_akid(struct ca_dw *w, const uint8_t *id, size_t len);
/* SAN: one URI, then `ndns` DNS names. */
void ca_ext_san(struct ca_dw *w, bool critical, const char *uri, size_t uri_len, const char *const *dns,
    size_t ndns);
/* A Name: O=Lanyard, CN=`cn`, serialNumber=`serial` (printable). */
void ca_name_lanyard(struct ca_dw *w, const char *cn, const char *serial);
/* A Name with a single CN (UTF8String); `cn` at most 64 bytes. */
void ca_name_cn(struct ca_dw *w, const char *cn, size_t len);

/* The SubjectPublicKeyInfo DER of `key` (i2d_PUBKEY: slow, for CA keys only). `out` empty. */
ly_status ca_spki_of(const EVP_PKEY *key, struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;

/* ---- CSRs (ca_csr.c) ---- */

enum ca_key_alg { CA_KEY_P256 = 0, CA_KEY_P384 = 1, CA_KEY_P521 = 2, CA_KEY_RSA = 3 };

struct ca_csr {
	struct ca_span tbs;   /* certificationRequestInfo, the signed bytes */
	struct ca_span spki;  /* SubjectPublicKeyInfo, whole */
	struct ca_span point; /* EC: 0x04 || X || Y */
	enum ca_key_alg key_alg;
	const EVP_MD *md;     /* the signature's digest, borrowed from ca_crypto */
	struct ca_span sig;   /* signature value */
	struct ca_span uri;   /* the one URI SAN */
	size_t dns_count;
};

/*
 * Parses a PKCS#10 DER CSR strictly (the rules in ca.h), without checking
 * its signature. *out points into `der`.
 */
ly_status ca_csr_parse(const struct ca_crypto *c, const uint8_t *der, size_t len, struct ca_csr *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Imports the CSR's key and verifies the CSR's signature with it (hashing
 * in `mdctx`). *key_out (may be NULL) gets the key: EVP_PKEY_free.
 */
ly_status ca_csr_verify(const struct ca_crypto *c, EVP_MD_CTX *mdctx, const struct ca_csr *csr, EVP_PKEY **key_out,
    struct ly_error *err) LY_MUST_CHECK;

/* ---- files (ca_store.c) ---- */

/*
 * Opens (making them 0700 when absent) `data_dir` and its "ca"
 * subdirectory, and takes an exclusive lock on the latter. *dirfd: close().
 */
ly_status ca_store_open(const char *data_dir, int *dirfd, struct ly_error *err) LY_MUST_CHECK;
/* Writes `name` in `dirfd` atomically, mode 0600. */
ly_status ca_store_write(int dirfd, const char *name, const void *data, size_t len, struct ly_error *err)
    LY_MUST_CHECK;
/*
 * Reads `name` (a regular file of ours, 0600, at most `cap` bytes) into
 * `out` (NUL-terminated; free with ly_buf_free_secret: it may hold keys).
 * LY_E_NOT_FOUND when absent.
 */
ly_status ca_store_read(int dirfd, const char *name, size_t cap, struct ly_buf *out, struct ly_error *err)
    LY_MUST_CHECK;
/* Deletes `name` (absent is fine) and syncs the directory. */
ly_status ca_store_remove(int dirfd, const char *name, struct ly_error *err) LY_MUST_CHECK;
/*
 * Lists the names ending in ".slot" (stale temporary files are deleted on
 * the way). *names: `*count` malloc'd strings in a malloc'd array; free
 * with ca_store_names_free. More than `max` is LY_E_LIMIT.
 */
ly_status ca_store_list(int dirfd, size_t max, char ***names, size_t *count, struct ly_error *err) LY_MUST_CHECK;
void ca_store_names_free(char **names, size_t count);

/* ---- the CA's state, shared by ca.c, ca_slotfile.c and ca_issue.c ---- */

#define SLOT_MAGIC "lanyard-ca-slot 1"
#define SEQUENCE_FILE "bundle-sequence"
#define SLOT_ID_HEX 16

struct ca_slot {
	bool jwt;                 /* a JWT slot, else X.509 */
	char id[SLOT_ID_HEX + 1];
	time_t issued_at, activate_at, not_after;
	bool retired;             /* private keys dropped */
	bool compatible;          /* X.509: may sign in the configured mode (own root / this upstream CA) */
	struct ly_buf root_der;   /* X.509 with its own root; empty under the upstream CA */
	EVP_PKEY *root_key;
	struct ly_buf signing_der;
	EVP_PKEY *signing_key;
	char kid[LY_CA_KID_LEN + 1];
	EVP_PKEY *jwt_key;        /* private until retired, then public only */
};

/* What signing leaves under the active X.509 slot needs, prepared once per slot. */
struct ca_signer {
	const struct ca_slot *slot; /* NULL: not prepared */
	EVP_PKEY_CTX *sctx;
	const EVP_MD *md;
	uint8_t alg[32];
	size_t alg_len;
	struct ly_buf issuer;       /* the signing CA's subject Name DER */
	uint8_t ext_ec[256];        /* basicConstraints, keyUsage, EKU, AKID for EC leaves */
	size_t ext_ec_len;
	uint8_t ext_rsa[256];       /* the same with keyEncipherment, for RSA leaves */
	size_t ext_rsa_len;
	time_t not_before, not_after;
	struct ly_buf tail;         /* signing CA [+ upstream intermediates] DER */
};

struct ly_ca {
	char td[LY_TRUST_DOMAIN_MAX + 1];
	char td_uri[LY_TRUST_DOMAIN_MAX + 10]; /* "spiffe://" + td */
	enum ly_key_type key_type;
	int64_t ca_ttl, x509_ttl, jwt_ttl, delay;
	int dirfd;
	struct ca_crypto crypto;
	EVP_MD_CTX *mdctx;
	uint8_t *cert_buf, *var_buf; /* LY_CERT_DER_MAX each: scratch for one certificate */
	struct ca_slot *slots[LY_CA_SLOTS_MAX]; /* sorted by issued_at */
	size_t nslots;
	struct ca_slot *x509_active, *jwt_active;
	struct ca_signer signer;
	/* Upstream CA (upstream == true). */
	bool upstream;
	EVP_PKEY *up_key;
	X509 *up_cert;            /* the certificate whose key is up_key */
	struct ly_buf up_root;    /* the trust anchor */
	struct ly_buf up_tail;    /* up_cert and the intermediates above it, without the root */
	struct ly_buf up_subject; /* up_cert's subject Name DER */
	uint8_t up_skid[64];
	size_t up_skid_len;
	time_t up_not_after;      /* the earliest notAfter of the upstream chain */
	bool up_warned;
	struct ly_bundle *bundle;
	bool bundle_dirty;
	uint64_t seq;
	/* Several servers (ly_ca_set_published): slots issued after published_upto do not sign yet. */
	bool hold_unpublished;
	time_t published_upto;
};

/* ca_slotfile.c: "<x509|jwt>-<id>.slot" into `out`. */
void ca_slot_file_name(const struct ca_slot *s, char *out, size_t size);
/* ca_slotfile.c: frees a slot, wiping it; NULL is fine. */
void ca_slot_free(struct ca_slot *s);
/* ca_slotfile.c: adds a slot in issued_at order; LY_E_LIMIT over LY_CA_SLOTS_MAX. The CA then owns it. */
ly_status ca_slots_add(struct ly_ca *ca, struct ca_slot *s, struct ly_error *err) LY_MUST_CHECK;
/* A random positive 128-bit certificate serial. */
ly_status ca_random_serial(uint8_t serial[16], struct ly_error *err) LY_MUST_CHECK;

/* Writes slot `s`'s file (without private keys when `retired`), atomically. */
ly_status ca_slot_write(struct ly_ca *ca, const struct ca_slot *s, bool retired, struct ly_error *err)
    LY_MUST_CHECK;
/* Whether `issuer` issued `cert` (name, key identifier, signature). */
bool ca_issued_by(X509 *cert, X509 *issuer);
/* Reads and checks every slot file into ca->slots. */
ly_status ca_slots_load(struct ly_ca *ca, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_SERVER_CA_INTERNAL_H */
