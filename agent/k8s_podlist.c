/* k8s_podlist.c: see k8s_podlist.h. */
#include "agent/k8s_podlist.h"

#include <stdbool.h>
#include <string.h>

#include "agent/attest_sels.h"
#include "lib/caps.h"
#include "lib/json.h"
#include "lib/log.h"

/* ---- the document ---- */

/*
 * Typed getters. `path` names the object for messages. Each returns the
 * value (NULL when absent or null) or fails on a wrong type.
 */

/* The member itself: NULL when absent or null, which is an error when `required`. */
static ly_status
get_member(const json_t *obj, const char *key, bool required, const char *path, const json_t **out,
    struct ly_error *err)
{
	const json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (v == NULL || json_is_null(v)) {
		if (required)
			return ly_error_set(err, LY_E_INVALID, "pod list: %s.%s is missing", path, key);
		return LY_OK;
	}
	*out = v;
	return LY_OK;
}

static ly_status
get_string(const json_t *obj, const char *key, bool required, const char *path, const char **out,
    struct ly_error *err)
{
	const json_t *v;
	*out = NULL;
	LY_TRY(get_member(obj, key, required, path, &v, err));
	if (v == NULL)
		return LY_OK;
	if (!json_is_string(v))
		return ly_error_set(err, LY_E_INVALID, "pod list: %s.%s must be a string", path, key);
	/* An embedded NUL would make the C string differ from the JSON one. */
	if (strlen(json_string_value(v)) != json_string_length(v))
		return ly_error_set(err, LY_E_INVALID, "pod list: %s.%s holds a NUL character", path, key);
	*out = json_string_value(v);
	return LY_OK;
}

static ly_status
get_object(const json_t *obj, const char *key, bool required, const char *path, const json_t **out,
    struct ly_error *err)
{
	const json_t *v;
	*out = NULL;
	LY_TRY(get_member(obj, key, required, path, &v, err));
	if (v != NULL && !json_is_object(v))
		return ly_error_set(err, LY_E_INVALID, "pod list: %s.%s must be an object", path, key);
	*out = v;
	return LY_OK;
}

static ly_status
get_array(const json_t *obj, const char *key, size_t max, const char *path, const json_t **out,
    struct ly_error *err)
{
	const json_t *v;
	*out = NULL;
	LY_TRY(get_member(obj, key, false, path, &v, err));
	if (v == NULL)
		return LY_OK;
	if (!json_is_array(v))
		return ly_error_set(err, LY_E_INVALID, "pod list: %s.%s must be an array", path, key);
	if (json_array_size(v) > max)
		return ly_error_set(err, LY_E_LIMIT, "pod list: %s.%s has more than %zu entries", path, key, max);
	*out = v;
	return LY_OK;
}

/* The parts of one pod the lookup reads, typed. */
struct pod {
	const char *name, *ns, *uid, *sa, *node;
	const json_t *labels;     /* NULL or an object of strings */
	const json_t *statuses;   /* NULL or an array of checked objects */
	const json_t *init_statuses;
};

struct cstatus {
	const char *name, *id, *image, *image_id;
};

static ly_status
read_status(const json_t *st, const char *path, struct cstatus *out, struct ly_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!json_is_object(st))
		return ly_error_set(err, LY_E_INVALID, "pod list: %s must be an object", path);
	LY_TRY(get_string(st, "name", true, path, &out->name, err));
	LY_TRY(get_string(st, "containerID", false, path, &out->id, err));
	LY_TRY(get_string(st, "image", false, path, &out->image, err));
	return get_string(st, "imageID", false, path, &out->image_id, err);
}

static ly_status
check_statuses(const json_t *arr, size_t item, const char *key, struct ly_error *err)
{
	char path[96];
	struct cstatus cs;

	for (size_t i = 0; i < json_array_size(arr); i++) {
		(void)snprintf(path, sizeof(path), "items[%zu].status.%s[%zu]", item, key, i);
		LY_TRY(read_status(json_array_get(arr, i), path, &cs, err));
	}
	return LY_OK;
}

