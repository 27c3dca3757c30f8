/*
 * authz.c: the authorized entries of an agent (authz.h has the rule).
 *
 * The index keeps three views of the borrowed entries: by entry_id (for
 * lookups), by parent_id (a sorted array: the children of a name are one
 * contiguous range found by binary search), and the node entries alone
 * (the alias candidates, tested against the agent's selectors).
 */
#include "server/authz.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct ly_authz_index {
	const struct ly_entry **by_id;     /* sorted by entry_id */
	const struct ly_entry **by_parent; /* sorted by parent_id, then entry_id */
	const struct ly_entry **nodes;     /* node entries, by entry_id */
	size_t n, n_nodes;
};

/* Growable arrays of entries and of strings (borrowed pointers). */
struct entvec {
	const struct ly_entry **v;
	size_t n, cap;
};

struct strvec {
	const char **v;
	size_t n, cap;
};

/* The next capacity of a growable array, or 0 when it cannot grow. */
static size_t
next_cap(size_t cap, size_t size)
{
	size_t ncap = cap == 0 ? 16 : cap * 2;
	return ncap > SIZE_MAX / size ? 0 : ncap;
}

static ly_status
entvec_push(struct entvec *ev, const struct ly_entry *e, struct ly_error *err)
{
	if (ev->n == ev->cap) {
		size_t cap = next_cap(ev->cap, sizeof(*ev->v));
		const struct ly_entry **v = cap == 0 ? NULL : realloc(ev->v, cap * sizeof(*v));
		if (v == NULL)
			return ly_error_set(err, LY_E_NOMEM, "authz: out of memory");
		ev->v = v;
		ev->cap = cap;
	}
	ev->v[ev->n++] = e;
	return LY_OK;
}

static ly_status
strvec_push(struct strvec *sv, const char *s, struct ly_error *err)
{
	if (sv->n == sv->cap) {
		size_t cap = next_cap(sv->cap, sizeof(*sv->v));
		const char **v = cap == 0 ? NULL : realloc(sv->v, cap * sizeof(*v));
		if (v == NULL)
			return ly_error_set(err, LY_E_NOMEM, "authz: out of memory");
		sv->v = v;
		sv->cap = cap;
	}
	sv->v[sv->n++] = s;
	return LY_OK;
}

static int
cmp_entry_id(const void *a, const void *b)
{
	const struct ly_entry *const *x = a, *const *y = b;
	return strcmp((*x)->entry_id, (*y)->entry_id);
}

static int
cmp_parent(const void *a, const void *b)
{
	const struct ly_entry *const *x = a, *const *y = b;
	int c = strcmp((*x)->parent_id, (*y)->parent_id);
	return c != 0 ? c : strcmp((*x)->entry_id, (*y)->entry_id);
}

static int
cmp_str(const void *a, const void *b)
{
	const char *const *x = a, *const *y = b;
	return strcmp(*x, *y);
}

/* Sorts `n` strings and removes duplicates; returns the new count. */
static size_t
sort_unique_strs(const char **v, size_t n)
{
	size_t k = 0;

	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_str);
	for (size_t i = 1; i < n; i++) {
		if (strcmp(v[i], v[k]) != 0)
			v[++k] = v[i];
	}
	return k + 1;
}

