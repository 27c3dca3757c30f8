/* pbstruct.c: see pbstruct.h. */
#include "lib/pbstruct.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/caps.h"

/* ---- freeing ---- */

static void
value_free(Google__Protobuf__Value *v)
{
	if (v == NULL)
		return;
	switch (v->kind_case) {
	case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
		free(v->string_value);
		break;
	case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
		ly_pbstruct_free(v->struct_value);
		break;
	case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
		if (v->list_value != NULL) {
			for (size_t i = 0; i < v->list_value->n_values; i++)
				value_free(v->list_value->values[i]);
			free(v->list_value->values);
			free(v->list_value);
		}
		break;
	default:
		break;
	}
	free(v);
}

void
ly_pbstruct_free(Google__Protobuf__Struct *st)
{
	if (st == NULL)
		return;
	for (size_t i = 0; i < st->n_fields; i++) {
		Google__Protobuf__Struct__FieldsEntry *f = st->fields[i];
		if (f == NULL)
			continue;
		free(f->key);
		value_free(f->value);
		free(f);
	}
	free(st->fields);
	free(st);
}

/* ---- JSON -> Struct ---- */

/* `depth` is the level of the object being built; the top one is 1. */
static ly_status struct_from_json(const json_t *obj, int depth, Google__Protobuf__Struct **out,
    struct ly_error *err);

static ly_status
list_from_json(const json_t *arr, int depth, Google__Protobuf__ListValue **out, struct ly_error *err);

/* A value found at level `depth` (an object or array there opens level depth + 1). */
static ly_status
value_from_json(const json_t *j, int depth, Google__Protobuf__Value **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	Google__Protobuf__Value *v = calloc(1, sizeof(*v));

	*out = NULL;
	if (v == NULL)
		return ly_error_set(err, LY_E_NOMEM, "claims: allocating");
	google__protobuf__value__init(v);
	switch (json_typeof(j)) {
	case JSON_NULL:
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
		v->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
		break;
	case JSON_TRUE:
	case JSON_FALSE:
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
		v->bool_value = json_is_true(j);
		break;
	case JSON_INTEGER:
	case JSON_REAL:
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
		v->number_value = json_number_value(j);
		break;
	case JSON_STRING:
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
		if ((v->string_value = strdup(json_string_value(j))) == NULL)
			rc = ly_error_set(err, LY_E_NOMEM, "claims: allocating");
		break;
	case JSON_OBJECT:
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
		rc = struct_from_json(j, depth + 1, &v->struct_value, err);
		break;
	case JSON_ARRAY:
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
		rc = list_from_json(j, depth + 1, &v->list_value, err);
		break;
	default:
		rc = ly_error_set(err, LY_E_INVALID, "claims: unknown JSON type");
		break;
	}
	if (rc != LY_OK) {
		value_free(v);
		return rc;
	}
	*out = v;
	return LY_OK;
}

static ly_status
list_from_json(const json_t *arr, int depth, Google__Protobuf__ListValue **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	Google__Protobuf__ListValue *l = NULL;
	size_t n = json_array_size(arr);

	*out = NULL;
	if (depth > LY_JSON_DEPTH_MAX)
		return ly_error_set(err, LY_E_LIMIT, "claims nest deeper than %d", LY_JSON_DEPTH_MAX);
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "claims: allocating");
	google__protobuf__list_value__init(l);
	if (n > 0 && (l->values = calloc(n, sizeof(*l->values))) == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "claims: allocating");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if ((rc = value_from_json(json_array_get(arr, i), depth, &l->values[i], err)) != LY_OK)
			goto out;
		l->n_values++;
	}
	*out = l;
	l = NULL;
out:
	if (l != NULL) {
		for (size_t i = 0; i < l->n_values; i++)
			value_free(l->values[i]);
		free(l->values);
		free(l);
	}
	return rc;
}

static int
key_cmp(const void *pa, const void *pb)
{
	const char *const *a = pa, *const *b = pb;
	return strcmp(*a, *b);
}

