/* cgroup.c: see cgroup.h. */
#include "agent/cgroup.h"

#include <stdlib.h>
#include <string.h>

#include "agent/procfs.h"
#include "lib/caps.h"


static bool
is_lower_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool
all_lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!is_lower_hex(s[i]))
			return false;
	}
	return true;
}

static bool
has_suffix(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);
	return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* "<64hex>" or "<prefix>-<64hex>", less a ".scope" suffix. */
static bool
container_segment(const char *seg, size_t n, char id[LY_CONTAINER_ID_LEN + 1])
{
	if (has_suffix(seg, n, ".scope"))
		n -= strlen(".scope");
	if (n < LY_CONTAINER_ID_LEN)
		return false;
	const char *hex = seg + n - LY_CONTAINER_ID_LEN;
	if (n > LY_CONTAINER_ID_LEN && (n == LY_CONTAINER_ID_LEN + 1 || hex[-1] != '-'))
		return false;
	if (!all_lower_hex(hex, LY_CONTAINER_ID_LEN))
		return false;
	memcpy(id, hex, LY_CONTAINER_ID_LEN);
	id[LY_CONTAINER_ID_LEN] = '\0';
	return true;
}

/* A UUID whose four separators are all '-' or all '_', written back with '-'. */
static bool
uuid_text(const char *s, char out[LY_UUID_LEN + 1])
{
	char sep = s[8];
	if (sep != '-' && sep != '_')
		return false;
	for (size_t i = 0; i < LY_UUID_LEN; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != sep)
				return false;
			out[i] = '-';
		} else {
			if (!is_lower_hex(s[i]))
				return false;
			out[i] = s[i];
		}
	}
	out[LY_UUID_LEN] = '\0';
	return true;
}

/* "pod<uuid>" or "<prefix>-pod<uuid>", less a ".slice" suffix. */
static bool
pod_segment(const char *seg, size_t n, char uid[LY_UUID_LEN + 1])
{
	const size_t want = strlen("pod") + LY_UUID_LEN;
	if (has_suffix(seg, n, ".slice"))
		n -= strlen(".slice");
	if (n < want)
		return false;
	const char *p = seg + n - want;
	if (n > want && (n == want + 1 || p[-1] != '-'))
		return false;
	if (memcmp(p, "pod", 3) != 0)
		return false;
	return uuid_text(p + 3, uid);
}

bool
ly_cgroup_path_ids(const char *path, size_t len, struct ly_cgroup_ids *out)
{
	memset(out, 0, sizeof(*out));
	size_t end = len;
	for (;;) {
		size_t start = end;
		while (start > 0 && path[start - 1] != '/' && path[start - 1] != ':')
			start--;
		if (!out->has_container) {
			out->has_container = container_segment(path + start, end - start, out->container_id);
		} else if (pod_segment(path + start, end - start, out->pod_uid)) {
			out->has_pod = true;
			break;
		}
		if (start == 0)
			break;
		end = start - 1;
	}
	return out->has_container;
}

/* ---- combining several paths ---- */

struct combine {
	struct ly_cgroup_ids with_pod;    /* first path naming a pod and a container */
	struct ly_cgroup_ids without_pod; /* first path naming a container only */
	bool conflict_with_pod;
	bool conflict_without_pod;
	size_t conflict_line_with_pod;
	size_t conflict_line_without_pod;
};

static void
combine_add(struct combine *c, const struct ly_cgroup_ids *ids, size_t line)
{
	if (ids->has_pod) {
		if (!c->with_pod.has_container) {
			c->with_pod = *ids;
		} else if (!c->conflict_with_pod && (strcmp(c->with_pod.container_id, ids->container_id) != 0 ||
		    strcmp(c->with_pod.pod_uid, ids->pod_uid) != 0)) {
			c->conflict_with_pod = true;
			c->conflict_line_with_pod = line;
		}
	} else {
		if (!c->without_pod.has_container) {
			c->without_pod = *ids;
		} else if (!c->conflict_without_pod && strcmp(c->without_pod.container_id, ids->container_id) != 0) {
			c->conflict_without_pod = true;
			c->conflict_line_without_pod = line;
		}
	}
}

static ly_status
combine_finish(const struct combine *c, const char *what, struct ly_cgroup_ids *out, struct ly_error *err)
{
	memset(out, 0, sizeof(*out));
	if (c->with_pod.has_container) {
		if (c->conflict_with_pod)
			return ly_error_set(err, LY_E_INVALID,
			    "%s line %zu names another pod or container than an earlier line: refused", what,
			    c->conflict_line_with_pod);
		*out = c->with_pod;
		return LY_OK;
	}
	if (c->without_pod.has_container) {
		if (c->conflict_without_pod)
			return ly_error_set(err, LY_E_INVALID,
			    "%s line %zu names another container than an earlier line: refused", what,
			    c->conflict_line_without_pod);
		*out = c->without_pod;
	}
	return LY_OK;
}

/* ---- /proc/<pid>/cgroup ---- */