static ly_status
read_pod(const json_t *it, size_t i, bool deep, struct pod *p, struct ly_error *err)
{
	char path[64];
	const json_t *meta, *spec, *status;

	memset(p, 0, sizeof(*p));
	(void)snprintf(path, sizeof(path), "items[%zu]", i);
	if (!json_is_object(it))
		return ly_error_set(err, LY_E_INVALID, "pod list: %s must be an object", path);
	LY_TRY(get_object(it, "metadata", true, path, &meta, err));
	LY_TRY(get_object(it, "spec", false, path, &spec, err));
	LY_TRY(get_object(it, "status", false, path, &status, err));
	(void)snprintf(path, sizeof(path), "items[%zu].metadata", i);
	LY_TRY(get_string(meta, "name", true, path, &p->name, err));
	LY_TRY(get_string(meta, "namespace", true, path, &p->ns, err));
	LY_TRY(get_string(meta, "uid", true, path, &p->uid, err));
	LY_TRY(get_object(meta, "labels", false, path, &p->labels, err));
	if (p->labels != NULL) {
		if (json_object_size(p->labels) > LY_K8S_LABELS_MAX)
			return ly_error_set(err, LY_E_LIMIT, "pod list: %s.labels has more than %d labels", path,
			    LY_K8S_LABELS_MAX);
		const char *k;
		const json_t *v;
		json_object_foreach((json_t *)(uintptr_t)p->labels, k, v) {
			if (!json_is_string(v))
				return ly_error_set(err, LY_E_INVALID, "pod list: %s.labels values must be strings",
				    path);
		}
	}
	if (spec != NULL) {
		(void)snprintf(path, sizeof(path), "items[%zu].spec", i);
		LY_TRY(get_string(spec, "serviceAccountName", false, path, &p->sa, err));
		LY_TRY(get_string(spec, "nodeName", false, path, &p->node, err));
	}
	if (status != NULL) {
		(void)snprintf(path, sizeof(path), "items[%zu].status", i);
		LY_TRY(get_array(status, "containerStatuses", LY_K8S_CONTAINERS_MAX, path, &p->statuses, err));
		LY_TRY(get_array(status, "initContainerStatuses", LY_K8S_CONTAINERS_MAX, path, &p->init_statuses,
		    err));
		if (deep) {
			LY_TRY(check_statuses(p->statuses, i, "containerStatuses", err));
			LY_TRY(check_statuses(p->init_statuses, i, "initContainerStatuses", err));
		}
	}
	return LY_OK;
}

static ly_status
get_items(const json_t *root, const json_t **items, struct ly_error *err)
{
	const char *kind;

	*items = NULL;
	if (!json_is_object(root))
		return ly_error_set(err, LY_E_INVALID, "pod list: not a JSON object");
	LY_TRY(get_string(root, "kind", false, "(root)", &kind, err));
	if (kind != NULL && strcmp(kind, "PodList") != 0)
		return ly_error_set(err, LY_E_INVALID, "pod list: kind must be PodList");
	if (json_object_get(root, "items") == NULL)
		return ly_error_set(err, LY_E_INVALID, "pod list: items is missing");
	return get_array(root, "items", LY_K8S_PODS_MAX, "(root)", items, err);
}

ly_status
ly_k8s_podlist_parse(const char *text, size_t len, json_t **out, struct ly_error *err)
{
	const json_t *items;
	struct pod p;
	ly_status rc;

	*out = NULL;
	if (len > LY_K8S_PODLIST_MAX)
		return ly_error_set(err, LY_E_LIMIT, "pod list: longer than %d bytes", LY_K8S_PODLIST_MAX);
	json_t *root;
	LY_TRY(ly_json_parse_strict("pod list", text, len, LY_K8S_PODLIST_MAX, LY_K8S_JSON_DEPTH_MAX, &root, err));
	rc = get_items(root, &items, err);
	for (size_t i = 0; rc == LY_OK && i < json_array_size(items); i++)
		rc = read_pod(json_array_get(items, i), i, true, &p, err);
	if (rc != LY_OK) {
		json_decref(root);
		return rc;
	}
	*out = root;
	return LY_OK;
}

/* ---- the lookup ---- */

/* The runtime's ID in "<runtime>://<id>". */
static bool
id_matches(const char *status_id, const char *container_id)
{
	if (status_id == NULL)
		return false;
	const char *sep = strstr(status_id, "://");
	return sep != NULL && strcmp(sep + 3, container_id) == 0;
}

/* Index of the status naming `container_id` in `arr`, or -1. */
static ly_status
find_in(const json_t *arr, const char *container_id, struct cstatus *out, bool *found, struct ly_error *err)
{
	*found = false;
	for (size_t i = 0; i < json_array_size(arr); i++) {
		LY_TRY(read_status(json_array_get(arr, i), "containerStatus", out, err));
		if (id_matches(out->id, container_id)) {
			*found = true;
			return LY_OK;
		}
	}
	return LY_OK;
}