static ly_status
struct_from_json(const json_t *obj, int depth, Google__Protobuf__Struct **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	Google__Protobuf__Struct *s = NULL;
	const char **keys = NULL;
	size_t n = json_object_size(obj), k = 0;
	const char *key;
	json_t *val;

	*out = NULL;
	if (!json_is_object(obj))
		return ly_error_set(err, LY_E_INVALID, "claims: not a JSON object");
	if (depth > LY_JSON_DEPTH_MAX)
		return ly_error_set(err, LY_E_LIMIT, "claims nest deeper than %d", LY_JSON_DEPTH_MAX);
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "claims: allocating");
	google__protobuf__struct__init(s);
	if (n > 0 && ((s->fields = calloc(n, sizeof(*s->fields))) == NULL || (keys = calloc(n, sizeof(*keys))) == NULL)) {
		rc = ly_error_set(err, LY_E_NOMEM, "claims: allocating");
		goto out;
	}
	/* Sorted keys: equal claims pack to equal bytes. (jansson's iteration needs a non-const object.) */
	json_object_foreach((json_t *)(uintptr_t)obj, key, val)
	{
		if (k < n)
			keys[k++] = key;
	}
	if (k > 1)
		qsort(keys, k, sizeof(*keys), key_cmp);
	for (size_t i = 0; i < k; i++) {
		Google__Protobuf__Struct__FieldsEntry *f = calloc(1, sizeof(*f));
		if (f == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "claims: allocating");
			goto out;
		}
		google__protobuf__struct__fields_entry__init(f);
		s->fields[s->n_fields++] = f;
		if ((f->key = strdup(keys[i])) == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "claims: allocating");
			goto out;
		}
		if ((rc = value_from_json(json_object_get(obj, keys[i]), depth, &f->value, err)) != LY_OK)
			goto out;
	}
	*out = s;
	s = NULL;
out:
	free(keys);
	ly_pbstruct_free(s);
	return rc;
}

ly_status
ly_pbstruct_from_json(const json_t *obj, Google__Protobuf__Struct **out, struct ly_error *err)
{
	return struct_from_json(obj, 1, out, err);
}

/* ---- Struct -> JSON ---- */

static json_t *struct_to_json(const Google__Protobuf__Struct *st, int depth);

/* A value found at level `depth` (an object or array there opens level depth + 1). */
static json_t *
value_to_json(const Google__Protobuf__Value *v, int depth)
{
	if (v == NULL)
		return NULL;
	switch (v->kind_case) {
	case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
		return json_boolean(v->bool_value);
	case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE: {
		double d = v->number_value;
		/* exp, iat, nbf are whole seconds: integers (exact in a double below 2^53). */
		if (d >= -9007199254740992.0 && d <= 9007199254740992.0 && (double)(json_int_t)d == d)
			return json_integer((json_int_t)d);
		return json_real(d);
	}
	case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
		return json_string(v->string_value); /* NULL unless UTF-8 */
	case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
		return struct_to_json(v->struct_value, depth + 1);
	case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
		json_t *a;
		if (depth + 1 > LY_JSON_DEPTH_MAX || (a = json_array()) == NULL)
			return NULL;
		for (size_t i = 0; v->list_value != NULL && i < v->list_value->n_values; i++) {
			json_t *e = value_to_json(v->list_value->values[i], depth + 1);
			if (e == NULL || json_array_append_new(a, e) != 0) {
				json_decref(a);
				return NULL;
			}
		}
		return a;
	}
	default: /* null, or a kind this build does not know */
		return json_null();
	}
}

static json_t *
struct_to_json(const Google__Protobuf__Struct *st, int depth)
{
	json_t *o;

	if (depth > LY_JSON_DEPTH_MAX || (o = json_object()) == NULL)
		return NULL;
	for (size_t i = 0; st != NULL && i < st->n_fields; i++) {
		const Google__Protobuf__Struct__FieldsEntry *f = st->fields[i];
		json_t *v = f != NULL && f->key != NULL ? value_to_json(f->value, depth) : NULL;
		/* json_object_set_new refuses a key that is not UTF-8 (and frees v). */
		if (v == NULL || json_object_set_new(o, f->key, v) != 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

json_t *
ly_pbstruct_to_json(const Google__Protobuf__Struct *st)
{
	return struct_to_json(st, 1);
}
