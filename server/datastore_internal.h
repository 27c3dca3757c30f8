/*
 * datastore_internal.h: what the datastore back ends (datastore_sqlite.c,
 * datastore_pg.c) share, defined once in datastore.c. Not for callers of
 * the datastore: they use datastore.h.
 *
 * Holds the checks every operation makes on its inputs before it touches
 * the database (entry IDs, entry filters, join tokens, agents, CA state
 * names and sizes), so that both back ends refuse the same values with the
 * same messages; the entry identity hash and the join token hash, whose
 * values are stored and must not differ between back ends; and small
 * helpers on entry lists and filters.
 *
 * Ownership: nothing here keeps state. Inputs are never retained; outputs
 * are caller-owned buffers (a 32-byte hash) except where a function says
 * otherwise (ly_ds_entry_create_prepare may replace entry->entry_id with a
 * heap copy; ly_ds_entry_create_finish settles who owns which string).
 * Rules cited: SPIFFE-ID §2 (SPIFFE ID syntax, via lib/spiffeid.h); the
 * datastore rules of datastore.h (SPEC §7) and the join token rule of
 * SPEC §6.
 */
#ifndef LANYARD_SERVER_DATASTORE_INTERNAL_H
#define LANYARD_SERVER_DATASTORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/caps.h"
#include "lib/error.h"
#include "server/datastore.h"

/* LY_DS_AGENT_TYPE_MAX, LY_DS_AGENT_SERIAL_MAX: lib/caps.h. */

/* The size of the identity and join token hashes (SHA-256). */
#define LY_DS_HASH_LEN 32

/* The number of elements of an array. */
#define LY_DS_NELEM(a) (sizeof(a) / sizeof((a)[0]))

/*
 * One schema version of a back end: the statements (static strings) that
 * bring the previous version to it, applied in order in one transaction.
 */
struct ly_ds_migration {
	int version;
	const char *const *stmts;
	size_t n;
};

/* LY_E_UNSUPPORTED "datastore schema <version> is newer than this lanyard-server (<supported>): upgrade". */
ly_status ly_ds_schema_too_new(int64_t version, int supported, struct ly_error *err) LY_MUST_CHECK;

/* The current time, Unix seconds: created_at / updated_at columns. */
int64_t ly_ds_now(void);

/* LY_E_IO "datastore: corrupt row: <what>": a stored value a back end refuses to trust. */
ly_status ly_ds_corrupt(const char *what, struct ly_error *err) LY_MUST_CHECK;

/*
 * SHA-256 over spiffe_id, parent_id and the selectors in canonical order,
 * each followed by a NUL (none of them can hold one): equal for entries
 * with the same identity whatever their selector order was. The same in
 * every back end (it is stored as entries.identity).
 */
ly_status ly_ds_identity_hash(const struct ly_entry *e, unsigned char out[LY_DS_HASH_LEN], struct ly_error *err)
    LY_MUST_CHECK;

/* An entry_id given by a caller for a lookup: present and within LY_ENTRY_ID_MAX. */
ly_status ly_ds_check_entry_id(const char *entry_id, struct ly_error *err) LY_MUST_CHECK;

/*
 * entry_create's work before its transaction: validates `entry`
 * (ly_entry_validate, no trust domain), gives it a generated entry_id when
 * it has none, and computes its identity hash. When an ID is generated,
 * entry->entry_id becomes a heap copy of it, the caller's pointer is kept
 * in *given_id and *assigned is true; on failure nothing is changed.
 * The caller ends with ly_ds_entry_create_finish, whatever happened.
 */
ly_status ly_ds_entry_create_prepare(struct ly_entry *entry, char **given_id, bool *assigned,
    unsigned char hash[LY_DS_HASH_LEN], struct ly_error *err) LY_MUST_CHECK;

/*
 * After entry_create: when it failed (`rc` != LY_OK) a generated entry_id
 * is freed and the caller's pointer put back; when it succeeded the
 * caller's previous (empty) entry_id string is freed and the entry keeps
 * the generated one.
 */
