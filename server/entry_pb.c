/* entry_pb.c: see entry_pb.h. */
#include "server/entry_pb.h"

#include <stdlib.h>
#include <string.h>

#include "lib/caps.h"

void
ly_entries_pb_cleanup(struct ly_entries_pb *p)
{
	free(p->msgs);
	free(p->ptrs);
	free(p->sels);
	free(p->sel_ptrs);
	memset(p, 0, sizeof(*p));
}

ly_status
ly_entries_pb_make(const struct ly_entry *const *entries, size_t n, struct ly_entries_pb *p, struct ly_error *err)
{
	size_t nsel = 0, k = 0;

	memset(p, 0, sizeof(*p));
	for (size_t i = 0; i < n; i++)
		nsel += entries[i]->n_selectors;
	/* +1: calloc(0) may return NULL, which would read as out of memory. */
	p->msgs = calloc(n + 1, sizeof(*p->msgs));
	p->ptrs = calloc(n + 1, sizeof(*p->ptrs));
	p->sels = calloc(nsel + 1, sizeof(*p->sels));
	p->sel_ptrs = calloc(nsel + 1, sizeof(*p->sel_ptrs));
	if (p->msgs == NULL || p->ptrs == NULL || p->sels == NULL || p->sel_ptrs == NULL) {
		ly_entries_pb_cleanup(p);
		return ly_error_set(err, LY_E_NOMEM, "entries: out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		const struct ly_entry *e = entries[i];
		Lanyard__Agent__V1__Entry *m = &p->msgs[i];
		lanyard__agent__v1__entry__init(m);
		/* protobuf-c packs a NULL string as the empty string; the strings are only read. */
		m->entry_id = e->entry_id;
		m->spiffe_id = e->spiffe_id;
		m->parent_id = e->parent_id;
		m->n_selectors = e->n_selectors;
		m->selectors = &p->sel_ptrs[k];
		for (size_t j = 0; j < e->n_selectors; j++, k++) {
			lanyard__agent__v1__selector__init(&p->sels[k]);
			p->sels[k].type = e->selectors[j].type;
			p->sels[k].value = e->selectors[j].value;
			p->sel_ptrs[k] = &p->sels[k];
		}
		m->x509_svid_ttl = e->x509_svid_ttl;
		m->jwt_svid_ttl = e->jwt_svid_ttl;
		m->n_dns_names = e->n_dns_names;
		m->dns_names = e->dns_names;
		m->node = e->node;
		m->admin = e->admin;
		m->downstream = e->downstream;
		m->hint = e->hint;
		m->n_federates_with = e->n_federates_with;
		m->federates_with = e->federates_with;
		m->revision = e->revision;
		m->created_at = e->created_at;
		p->ptrs[i] = m;
	}
	p->n = n;
	return LY_OK;
}

void
ly_selectors_pb_cleanup(struct ly_selectors_pb *p)
{
	free(p->sels);
	free(p->ptrs);
	memset(p, 0, sizeof(*p));
}

ly_status
ly_selectors_pb_make(const struct ly_selector *sel, size_t n, struct ly_selectors_pb *p, struct ly_error *err)
{
	memset(p, 0, sizeof(*p));
	p->sels = calloc(n + 1, sizeof(*p->sels));
	p->ptrs = calloc(n + 1, sizeof(*p->ptrs));
	if (p->sels == NULL || p->ptrs == NULL) {
		ly_selectors_pb_cleanup(p);
		return ly_error_set(err, LY_E_NOMEM, "selectors: out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		lanyard__agent__v1__selector__init(&p->sels[i]);
		p->sels[i].type = sel[i].type;
		p->sels[i].value = sel[i].value;
		p->ptrs[i] = &p->sels[i];
	}
	p->n = n;
	return LY_OK;
}

ly_status
ly_entry_from_pb(const Lanyard__Agent__V1__Entry *m, struct ly_entry **out, struct ly_error *err)
{
	struct ly_entry *e = NULL;
	ly_status rc;

	*out = NULL;
	if (m->n_selectors > LY_SELECTORS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "more than %d selectors", LY_SELECTORS_MAX);
	if (m->n_dns_names > LY_DNS_NAMES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "more than %d DNS names", LY_DNS_NAMES_MAX);
	if (m->n_federates_with > LY_ENTRY_FEDERATES_WITH_MAX)
		return ly_error_set(err, LY_E_LIMIT, "federates with more than %d trust domains",
		    LY_ENTRY_FEDERATES_WITH_MAX);
	LY_TRY(ly_entry_new(&e, err));
	if ((m->entry_id[0] != '\0' && (rc = ly_entry_set_string(&e->entry_id, m->entry_id, err)) != LY_OK) ||
	    (rc = ly_entry_set_string(&e->spiffe_id, m->spiffe_id, err)) != LY_OK ||
	    (rc = ly_entry_set_string(&e->parent_id, m->parent_id, err)) != LY_OK ||
	    (m->hint[0] != '\0' && (rc = ly_entry_set_string(&e->hint, m->hint, err)) != LY_OK))
		goto out;
	if (m->n_selectors > 0) {
		e->selectors = calloc(m->n_selectors, sizeof(*e->selectors));
		if (e->selectors == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "out of memory");
			goto out;
		}
	}
	for (size_t i = 0; i < m->n_selectors; i++) {
		const Lanyard__Agent__V1__Selector *s = m->selectors[i];
		rc = ly_selector_set(&e->selectors[i], s->type, s->value, err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "selector %zu", i + 1);
			goto out;
		}
		e->n_selectors++;
	}
	for (size_t i = 0; i < m->n_dns_names; i++) {
		rc = ly_entry_add_dns_name(e, m->dns_names[i], err);
		if (rc != LY_OK)
			goto out;
	}
	for (size_t i = 0; i < m->n_federates_with; i++) {
		rc = ly_entry_add_federates_with(e, m->federates_with[i], err);
		if (rc != LY_OK)
			goto out;
	}
	e->x509_svid_ttl = m->x509_svid_ttl;
	e->jwt_svid_ttl = m->jwt_svid_ttl;
	e->node = m->node;
	e->admin = m->admin;
	e->downstream = m->downstream;
	*out = e;
	e = NULL;
	rc = LY_OK;
out:
	ly_entry_free(e);
	return rc;
}