static ly_status
parse_cgroup_line(const char *s, size_t n, size_t line, struct combine *c, struct ly_error *err)
{
	const char *c1 = memchr(s, ':', n);
	if (c1 == NULL)
		return ly_error_set(err, LY_E_INVALID, "cgroup line %zu: not ID:CONTROLLERS:PATH", line);
	size_t idlen = (size_t)(c1 - s);
	if (idlen == 0 || idlen > LY_CGROUP_HIERARCHY_DIGITS_MAX)
		return ly_error_set(err, LY_E_INVALID, "cgroup line %zu: hierarchy ID must be 1..%d digits", line,
		    LY_CGROUP_HIERARCHY_DIGITS_MAX);
	for (size_t i = 0; i < idlen; i++) {
		if (s[i] < '0' || s[i] > '9')
			return ly_error_set(err, LY_E_INVALID, "cgroup line %zu: hierarchy ID must be decimal", line);
	}
	size_t rest = n - idlen - 1;
	const char *c2 = memchr(c1 + 1, ':', rest);
	if (c2 == NULL)
		return ly_error_set(err, LY_E_INVALID, "cgroup line %zu: not ID:CONTROLLERS:PATH", line);
	const char *path = c2 + 1;
	size_t plen = n - (size_t)(path - s);
	if (plen == 0 || path[0] != '/')
		return ly_error_set(err, LY_E_INVALID, "cgroup line %zu: the path must start with '/'", line);
	struct ly_cgroup_ids ids;
	if (ly_cgroup_path_ids(path, plen, &ids))
		combine_add(c, &ids, line);
	return LY_OK;
}

typedef ly_status (*line_fn)(const char *s, size_t n, size_t line, struct combine *c, struct ly_error *err);

static ly_status
parse_lines(const char *text, size_t len, size_t cap, const char *what, line_fn fn, struct ly_cgroup_ids *out,
    struct ly_error *err)
{
	struct combine c;

	memset(&c, 0, sizeof(c));
	memset(out, 0, sizeof(*out));
	if (len > cap)
		return ly_error_set(err, LY_E_LIMIT, "%s is longer than %zu bytes", what, cap);
	if (memchr(text, '\0', len) != NULL)
		return ly_error_set(err, LY_E_INVALID, "%s holds a NUL byte", what);
	size_t pos = 0, line = 0;
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl != NULL ? (size_t)(nl - text) : len;
		line++;
		if (end > pos)
			LY_TRY(fn(text + pos, end - pos, line, &c, err));
		pos = end + 1;
	}
	return combine_finish(&c, what, out, err);
}

ly_status
ly_cgroup_parse(const char *text, size_t len, struct ly_cgroup_ids *out, struct ly_error *err)
{
	return parse_lines(text, len, LY_PROC_CGROUP_MAX, "cgroup", parse_cgroup_line, out, err);
}

/* ---- /proc/<pid>/mountinfo ---- */

/* Fields: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS */
#define MOUNTINFO_ROOT_FIELD 3
#define MOUNTINFO_FIXED_FIELDS 6

static ly_status
parse_mountinfo_line(const char *s, size_t n, size_t line, struct combine *c, struct ly_error *err)
{
	const char *root = NULL, *fstype = NULL;
	size_t root_len = 0, fstype_len = 0;
	size_t field = 0, pos = 0;
	bool separator = false;

	while (pos <= n) {
		size_t start = pos;
		while (pos < n && s[pos] != ' ')
			pos++;
		const char *f = s + start;
		size_t flen = pos - start;
		if (field == MOUNTINFO_ROOT_FIELD) {
			root = f;
			root_len = flen;
		} else if (field >= MOUNTINFO_FIXED_FIELDS && !separator && flen == 1 && f[0] == '-') {
			separator = true;
		} else if (separator && fstype == NULL) {
			fstype = f;
			fstype_len = flen;
			break;
		}
		field++;
		pos++;
	}
	if (!separator || fstype == NULL || fstype_len == 0 || root == NULL)
		return ly_error_set(err, LY_E_INVALID, "mountinfo line %zu: no \" - FSTYPE\" after the fixed fields",
		    line);
	bool is_cgroup = (fstype_len == 6 && memcmp(fstype, "cgroup", 6) == 0) ||
	    (fstype_len == 7 && memcmp(fstype, "cgroup2", 7) == 0);
	if (!is_cgroup || (root_len == 1 && root[0] == '/'))
		return LY_OK;
	if (root_len == 0 || root[0] != '/')
		return ly_error_set(err, LY_E_INVALID, "mountinfo line %zu: a cgroup mount root must start with '/'",
		    line);
	struct ly_cgroup_ids ids;
	if (ly_cgroup_path_ids(root, root_len, &ids))
		combine_add(c, &ids, line);
	return LY_OK;
}

ly_status
ly_cgroup_parse_mountinfo(const char *text, size_t len, struct ly_cgroup_ids *out, struct ly_error *err)
{
	return parse_lines(text, len, LY_PROC_MOUNTINFO_MAX, "mountinfo", parse_mountinfo_line, out, err);
}

ly_status
ly_cgroup_read(const char *proc_root, pid_t pid, struct ly_cgroup_ids *out, struct ly_error *err)
{
	char *text = NULL;
	size_t len = 0;
	ly_status rc;

	memset(out, 0, sizeof(*out));
	LY_TRY(ly_proc_read_file(proc_root, pid, "cgroup", LY_PROC_CGROUP_MAX, &text, &len, err));
	rc = ly_cgroup_parse(text, len, out, err);
	free(text);
	text = NULL;
	if (rc != LY_OK || out->has_container)
		goto out;
	rc = ly_proc_read_file(proc_root, pid, "mountinfo", LY_PROC_MOUNTINFO_MAX, &text, &len, err);
	if (rc != LY_OK)
		goto out;
	rc = ly_cgroup_parse_mountinfo(text, len, out, err);
out:
	free(text);
	if (rc != LY_OK)
		rc = ly_error_wrap(err, rc, "pid %ld", (long)pid);
	return rc;
}