void ly_ds_entry_create_finish(struct ly_entry *entry, ly_status rc, char *given_id, bool assigned);

/*
 * entry_update's work before its transaction: the entry is present, has an
 * entry_id, is valid (ly_entry_validate, no trust domain); its identity
 * hash to `hash`.
 */
ly_status ly_ds_entry_update_prepare(struct ly_entry *entry, unsigned char hash[LY_DS_HASH_LEN],
    struct ly_error *err) LY_MUST_CHECK;

/* LY_E_INVALID "entry already exists: entry ID <id> is taken". */
ly_status ly_ds_entry_id_taken(const char *entry_id, struct ly_error *err) LY_MUST_CHECK;

/* LY_E_INVALID "entry already exists: entry <dup> has the same spiffe_id, parent_id and selectors". */
ly_status ly_ds_entry_duplicate(const char *dup, struct ly_error *err) LY_MUST_CHECK;

/* entry_list's checks: an output, filter selectors present when counted, SPIFFE ID filters within their cap. */
ly_status ly_ds_check_entry_filter(const struct ly_entry_filter *filter, const struct ly_entry_list *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * entry_list's step for one entry read: `*e` is appended to `found` when it
 * passes the selector part of `filter` (filter->match; NULL or no
 * selectors: it does), freed otherwise. *e is NULL afterwards, whatever
 * happened: `found` owns it or it is gone.
 */
ly_status ly_ds_entry_list_keep(struct ly_entry_list *found, const struct ly_entry_filter *filter,
    struct ly_entry **e, struct ly_error *err) LY_MUST_CHECK;

/*
 * Moves every entry of `from` to the end of `to`; on failure both are
 * unchanged. The entries then belong to `to`; `from` is left empty.
 */
ly_status ly_ds_entry_list_move(struct ly_entry_list *to, struct ly_entry_list *from, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * Appends every agent of `from` to `to` (agent_list hands its result over
 * so); on failure both are unchanged. The agents then belong to `to`;
 * `from` is left empty.
 */
ly_status ly_ds_agent_list_move(struct ly_ds_agent_list *to, struct ly_ds_agent_list *from, struct ly_error *err)
    LY_MUST_CHECK;

/* token_create's checks: the token (ly_datastore_token_check), a valid SPIFFE ID, an expiry time > 0. */
ly_status ly_ds_check_token_create(const char *token, const char *spiffe_id, int64_t expires_at,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * The token is stored and looked up by SHA-256 only: a database leak gives
 * no usable token, and an index lookup by digest leaks nothing useful about
 * the token through timing (finding a preimage is the hard part). The
 * caller wipes `out` when done.
 */
ly_status ly_ds_token_hash(const char *token, unsigned char out[LY_DS_HASH_LEN], struct ly_error *err)
    LY_MUST_CHECK;

/*
 * agent_upsert's checks: a SPIFFE ID, an attestation type [a-z0-9_] within
 * LY_DS_AGENT_TYPE_MAX, a serial number (if any) of lower-case hex within
 * LY_DS_AGENT_SERIAL_MAX, at most LY_SELECTORS_MAX valid node selectors.
 */
ly_status ly_ds_check_agent(const struct ly_ds_agent *a, struct ly_error *err) LY_MUST_CHECK;

/* An agent SPIFFE ID given for a lookup: present and within LY_SPIFFE_ID_MAX. */
ly_status ly_ds_check_agent_id(const char *spiffe_id, struct ly_error *err) LY_MUST_CHECK;

/* A CA state name: [A-Za-z0-9._-], 1..LY_CA_STATE_NAME_MAX. */
ly_status ly_ds_check_ca_name(const char *name, struct ly_error *err) LY_MUST_CHECK;

/* ca_state_put's checks: the name, `len` within LY_CA_STATE_MAX, data present when len > 0. */
ly_status ly_ds_check_ca_state_put(const char *name, const uint8_t *data, size_t len, struct ly_error *err)
    LY_MUST_CHECK;

#endif
