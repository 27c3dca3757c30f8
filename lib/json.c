/* json.c: strict JSON parsing (see json.h). */
#include "json.h"

#include <stdbool.h>

/* Refuses nesting deeper than `max_depth`, scanning outside strings. */
static ly_status
depth_check(const char *what, const char *data, size_t len, size_t max_depth, struct ly_error *err)
{
	size_t depth = 0;
	bool in_string = false, escaped = false;

	for (size_t i = 0; i < len; i++) {
		char c = data[i];
		if (in_string) {
			if (escaped)
				escaped = false;
			else if (c == '\\')
				escaped = true;
			else if (c == '"')
				in_string = false;
		} else if (c == '"') {
			in_string = true;
		} else if (c == '[' || c == '{') {
			if (++depth > max_depth)
				return ly_error_set(err, LY_E_LIMIT, "%s: nested deeper than %zu levels", what, max_depth);
		} else if ((c == ']' || c == '}') && depth > 0) {
			depth--;
		}
	}
	return LY_OK;
}

ly_status
ly_json_parse_strict(const char *what, const char *data, size_t len, size_t max_len, size_t max_depth, json_t **out,
    struct ly_error *err)
{
	json_error_t jerr;

	*out = NULL;
	if (data == NULL)
		return ly_error_set(err, LY_E_INVALID, "%s: nothing to parse", what);
	if (len > max_len)
		return ly_error_set(err, LY_E_LIMIT, "%s: %zu bytes, at most %zu accepted", what, len, max_len);
	LY_TRY(depth_check(what, data, len, max_depth, err));
	json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (j == NULL)
		return ly_error_set(err, LY_E_INVALID, "%s: not JSON: line %d column %d: %s", what, jerr.line, jerr.column,
		    jerr.text);
	*out = j;
	return LY_OK;
}
