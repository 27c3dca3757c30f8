/*
 * state.h: what the agent persists in -dataDir, so that a restart needs no
 * new join token and serves every still-valid SVID at once, even while the
 * server is down (SPEC §4).
 *
 * Two files, written and read independently (a lost cache never costs the
 * agent its identity):
 *   LY_STATE_AGENT_FILE  its own SVID (chain, key, validity, renewal time)
 *                        and the trust bundles;
 *   LY_STATE_CACHE_FILE  the workload entries and their X.509-SVIDs (leaf,
 *                        intermediates, key, validity, renewal time).
 *
 * Format (version 1; every integer big-endian, signed ones two's complement):
 *
 *   file     = header body digest
 *   header   = "LYSTATE\0" (8) | version u16 = 1 | kind u16 | body_len u32
 *              kind 1: agent file, 2: cache file
 *   body     = record*        (body_len bytes)
 *   digest   = SHA-256 of header and body (32)
 *   record   = type u8 | len u32 | payload (len bytes, consumed exactly)
 *   str      = len u16 | bytes (no NUL; each field has its cap)
 *   blob     = len u32 | bytes
 *
 *   0x01 META   (first, exactly once) saved_at i64 | revision i64 |
 *               trust_domain str
 *   0x02 AGENT  (agent file, at most once) spiffe_id str | chain blob |
 *               key blob | not_before i64 | not_after i64 | renew_at_ms i64
 *   0x03 BUNDLE (agent file, up to LY_BUNDLE_SET_MAX, one per trust domain)
 *               trust_domain str | SPIFFE bundle (JWKS) blob
 *   0x10 ENTRY  (cache file, up to LY_AGENT_ENTRIES_MAX, IDs unique)
 *               entry_id str | spiffe_id str | parent_id str | hint str |
 *               x509_svid_ttl i32 | jwt_svid_ttl i32 | flags u8 (1 node,
 *               2 admin, 4 downstream) | revision i64 | created_at i64 |
 *               n u16 | n x (type str | value str) | n u16 | n x dns str |
 *               has_svid u8 (0 or 1) | [leaf blob | intermediates blob |
 *               key blob | not_before i64 | not_after i64 |
 *               renew_at_ms i64 | stale u8]
 *   0x11 ENTRY_FED (cache file; for an entry with federates_with, instead
 *               of ENTRY) as ENTRY, with after the DNS names:
 *               n u16 (1..LY_ENTRY_FEDERATES_WITH_MAX) | n x td str.
 *               An entry without federates_with is written as ENTRY, so
 *               a file without federation reads in an older agent.
 *
 * Parsing is strict: the whole file is refused (LY_E_INVALID, or
 * LY_E_LIMIT over a cap, with the record named) on a wrong magic, version
 * or kind, a digest mismatch, trailing bytes, an unknown record type, a
 * record not consumed exactly, a field over its cap, an unknown flag bit,
 * an entry that ly_entry_validate refuses, a duplicate, a chain that is not
 * whole DER certificates, an empty window. The agent then starts empty
 * rather than trust a damaged file. Expired SVIDs (not_after <= now) are
 * dropped on load, not refused. Workload SVIDs are not re-verified on
 * load unless a verifier is given (they were verified before they were
 * saved, and the file sits 0600 in a 0700 directory of the agent's user;
 * verifying 10,000 costs seconds). The agent's own SVID is never verified
 * here: verify it (verify.h, with the loaded bundle) before using it.
 *
 * Files are written atomically: a temporary file in the same directory
 * (mode 0600), written, fsync'd, renamed over the old one, then the
 * directory fsync'd; a crash at any point leaves the old file or the new
 * one, whole. Reading refuses files that are not regular, not owned by the
 * agent's user, or readable by group or others.
 *
 * Secrets: every buffer that holds a key (encoded state, file contents,
 * decoded keys) is wiped before it is freed; encoding sizes the output
 * first and writes it in one allocation, so no reallocation leaves a copy.
 *
 * Ownership: struct ly_agent_state is caller-owned (_init/_cleanup; cleanup
 * wipes the key and frees the bundle set). Encoded state and file
 * contents are struct ly_buf the caller frees with ly_buf_free_secret.
 * Threads: encoding reads the cache, so it runs on the loop thread;
 * ly_state_write_file and ly_state_read_file touch no shared state and may
 * run on a worker thread (uv_queue_work).
 */
