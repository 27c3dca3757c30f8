/*
 * attest.c: the attestation result the three attestors share, see attest.h.
 */
#include "server/attest.h"

#include <stdlib.h>
#include <string.h>

#include "lib/caps.h"

void
ly_attest_result_cleanup(struct ly_attest_result *r)
{
	if (r == NULL)
		return;
	free(r->agent_id);
	ly_selectors_free(r->selectors, r->n_selectors);
	r->agent_id = NULL;
	r->selectors = NULL;
	r->n_selectors = 0;
	r->type = NULL;
}

ly_status
ly_attest_result_add_selector(struct ly_attest_result *r, const char *type, const char *value,
    struct ly_error *err)
{
	struct ly_selector sel = { NULL, NULL };

	if (r == NULL || type == NULL || value == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "attest: selector without a result, type or value");
	if (r->n_selectors >= LY_SELECTORS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "attest: more than %d node selectors", LY_SELECTORS_MAX);
	LY_TRY(ly_selector_set(&sel, type, value, err));
	struct ly_selector *grown = realloc(r->selectors, (r->n_selectors + 1) * sizeof(*grown));
	if (grown == NULL) {
		ly_selector_cleanup(&sel);
		return ly_error_set(err, LY_E_NOMEM, "attest: out of memory");
	}
	r->selectors = grown;
	r->selectors[r->n_selectors++] = sel;
	return LY_OK;
}

ly_status
ly_attest_result_finish(struct ly_attest_result *r, const char *type, const char *trust_domain,
    const char *agent_id, struct ly_error *err)
{
	struct ly_spiffe_id id;

	if (r == NULL || type == NULL || trust_domain == NULL || agent_id == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "attest: finishing without a result, type, trust domain or ID");
	/* The ID may hold a join token: messages name the rule, never the ID. */
	ly_status rc = ly_spiffe_id_parse_str(agent_id, &id, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "agent ID");
	if (!ly_spiffe_id_member_of(&id, trust_domain))
		return ly_error_set(err, LY_E_UNTRUSTED, "agent ID is not in trust domain %s", trust_domain);
	if (ly_spiffe_id_is_trust_domain_id(&id))
		return ly_error_set(err, LY_E_INVALID, "agent ID has no path");
	if ((rc = ly_spiffe_id_check_use(&id, LY_ID_AGENT, err)) != LY_OK)
		return ly_error_wrap(err, rc, "agent ID");
	LY_TRY(ly_selectors_canonicalize(r->selectors, r->n_selectors, err));
	char *copy = strdup(id.id);
	if (copy == NULL)
		return ly_error_set(err, LY_E_NOMEM, "attest: out of memory");
	free(r->agent_id);
	r->agent_id = copy;
	r->type = type;
	return LY_OK;
}
