/*
 * fuzz_spiffeid.c: parses arbitrary bytes as a SPIFFE ID and, when they are
 * accepted, checks the invariants every caller relies on (abort otherwise).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/spiffeid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_spiffe_id id, again, parts;
	char td[LY_TRUST_DOMAIN_MAX + 1];

	if (ly_spiffe_id_parse((const char *)data, size, &id, NULL) != LY_OK)
		return 0;
	size_t tdlen = strlen(id.trust_domain);
	if (strlen(id.id) != size || memcmp(id.id, data, size) != 0 || tdlen == 0 ||
	    tdlen > LY_TRUST_DOMAIN_MAX || id.td_end != 9 + tdlen ||
	    memcmp(id.id + 9, id.trust_domain, tdlen) != 0 || !ly_spiffe_id_member_of(&id, id.trust_domain))
		abort();
	if (ly_spiffe_id_parse_str(id.id, &again, NULL) != LY_OK || !ly_spiffe_id_equal(&id, &again) ||
	    again.td_end != id.td_end || strcmp(again.trust_domain, id.trust_domain) != 0)
		abort();
	if (ly_spiffe_id_from_parts(id.trust_domain, ly_spiffe_id_path(&id), &parts, NULL) != LY_OK ||
	    !ly_spiffe_id_equal(&id, &parts))
		abort();
	if (ly_trust_domain_parse(id.trust_domain, false, td, NULL) != LY_OK || strcmp(td, id.trust_domain) != 0)
		abort();
	const char *path = ly_spiffe_id_path(&id);
	if (ly_spiffe_id_is_trust_domain_id(&id) != (path[0] == '\0') || strstr(path, "//") != NULL ||
	    (path[0] != '\0' && (path[0] != '/' || path[strlen(path) - 1] == '/')))
		abort();
	return 0;
}
