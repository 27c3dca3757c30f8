/*
 * pbstruct.h: google.protobuf.Struct to and from JSON (jansson).
 *
 * The Workload API carries a JWT-SVID's claims as a google.protobuf.Struct
 * (SPIFFE Workload API standard, ValidateJWTSVIDResponse.claims): the agent
 * builds one from the token's JSON payload, and the clients (the agent's
 * `api validate`, lib/workload) turn it back into JSON.
 *
 * Nesting: each object or array inside another is one level, and
 * LY_JSON_DEPTH_MAX levels are accepted both ways, so what one side writes
 * the other reads. Object keys are written in sorted order, so equal claims
 * pack to equal bytes.
 *
 * Ownership: ly_pbstruct_from_json's *out belongs to the caller and is freed
 * with ly_pbstruct_free (it is built field by field, not by protobuf-c's
 * unpack: never hand it to google__protobuf__struct__free_unpacked, nor an
 * unpacked Struct to ly_pbstruct_free). ly_pbstruct_to_json returns a new
 * reference (json_decref) and never retains `st`.
 */
#ifndef LANYARD_LIB_PBSTRUCT_H
#define LANYARD_LIB_PBSTRUCT_H

#include <jansson.h>

#include "google/protobuf/struct.pb-c.h"
#include "lib/error.h"

/*
 * Builds a Struct from the JSON object `obj`. Refused: not an object
 * (LY_E_INVALID), nesting deeper than LY_JSON_DEPTH_MAX (LY_E_LIMIT).
 */
ly_status ly_pbstruct_from_json(const json_t *obj, Google__Protobuf__Struct **out, struct ly_error *err)
    LY_MUST_CHECK;

/* Frees a Struct made by ly_pbstruct_from_json; NULL is allowed. */
void ly_pbstruct_free(Google__Protobuf__Struct *st);

/*
 * The Struct as a JSON object; an absent Struct (NULL) is the empty object.
 * Whole numbers within ±2^53 become JSON integers (exp, iat, nbf), others
 * reals. NULL when nested deeper than LY_JSON_DEPTH_MAX, when a string or
 * key is not UTF-8, or out of memory.
 */
json_t *ly_pbstruct_to_json(const Google__Protobuf__Struct *st);

#endif /* LANYARD_LIB_PBSTRUCT_H */