ly_status
ly_authz_index_new(struct ly_entry *const *entries, size_t n, struct ly_authz_index **out, struct ly_error *err)
{
	struct ly_authz_index *idx = NULL;
	ly_status rc = LY_OK;

	if (out == NULL || (n > 0 && entries == NULL))
		return ly_error_set(err, LY_E_INTERNAL, "authz index: missing entries or output");
	*out = NULL;
	if (n > SIZE_MAX / sizeof(*idx->by_id) / 3)
		return ly_error_set(err, LY_E_LIMIT, "authz index: too many entries");
	idx = calloc(1, sizeof(*idx));
	if (idx == NULL)
		return ly_error_set(err, LY_E_NOMEM, "authz index: out of memory");
	idx->n = n;
	if (n > 0) {
		idx->by_id = calloc(n, sizeof(*idx->by_id));
		idx->by_parent = calloc(n, sizeof(*idx->by_parent));
		idx->nodes = calloc(n, sizeof(*idx->nodes));
		if (idx->by_id == NULL || idx->by_parent == NULL || idx->nodes == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "authz index: out of memory");
			goto out;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const struct ly_entry *e = entries[i];
		if (e == NULL || e->entry_id == NULL || e->entry_id[0] == '\0' || e->spiffe_id == NULL ||
		    e->parent_id == NULL) {
			rc = ly_error_set(err, LY_E_INVALID, "authz index: entry %zu lacks an ID, SPIFFE ID or parent", i);
			goto out;
		}
		idx->by_id[i] = e;
		idx->by_parent[i] = e;
		if (e->node)
			idx->nodes[idx->n_nodes++] = e;
	}
	if (n > 0) {
		qsort(idx->by_id, n, sizeof(*idx->by_id), cmp_entry_id);
		qsort(idx->by_parent, n, sizeof(*idx->by_parent), cmp_parent);
	}
	for (size_t i = 1; i < n; i++) {
		if (strcmp(idx->by_id[i - 1]->entry_id, idx->by_id[i]->entry_id) == 0) {
			rc = ly_error_set(err, LY_E_INVALID, "authz index: duplicate entry ID %s", idx->by_id[i]->entry_id);
			goto out;
		}
	}
	*out = idx;
	idx = NULL;
out:
	ly_authz_index_free(idx);
	return rc;
}

void
ly_authz_index_free(struct ly_authz_index *idx)
{
	if (idx == NULL)
		return;
	free(idx->by_id);
	free(idx->by_parent);
	free(idx->nodes);
	free(idx);
}

size_t
ly_authz_index_count(const struct ly_authz_index *idx)
{
	return idx != NULL ? idx->n : 0;
}