#ifndef LANYARD_AGENT_STATE_H
#define LANYARD_AGENT_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/cache.h"
#include "agent/verify.h"
#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/error.h"

#define LY_STATE_AGENT_FILE "agent_state.bin"
#define LY_STATE_CACHE_FILE "svid_cache.bin"
#define LY_STATE_VERSION 1

enum ly_state_kind {
	LY_STATE_KIND_AGENT = 1,
	LY_STATE_KIND_CACHE = 2,
};

/* The agent's own identity and bundles. */
struct ly_agent_state {
	char trust_domain[LY_TRUST_DOMAIN_MAX + 1];
	int64_t saved_at; /* Unix seconds, set by encoding (from `now`) */
	bool has_svid;
	char spiffe_id[LY_SPIFFE_ID_MAX + 1];
	struct ly_buf chain; /* leaf first, concatenated DER */
	struct ly_buf key;   /* PKCS#8 DER: a secret */
	int64_t not_before, not_after, renew_at_ms;
	struct ly_bundle_set *bundles; /* owned; NULL when none */
};

void ly_agent_state_init(struct ly_agent_state *st);
/* Wipes the key, frees everything; leaves `st` initialized. */
void ly_agent_state_cleanup(struct ly_agent_state *st);

/*
 * Prepares -dataDir: creates it 0700 when missing; refuses one that is not
 * a directory or not owned by the agent's user; sets it to 0700 when its
 * mode is wider; removes temporary files a crash left behind.
 */
ly_status ly_state_dir_prepare(const char *dir, struct ly_error *err) LY_MUST_CHECK;

/* Encodes the agent file; `out` must be empty (free it with ly_buf_free_secret). */
ly_status ly_state_encode_agent(const struct ly_agent_state *st, int64_t now, struct ly_buf *out,
    struct ly_error *err) LY_MUST_CHECK;
/*
 * Decodes an agent file into `out` (initialized, empty): when
 * `expected_td` is not NULL the file must be for that trust domain. An
 * expired SVID (not_after <= now) is dropped (has_svid false). On failure
 * `out` is left empty.
 */
ly_status ly_state_decode_agent(const uint8_t *data, size_t len, const char *expected_td, int64_t now,
    struct ly_agent_state *out, struct ly_error *err) LY_MUST_CHECK;

/* Encodes the cache file from every entry and SVID of `c`; `out` must be empty. */
ly_status ly_state_encode_cache(const struct ly_cache *c, int64_t now, struct ly_buf *out, struct ly_error *err)
    LY_MUST_CHECK;
/*
 * Decodes a cache file into `c`, which must be empty and for the file's
 * trust domain. SVIDs expired at `now` are dropped (their entries kept).
 * With `v` (may be NULL), each SVID is verified again (verify.h) and
 * dropped when it fails. On failure `c` is left empty.
 */
ly_status ly_state_decode_cache(const uint8_t *data, size_t len, int64_t now, struct ly_verifier *v,
    struct ly_cache *c, struct ly_error *err) LY_MUST_CHECK;

/*
 * Writes `len` bytes to `dir`/`name` atomically (see above), mode 0600.
 * `name` is a plain file name (no '/').
 */
ly_status ly_state_write_file(const char *dir, const char *name, const uint8_t *data, size_t len,
    struct ly_error *err) LY_MUST_CHECK;
/*
 * Reads `dir`/`name` (at most LY_AGENT_STATE_FILE_MAX bytes) into `out`
 * (empty on entry; free with ly_buf_free_secret). LY_E_NOT_FOUND when the
 * file does not exist (first start).
 */
ly_status ly_state_read_file(const char *dir, const char *name, struct ly_buf *out, struct ly_error *err)
    LY_MUST_CHECK;

/* Encode + write, and read + decode, for the two files. */
ly_status ly_state_save_agent(const char *dir, const struct ly_agent_state *st, int64_t now, struct ly_error *err)
    LY_MUST_CHECK;
ly_status ly_state_load_agent(const char *dir, const char *expected_td, int64_t now, struct ly_agent_state *out,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_state_save_cache(const char *dir, const struct ly_cache *c, int64_t now, struct ly_error *err)
    LY_MUST_CHECK;
ly_status ly_state_load_cache(const char *dir, int64_t now, struct ly_verifier *v, struct ly_cache *c,
    struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_AGENT_STATE_H */
