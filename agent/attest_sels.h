/*
 * attest_sels.h: the selector list a workload attestor builds (SPEC §5).
 *
 * Every selector added is validated by ly_selector_check (lib/entry.h), so
 * an attestor can only emit selectors in canonical form, the same bytes an
 * entry's selector would hold. A value that fails the check is refused with
 * LY_E_INVALID and not added: the attestor decides whether to skip it (a
 * missing selector can only take entitlements away, never grant one,
 * since an entry matches when all of its selectors are present, SPEC §1)
 * or to refuse the whole attestation.
 *
 * Ownership: struct ly_attest_sels is caller-owned (initialize with
 * LY_ATTEST_SELS_INIT) and owns its array and strings until
 * ly_attest_sels_take hands them over (free them with ly_selectors_free)
 * or ly_attest_sels_cleanup frees them. One list, one thread.
 */
#ifndef LANYARD_AGENT_ATTEST_SELS_H
#define LANYARD_AGENT_ATTEST_SELS_H

#include <stddef.h>

#include "lib/entry.h"
#include "lib/error.h"

struct ly_attest_sels {
	struct ly_selector *v;
	size_t n;
	size_t cap;
};

#define LY_ATTEST_SELS_INIT { NULL, 0, 0 }

/*
 * Validates "type:value" and appends a copy. LY_E_INVALID (not added) when
 * the selector breaks a rule of lib/entry.h, LY_E_LIMIT past
 * LY_WORKLOAD_SELECTORS_MAX, LY_E_NOMEM. An exact duplicate is not added
 * twice (LY_OK).
 */
ly_status ly_attest_sels_add(struct ly_attest_sels *l, const char *type, const char *value, struct ly_error *err)
    LY_MUST_CHECK;
/* Same, with the value formatted (a value longer than LY_SELECTOR_MAX is LY_E_INVALID). */
ly_status ly_attest_sels_addf(struct ly_attest_sels *l, const char *type, struct ly_error *err, const char *fmt,
    ...) LY_PRINTF(4, 5) LY_MUST_CHECK;
/* Hands the array over (*out NULL when empty; free with ly_selectors_free(*out, *n)); leaves `l` empty. */
void ly_attest_sels_take(struct ly_attest_sels *l, struct ly_selector **out, size_t *n);
/* Frees everything; leaves `l` empty. */
void ly_attest_sels_cleanup(struct ly_attest_sels *l);

#endif /* LANYARD_AGENT_ATTEST_SELS_H */