/* Binary search in an array sorted by entry_id. */
static const struct ly_entry *
find_by_id(const struct ly_entry *const *v, size_t n, const char *entry_id)
{
	size_t lo = 0, hi = n;

	if (entry_id == NULL)
		return NULL;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(v[mid]->entry_id, entry_id);
		if (c == 0)
			return v[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const struct ly_entry *
ly_authz_index_find(const struct ly_authz_index *idx, const char *entry_id)
{
	if (idx == NULL)
		return NULL;
	return find_by_id(idx->by_id, idx->n, entry_id);
}

/* The first position in by_parent whose parent_id is >= `parent`. */
static size_t
parent_lower_bound(const struct ly_authz_index *idx, const char *parent)
{
	size_t lo = 0, hi = idx->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(idx->by_parent[mid]->parent_id, parent) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Appends the workload entries whose parent_id is `parent`. */
static ly_status
add_children(const struct ly_authz_index *idx, const char *parent, struct entvec *out, struct ly_error *err)
{
	for (size_t i = parent_lower_bound(idx, parent); i < idx->n; i++) {
		const struct ly_entry *e = idx->by_parent[i];
		if (strcmp(e->parent_id, parent) != 0)
			break;
		if (!e->node)
			LY_TRY(entvec_push(out, e, err));
	}
	return LY_OK;
}

static bool
in_sorted_strs(const char *const *v, size_t n, const char *s)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(v[mid], s);
		if (c == 0)
			return true;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

ly_status
ly_authz_authorized(const struct ly_authz_index *idx, const struct ly_authz_agent *agent, struct ly_authz_set *out,
    struct ly_error *err)
{
	struct strvec names = { NULL, 0, 0 }, level2 = { NULL, 0, 0 };
	struct entvec found = { NULL, 0, 0 };
	ly_status rc = LY_OK;

	if (idx == NULL || agent == NULL || out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "authz: missing index, agent or output");
	if (agent->spiffe_id == NULL || agent->spiffe_id[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "authz: the agent has no SPIFFE ID");
	if (agent->n_selectors > 0 && agent->selectors == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "authz: selector count without selectors");

	/* 1. The agent's names: its ID and the node entries it matches (aliases). */
	if ((rc = strvec_push(&names, agent->spiffe_id, err)) != LY_OK)
		goto out;
	for (size_t i = 0; i < idx->n_nodes; i++) {
		const struct ly_entry *node = idx->nodes[i];
		if (ly_selectors_match(node->selectors, node->n_selectors, agent->selectors, agent->n_selectors) &&
		    (rc = strvec_push(&names, node->spiffe_id, err)) != LY_OK)
			goto out;
	}
	names.n = sort_unique_strs(names.v, names.n);

	/* 2. Level 1: workload entries parented by one of the names. */
	for (size_t i = 0; i < names.n; i++) {
		if ((rc = add_children(idx, names.v[i], &found, err)) != LY_OK)
			goto out;
	}

	/* 3. Level 2: workload entries parented by a level-1 SPIFFE ID (once each). */
	for (size_t i = 0; i < found.n; i++) {
		const struct ly_entry *e = found.v[i];
		if (!in_sorted_strs(names.v, names.n, e->spiffe_id) &&
		    (rc = strvec_push(&level2, e->spiffe_id, err)) != LY_OK)
			goto out;
	}
	level2.n = sort_unique_strs(level2.v, level2.n);
	for (size_t i = 0; i < level2.n; i++) {
		if ((rc = add_children(idx, level2.v[i], &found, err)) != LY_OK)
			goto out;
	}

	/* Sorted by entry_id, each entry once (IDs are unique in the index). */
	if (found.n > 0) {
		size_t k = 0;
		qsort(found.v, found.n, sizeof(*found.v), cmp_entry_id);
		for (size_t i = 1; i < found.n; i++) {
			if (found.v[i] != found.v[k])
				found.v[++k] = found.v[i];
		}
		found.n = k + 1;
	}
	out->items = found.v;
	out->n = found.n;
	found.v = NULL;
out:
	free(names.v);
	free(level2.v);
	free(found.v);
	return rc;
}

void
ly_authz_set_cleanup(struct ly_authz_set *set)
{
	if (set == NULL)
		return;
	free(set->items);
	set->items = NULL;
	set->n = 0;
}

const struct ly_entry *
ly_authz_set_find(const struct ly_authz_set *set, const char *entry_id)
{
	if (set == NULL)
		return NULL;
	return find_by_id(set->items, set->n, entry_id);
}

bool
ly_authz_set_has_spiffe_id(const struct ly_authz_set *set, const char *spiffe_id)
{
	if (set == NULL || spiffe_id == NULL)
		return false;
	for (size_t i = 0; i < set->n; i++) {
		if (strcmp(set->items[i]->spiffe_id, spiffe_id) == 0)
			return true;
	}
	return false;
}

ly_status
ly_authz_may_use_entry(const struct ly_authz_index *idx, const struct ly_authz_agent *agent, const char *entry_id,
    bool *ok, const struct ly_entry **entry, struct ly_error *err)
{
	struct ly_authz_set set = LY_AUTHZ_SET_INIT;

	if (ok == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "authz: no output");
	*ok = false;
	if (entry != NULL)
		*entry = NULL;
	LY_TRY(ly_authz_authorized(idx, agent, &set, err));
	const struct ly_entry *e = ly_authz_set_find(&set, entry_id);
	*ok = e != NULL;
	if (entry != NULL)
		*entry = e;
	ly_authz_set_cleanup(&set);
	return LY_OK;
}

ly_status
ly_authz_may_obtain_id(const struct ly_authz_index *idx, const struct ly_authz_agent *agent, const char *spiffe_id,
    bool *ok, struct ly_error *err)
{
	struct ly_authz_set set = LY_AUTHZ_SET_INIT;

	if (ok == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "authz: no output");
	*ok = false;
	LY_TRY(ly_authz_authorized(idx, agent, &set, err));
	*ok = ly_authz_set_has_spiffe_id(&set, spiffe_id);
	ly_authz_set_cleanup(&set);
	return LY_OK;
}

/* ---- watch streams ---------------------------------------------------------- */

/* Past this many touched IDs beyond 2 x |set|, the stream is rebased. */
#define WATCH_TOUCHED_SLACK 256

struct sent_item {
	char *id;
	int64_t rev;
};

struct ly_authz_watch {
	bool started;
	struct sent_item *last; /* the previous target, sorted by ID */
	size_t n_last;
	char **touched;         /* sorted, unique */
	size_t n_touched;
	/* Scratch for the update handed out. */
	const struct ly_entry **upserts;
	char **deleted; /* point into touched */
};

ly_status
ly_authz_watch_new(struct ly_authz_watch **out, struct ly_error *err)
{
	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "authz watch: no output");
	*out = calloc(1, sizeof(**out));
	if (*out == NULL)
		return ly_error_set(err, LY_E_NOMEM, "authz watch: out of memory");
	return LY_OK;
}

static void
sent_free(struct sent_item *v, size_t n)
{
	for (size_t i = 0; v != NULL && i < n; i++)
		free(v[i].id);
	free(v);
}

static void
strs_free(char **v, size_t n)
{
	for (size_t i = 0; v != NULL && i < n; i++)
		free(v[i]);
	free(v);
}

void
ly_authz_watch_free(struct ly_authz_watch *w)
{
	if (w == NULL)
		return;
	sent_free(w->last, w->n_last);
	strs_free(w->touched, w->n_touched);
	free(w->upserts);
	free(w->deleted);
	free(w);
}

size_t
ly_authz_watch_touched(const struct ly_authz_watch *w)
{
	return w != NULL ? w->n_touched : 0;
}

/* Allocates `n` elements of `size` bytes (at least one element). */
static void *
alloc_n(size_t n, size_t size)
{
	if (n > SIZE_MAX / size - 1)
		return NULL;
	return calloc(n + 1, size);
}

/*
 * Walks the previous target and `set` together (both sorted by ID): the
 * new `last`, and in *diff the IDs that differ (owned copies, sorted).
 */
static ly_status
diff_targets(struct ly_authz_watch *w, const struct ly_authz_set *set, struct sent_item **new_last, char ***diff,
    size_t *n_diff, struct ly_error *err)
{
	struct sent_item *nl = alloc_n(set->n, sizeof(*nl));
	char **d = alloc_n(w->n_last + set->n, sizeof(*d));
	size_t i = 0, j = 0, k = 0, nd = 0;
	ly_status rc = LY_OK;

	if (nl == NULL || d == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "authz watch: out of memory");
		goto out;
	}
	while (i < w->n_last || j < set->n) {
		int c;
		if (i == w->n_last)
			c = 1;
		else if (j == set->n)
			c = -1;
		else
			c = strcmp(w->last[i].id, set->items[j]->entry_id);
		if (c < 0) {
			/* Gone from the set. */
			if ((d[nd] = strdup(w->last[i].id)) == NULL)
				goto nomem;
			nd++;
			i++;
			continue;
		}
		const struct ly_entry *e = set->items[j];
		if ((nl[k].id = strdup(e->entry_id)) == NULL)
			goto nomem;
		nl[k++].rev = e->revision;
		if (c > 0 || w->last[i].rev != e->revision) {
			/* New in the set, or changed. */
			if ((d[nd] = strdup(e->entry_id)) == NULL)
				goto nomem;
			nd++;
		}
		if (c == 0)
			i++;
		j++;
	}
	*new_last = nl;
	*diff = d;
	*n_diff = nd;
	return LY_OK;
nomem:
	rc = ly_error_set(err, LY_E_NOMEM, "authz watch: out of memory");
out:
	sent_free(nl, k);
	strs_free(d, nd);
	return rc;
}

/* Merges the sorted `diff` (ownership taken, also on failure) into touched. */
static ly_status
merge_touched(struct ly_authz_watch *w, char **diff, size_t n_diff, struct ly_error *err)
{
	char **t = alloc_n(w->n_touched + n_diff, sizeof(*t));
	size_t i = 0, j = 0, k = 0;

	if (t == NULL) {
		strs_free(diff, n_diff);
		return ly_error_set(err, LY_E_NOMEM, "authz watch: out of memory");
	}
	while (i < w->n_touched || j < n_diff) {
		int c;
		if (i == w->n_touched)
			c = 1;
		else if (j == n_diff)
			c = -1;
		else
			c = strcmp(w->touched[i], diff[j]);
		if (c < 0) {
			t[k++] = w->touched[i++];
		} else if (c > 0) {
			t[k++] = diff[j++];
		} else {
			t[k++] = w->touched[i++];
			free(diff[j++]);
		}
	}
	free(w->touched);
	free(diff);
	w->touched = t;
	w->n_touched = k;
	return LY_OK;
}

ly_status
ly_authz_watch_next(struct ly_authz_watch *w, const struct ly_authz_set *set, struct ly_authz_update *out,
    struct ly_error *err)
{
	struct sent_item *nl = NULL;
	char **diff = NULL;
	size_t n_diff = 0;

	if (w == NULL || set == NULL || out == NULL || (set->n > 0 && set->items == NULL))
		return ly_error_set(err, LY_E_INTERNAL, "authz watch: missing watch, set or output");
	memset(out, 0, sizeof(*out));
	LY_TRY(diff_targets(w, set, &nl, &diff, &n_diff, err));
	sent_free(w->last, w->n_last);
	w->last = nl;
	w->n_last = set->n;
	bool first = !w->started;
	w->started = true;
	out->changed = first || n_diff > 0;
	if (first) {
		/* The first target is the baseline: nothing is touched yet. */
		strs_free(diff, n_diff);
	} else {
		LY_TRY(merge_touched(w, diff, n_diff, err));
	}

	const struct ly_entry **up = alloc_n(set->n, sizeof(*up));
	char **del = alloc_n(w->n_touched, sizeof(*del));
	if (up == NULL || del == NULL) {
		free(up);
		free(del);
		return ly_error_set(err, LY_E_NOMEM, "authz watch: out of memory");
	}
	free(w->upserts);
	free(w->deleted);
	w->upserts = up;
	w->deleted = del;

	/* The delta: touched IDs, upserted when in the set, deleted when not. */
	size_t nu = 0, nd = 0, i = 0, j = 0;
	while (!first && (i < w->n_touched || j < set->n)) {
		int c;
		if (i == w->n_touched)
			c = 1;
		else if (j == set->n)
			c = -1;
		else
			c = strcmp(w->touched[i], set->items[j]->entry_id);
		if (c < 0) {
			del[nd++] = w->touched[i++];
		} else if (c > 0) {
			j++;
		} else {
			up[nu++] = set->items[j++];
			i++;
		}
	}
	out->rebase = !first && w->n_touched > 2 * set->n + WATCH_TOUCHED_SLACK;
	if (first || out->rebase || nu + nd > set->n) {
		/* A snapshot: the whole set, no deletions. */
		for (size_t m = 0; m < set->n; m++)
			up[m] = set->items[m];
		nu = set->n;
		nd = 0;
		out->snapshot = true;
	}
	out->upserts = up;
	out->n_upserts = nu;
	out->deleted = del;
	out->n_deleted = nd;
	return LY_OK;
}

static int
cmp_str_ptr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

ly_status
ly_authz_watch_resume(struct ly_authz_watch *w, const struct ly_authz_set *set, const char *const *changed,
    size_t n_changed, struct ly_authz_update *out, struct ly_error *err)
{
	struct ly_authz_update baseline;
	char **ids = NULL;
	size_t n = 0;

	if (w == NULL || w->started || (n_changed > 0 && changed == NULL))
		return ly_error_set(err, LY_E_INTERNAL, "authz watch: resume needs a new watch");
	/* The current set is the baseline (nothing is sent for it)... */
	LY_TRY(ly_authz_watch_next(w, set, &baseline, err));
	/* ...and the agent's state differs from it in the changed IDs at most. */
	ids = alloc_n(n_changed, sizeof(*ids));
	if (ids == NULL)
		return ly_error_set(err, LY_E_NOMEM, "authz watch: out of memory");
	for (size_t i = 0; i < n_changed; i++) {
		if ((ids[i] = strdup(changed[i])) == NULL) {
			strs_free(ids, i);
			return ly_error_set(err, LY_E_NOMEM, "authz watch: out of memory");
		}
	}
	if (n_changed > 1)
		qsort(ids, n_changed, sizeof(*ids), cmp_str_ptr);
	/* Unique, as merge_touched wants. */
	for (size_t i = 0; i < n_changed; i++) {
		if (n > 0 && strcmp(ids[n - 1], ids[i]) == 0)
			free(ids[i]);
		else
			ids[n++] = ids[i];
	}
	LY_TRY(merge_touched(w, ids, n, err));
	LY_TRY(ly_authz_watch_next(w, set, out, err));
	out->changed = true;
	return LY_OK;
}
