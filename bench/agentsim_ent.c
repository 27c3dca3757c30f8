/*
 * agentsim_ent.c: a simulated agent's entry set (agentsim.h): the entries
 * its watch gave it, sorted by entry ID, each with the renewal time of its
 * SVID and whether a batch asks for it. Snapshots replace the set, deltas
 * change it one entry at a time; an entry whose SPIFFE ID did not change
 * keeps its SVID. No calls, no output.
 */
#include <stdlib.h>
#include <string.h>

#include "agentsim.h"

static int
ent_cmp(const void *x, const void *y)
{
	return strcmp(((const struct ent *)x)->id, ((const struct ent *)y)->id);
}

static int
ent_key_cmp(const void *key, const void *y)
{
	return strcmp(key, ((const struct ent *)y)->id);
}

struct ent *
ent_find(struct agent *a, const char *id)
{
	return bsearch(id, a->ents, a->n_ents, sizeof(*a->ents), ent_key_cmp);
}

static void
ent_clear(struct ent *e)
{
	free(e->id);
	free(e->sid);
}

static bool
ent_reserve(struct agent *a, size_t n)
{
	if (n <= a->cap_ents)
		return true;
	size_t cap = a->cap_ents ? a->cap_ents : 16;
	while (cap < n)
		cap *= 2;
	struct ent *p = realloc(a->ents, cap * sizeof(*p));
	if (p == NULL)
		return false;
	a->ents = p;
	a->cap_ents = cap;
	return true;
}

/* Upserts one entry (keeps its SVID when its SPIFFE ID did not change). */
void
ent_upsert(struct agent *a, const char *id, const char *sid)
{
	struct ent *e = ent_find(a, id);
	if (e != NULL) {
		if (strcmp(e->sid, sid) != 0) {
			char *n = strdup(sid);
			if (n != NULL) {
				free(e->sid);
				e->sid = n;
				e->renew_at = 0;
			}
		}
		return;
	}
	if (!ent_reserve(a, a->n_ents + 1))
		return;
	struct ent ne = { .id = strdup(id), .sid = strdup(sid) };
	if (ne.id == NULL || ne.sid == NULL) {
		ent_clear(&ne);
		return;
	}
	size_t lo = 0, hi = a->n_ents;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (strcmp(a->ents[mid].id, id) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	memmove(&a->ents[lo + 1], &a->ents[lo], (a->n_ents - lo) * sizeof(*a->ents));
	a->ents[lo] = ne;
	a->n_ents++;
}

void
ent_delete(struct agent *a, const char *id)
{
	struct ent *e = ent_find(a, id);
	if (e == NULL)
		return;
	size_t i = (size_t)(e - a->ents);
	ent_clear(e);
	memmove(&a->ents[i], &a->ents[i + 1], (a->n_ents - i - 1) * sizeof(*a->ents));
	a->n_ents--;
}

/* A snapshot: the set becomes exactly `m`'s entries; those already held keep their SVIDs. */
void
ent_snapshot(struct agent *a, const Lanyard__Agent__V1__EntriesUpdate *m)
{
	struct ent *old = a->ents;
	size_t n_old = a->n_ents;
	struct ent *nw = calloc(m->n_entries > 0 ? m->n_entries : 1, sizeof(*nw));
	size_t n = 0;

	if (nw == NULL)
		return;
	for (size_t i = 0; i < m->n_entries; i++) {
		const Lanyard__Agent__V1__Entry *pe = m->entries[i];
		if (pe == NULL || pe->entry_id == NULL || pe->spiffe_id == NULL)
			continue;
		nw[n].id = strdup(pe->entry_id);
		nw[n].sid = strdup(pe->spiffe_id);
		if (nw[n].id == NULL || nw[n].sid == NULL) {
			ent_clear(&nw[n]);
			continue;
		}
		struct ent *e = ent_find(a, pe->entry_id);
		if (e != NULL && strcmp(e->sid, pe->spiffe_id) == 0) {
			nw[n].renew_at = e->renew_at;
			nw[n].in_batch = e->in_batch;
		}
		n++;
	}
	qsort(nw, n, sizeof(*nw), ent_cmp);
	for (size_t i = 0; i < n_old; i++)
		ent_clear(&old[i]);
	free(old);
	a->ents = nw;
	a->n_ents = n;
	a->cap_ents = m->n_entries > 0 ? m->n_entries : 1;
}
