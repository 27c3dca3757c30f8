/*
 * fuzz_selector.c: parses arbitrary bytes as a selector; when they hold 2+
 * lines, also as an entry in a small line format:
 *   line 1 spiffe_id, line 2 parent_id, then one per line: "id=", "hint=",
 *   "dns=", "ttl=" (X.509), "jwt=", "node", "admin", or a selector.
 * An accepted selector must re-parse from its formatted form; a validated
 * entry must have strictly sorted selectors, match itself and survive a copy,
 * and an entry valid in a trust domain must be valid without one
 * (abort otherwise).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/entry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
add_line(struct ly_entry *e, char *l)
{
	ly_status rc = LY_OK;
	if (strncmp(l, "id=", 3) == 0)
		rc = ly_entry_set_string(&e->entry_id, l + 3, NULL);
	else if (strncmp(l, "hint=", 5) == 0)
		rc = ly_entry_set_string(&e->hint, l + 5, NULL);
	else if (strncmp(l, "dns=", 4) == 0)
		rc = ly_entry_add_dns_name(e, l + 4, NULL);
	else if (strncmp(l, "ttl=", 4) == 0)
		e->x509_svid_ttl = (int32_t)strtol(l + 4, NULL, 10);
	else if (strncmp(l, "jwt=", 4) == 0)
		e->jwt_svid_ttl = (int32_t)strtol(l + 4, NULL, 10);
	else if (strcmp(l, "node") == 0 || strcmp(l, "admin") == 0)
		*(l[0] == 'n' ? &e->node : &e->admin) = true;
	else
		rc = ly_entry_add_selector(e, l, NULL);
	(void)rc;
}

/* `buf` is a NUL-terminated copy of the input; strtok_r cuts it up. */
static void
check_entry(char *buf)
{
	struct ly_entry *e = NULL, *copy = NULL;
	char *save = NULL;
	if (ly_entry_new(&e, NULL) != LY_OK)
		goto out;
	char *l1 = strtok_r(buf, "\n", &save), *l2 = strtok_r(NULL, "\n", &save);
	if (l1 == NULL || l2 == NULL || ly_entry_set_string(&e->spiffe_id, l1, NULL) != LY_OK ||
	    ly_entry_set_string(&e->parent_id, l2, NULL) != LY_OK)
		goto out;
	for (char *l = strtok_r(NULL, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save))
		add_line(e, l);
	/* Valid in a trust domain implies valid without one. */
	bool in_td = ly_entry_validate(e, "example.org", NULL) == LY_OK;
	if (ly_entry_validate(e, NULL, NULL) != LY_OK) {
		if (in_td)
			abort();
		goto out;
	}
	for (size_t i = 1; i < e->n_selectors; i++) {
		if (ly_selector_cmp(&e->selectors[i - 1], &e->selectors[i]) >= 0)
			abort();
	}
	if (!ly_selectors_match(e->selectors, e->n_selectors, e->selectors, e->n_selectors))
		abort();
	if (ly_entry_copy(e, &copy, NULL) == LY_OK &&
	    (!ly_entry_same_identity(e, copy) || ly_entry_validate(copy, NULL, NULL) != LY_OK))
		abort();
out:
	ly_entry_free(copy);
	ly_entry_free(e);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_selector sel, again;
	char text[LY_SELECTOR_MAX + 1];

	if (ly_selector_parse((const char *)data, size, &sel, NULL) == LY_OK) {
		if (ly_selector_format(&sel, text, sizeof(text), NULL) != LY_OK || strlen(text) != size ||
		    memcmp(text, data, size) != 0 || ly_selector_parse_str(text, &again, NULL) != LY_OK ||
		    !ly_selector_equal(&sel, &again) || ly_selector_check(sel.type, sel.value, NULL) != LY_OK)
			abort();
		ly_selector_cleanup(&again);
		ly_selector_cleanup(&sel);
	}
	if (size > 64 * 1024 || memchr(data, '\n', size) == NULL)
		return 0;
	char *s = strndup((const char *)data, size);
	if (s != NULL)
		check_entry(s);
	free(s);
	return 0;
}
