/*
 * entry_pb.h: registration entries to and from their protobuf messages
 * (proto/agent.proto: Entry, Selector), one place for the admin API, the
 * agent API and the admin CLI.
 *
 * Views (ly_entries_pb_make, ly_selectors_pb_make): messages ready to
 * pack whose strings are BORROWED from the entries or selectors given
 * (valid while those live unchanged); the arrays belong to the view, freed
 * by the matching _cleanup. One allocation per array whatever the count:
 * a 10,000-entry snapshot is four blocks.
 *
 * ly_entry_from_pb: a new entry (ly_entry_free) from a request's message,
 * taking only what a request may set (revision and created_at are the
 * datastore's), with the counts capped (LY_SELECTORS_MAX,
 * LY_DNS_NAMES_MAX, LY_ENTRY_FEDERATES_WITH_MAX; federates_with names may
 * come as "spiffe://b.test" or "b.test" and are kept bare) and each selector checked on its own so the error
 * names the wrong one. Whole-entry rules (ly_entry_validate) are the
 * caller's next step.
 */
#ifndef LANYARD_SERVER_ENTRY_PB_H
#define LANYARD_SERVER_ENTRY_PB_H

#include <stddef.h>

#include "agent.pb-c.h"
#include "lib/entry.h"
#include "lib/error.h"

struct ly_entries_pb {
	Lanyard__Agent__V1__Entry *msgs;
	Lanyard__Agent__V1__Entry **ptrs; /* [n]: what repeated Entry fields take */
	Lanyard__Agent__V1__Selector *sels;
	Lanyard__Agent__V1__Selector **sel_ptrs;
	size_t n;
};

ly_status ly_entries_pb_make(const struct ly_entry *const *entries, size_t n, struct ly_entries_pb *out,
    struct ly_error *err) LY_MUST_CHECK;
void ly_entries_pb_cleanup(struct ly_entries_pb *p);

struct ly_selectors_pb {
	Lanyard__Agent__V1__Selector *sels;
	Lanyard__Agent__V1__Selector **ptrs; /* [n]: what repeated Selector fields take */
	size_t n;
};

ly_status ly_selectors_pb_make(const struct ly_selector *sel, size_t n, struct ly_selectors_pb *out,
    struct ly_error *err) LY_MUST_CHECK;
void ly_selectors_pb_cleanup(struct ly_selectors_pb *p);

ly_status ly_entry_from_pb(const Lanyard__Agent__V1__Entry *m, struct ly_entry **out, struct ly_error *err)
    LY_MUST_CHECK;

#endif /* LANYARD_SERVER_ENTRY_PB_H */
