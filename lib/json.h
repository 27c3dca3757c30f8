/*
 * json.h: the one strict JSON reader of the tree (jansson underneath).
 * Everything JSON that comes from outside (JWT headers and claims, JWKS,
 * kubelet pod lists, Kubernetes API answers) goes through it, so the rules
 * are the same everywhere.
 */
#ifndef LANYARD_JSON_H
#define LANYARD_JSON_H

#include <stddef.h>

#include <jansson.h>

#include "error.h"

/*
 * Parses `len` bytes of JSON (need not be NUL-terminated), refusing:
 * more than `max_len` bytes (LY_E_LIMIT); nesting of objects and arrays
 * deeper than `max_depth` (LY_E_LIMIT), counted outside strings before
 * jansson, which recurses, sees a byte; duplicate object keys
 * (JSON_REJECT_DUPLICATES), NUL in strings, trailing bytes, and a top
 * level that is not an object or array (LY_E_INVALID). Messages start
 * with `what` ("pod list", "json"): "<what>: nested deeper than 16
 * levels", "<what>: not JSON: line 1 column 3: ...". *out: json_decref.
 */
ly_status ly_json_parse_strict(const char *what, const char *data, size_t len, size_t max_len, size_t max_depth,
    json_t **out, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_JSON_H */
