/*
 * k8s_podlist.h: the kubelet's pod list (GET /pods), parsed strictly, and
 * the k8s selectors of one container in it (SPEC §5).
 *
 * ly_k8s_podlist_parse checks the whole document once, so that a lookup
 * never meets a surprise: at most LY_K8S_PODLIST_MAX bytes, nesting at most
 * LY_K8S_JSON_DEPTH_MAX, no duplicate key, valid UTF-8; a JSON object with
 * "kind" "PodList" (when present) and "items" an array of at most
 * LY_K8S_PODS_MAX pods. For each pod, every field the lookup reads must
 * have its Kubernetes type (LY_E_INVALID naming the field otherwise):
 *   metadata                 object, required
 *     name, namespace, uid   strings, required
 *     labels                 object of strings, at most LY_K8S_LABELS_MAX
 *   spec.serviceAccountName, spec.nodeName              strings
 *   status.containerStatuses, status.initContainerStatuses
 *                            arrays of at most LY_K8S_CONTAINERS_MAX objects:
 *     name                   string, required
 *     containerID, image, imageID                        strings
 * Optional fields may be absent or null (Go writes a nil map or slice as
 * null). Fields the lookup does not read are not checked.
 *
 * ly_k8s_podlist_find matches the container by the part after "://" of
 * status.containerStatuses[].containerID ("containerd://<id>",
 * "cri-o://<id>", "docker://<id>"), then initContainerStatuses, in the pod
 * whose metadata.uid is `pod_uid` (or in every pod when the cgroup named no
 * pod). The selectors, type "k8s":
 *   ns:NAMESPACE  sa:SERVICE_ACCOUNT  pod-name:NAME  pod-uid:UID
 *   pod-label:KEY:VALUE (each label)  container-name:NAME
 *   container-image:IMAGE  container-image:IMAGE_ID (status.image and
 *   status.imageID, when they differ: SPIRE does the same, so that entries
 *   can pin a digest or name a tag)  node-name:NODE
 * A value that fails ly_selector_check (lib/entry.h) gives no selector and
 * is logged: a missing selector can only take entitlements away (SPEC §1),
 * while refusing the whole workload for one odd label would take all of
 * them. An absent optional field gives no selector.
 *
 * Ownership: the parsed list is a jansson value the caller releases with
 * json_decref. Selectors are a heap array freed with ly_selectors_free.
 * Pure and fuzzable; jansson values are not shared between threads here.
 */
#ifndef LANYARD_AGENT_K8S_PODLIST_H
#define LANYARD_AGENT_K8S_PODLIST_H

#include <stddef.h>

#include <jansson.h>

#include "lib/entry.h"
#include "lib/error.h"

/* Parses and checks `len` bytes (need not be NUL-terminated). *out: json_decref. */
ly_status ly_k8s_podlist_parse(const char *text, size_t len, json_t **out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Finds container `container_id` (64 lower-case hex digits) in a list from
 * ly_k8s_podlist_parse, in pod `pod_uid` (a UUID) or, when pod_uid is NULL,
 * in any pod. On LY_OK *out holds *n selectors (free with
 * ly_selectors_free). LY_E_NOT_FOUND when no pod lists it (yet: a new pod
 * may not be listed; callers retry); LY_E_INVALID when two pods list it.
 */
ly_status ly_k8s_podlist_find(const json_t *list, const char *pod_uid, const char *container_id,
    struct ly_selector **out, size_t *n, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_AGENT_K8S_PODLIST_H */