/* Adds one k8s selector; a value that fails its rule is skipped and logged. */
static ly_status
add(struct ly_attest_sels *l, const struct pod *p, const char *key, const char *value, const char *value2,
    struct ly_error *err)
{
	struct ly_error e;
	ly_status rc;

	if (value == NULL)
		return LY_OK;
	if (value2 != NULL)
		rc = ly_attest_sels_addf(l, "k8s", &e, "%s:%s:%s", key, value, value2);
	else
		rc = ly_attest_sels_addf(l, "k8s", &e, "%s:%s", key, value);
	if (rc == LY_E_INVALID) {
		log_warn("pod %s/%s: no k8s:%s selector: %s", p->ns, p->name, key, e.msg);
		return LY_OK;
	}
	if (rc != LY_OK && err != NULL)
		*err = e;
	return rc;
}

static ly_status
selectors(const struct pod *p, const struct cstatus *cs, struct ly_selector **out, size_t *n,
    struct ly_error *err)
{
	struct ly_attest_sels l = LY_ATTEST_SELS_INIT;
	ly_status rc;

	rc = add(&l, p, "ns", p->ns, NULL, err);
	if (rc == LY_OK)
		rc = add(&l, p, "sa", p->sa, NULL, err);
	if (rc == LY_OK)
		rc = add(&l, p, "pod-name", p->name, NULL, err);
	if (rc == LY_OK)
		rc = add(&l, p, "pod-uid", p->uid, NULL, err);
	if (rc == LY_OK && p->labels != NULL) {
		const char *k;
		const json_t *v;
		json_object_foreach((json_t *)(uintptr_t)p->labels, k, v) {
			rc = add(&l, p, "pod-label", k, json_string_value(v), err);
			if (rc != LY_OK)
				break;
		}
	}
	if (rc == LY_OK)
		rc = add(&l, p, "container-name", cs->name, NULL, err);
	if (rc == LY_OK)
		rc = add(&l, p, "container-image", cs->image, NULL, err);
	if (rc == LY_OK)
		rc = add(&l, p, "container-image", cs->image_id, NULL, err); /* a duplicate is not added twice */
	if (rc == LY_OK)
		rc = add(&l, p, "node-name", p->node, NULL, err);
	if (rc == LY_OK)
		ly_attest_sels_take(&l, out, n);
	ly_attest_sels_cleanup(&l);
	return rc;
}

ly_status
ly_k8s_podlist_find(const json_t *list, const char *pod_uid, const char *container_id, struct ly_selector **out,
    size_t *n, struct ly_error *err)
{
	const json_t *items;
	struct pod p, match_pod;
	struct cstatus cs, match_cs;
	bool matched = false, pod_seen = false;

	*out = NULL;
	*n = 0;
	memset(&match_pod, 0, sizeof(match_pod));
	memset(&match_cs, 0, sizeof(match_cs));
	if (container_id == NULL || container_id[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "pod list lookup: no container ID");
	LY_TRY(get_items(list, &items, err));
	for (size_t i = 0; i < json_array_size(items); i++) {
		bool found = false;
		LY_TRY(read_pod(json_array_get(items, i), i, false, &p, err));
		if (pod_uid != NULL && strcmp(p.uid, pod_uid) != 0)
			continue;
		pod_seen = true;
		LY_TRY(find_in(p.statuses, container_id, &cs, &found, err));
		if (!found)
			LY_TRY(find_in(p.init_statuses, container_id, &cs, &found, err));
		if (!found)
			continue;
		if (matched)
			return ly_error_set(err, LY_E_INVALID,
			    "pod list: container %.12s is listed in two pods (%s/%s and %s/%s): refused", container_id,
			    match_pod.ns, match_pod.name, p.ns, p.name);
		matched = true;
		match_pod = p;
		match_cs = cs;
	}
	if (!matched) {
		if (pod_uid != NULL && !pod_seen)
			return ly_error_set(err, LY_E_NOT_FOUND, "pod %s is not listed by the kubelet", pod_uid);
		if (pod_uid != NULL)
			return ly_error_set(err, LY_E_NOT_FOUND, "container %.12s is not listed in pod %s", container_id,
			    pod_uid);
		return ly_error_set(err, LY_E_NOT_FOUND, "no pod lists container %.12s", container_id);
	}
	return selectors(&match_pod, &match_cs, out, n, err);
}
