/*
 * config.c: the configuration file, see config.h.
 *
 * libyaml's event parser, not its document loader: we see every anchor,
 * alias and tag as it comes and refuse it before anything is built, and a
 * nesting error stops the parse at the first level too deep. Each parse
 * function holds at most one event at a time and deletes it on every path.
 * The table is small (LY_CONFIG_ENTRIES_MAX), so lookups are linear.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <yaml.h>

enum entry_kind {
	ENTRY_SCALAR, /* a value */
	ENTRY_NULL,   /* written with no value: "key:", "key: ~", "key: null" */
	ENTRY_LIST,   /* a list of scalars */
	ENTRY_MAP,    /* a mapping; its keys are entries of their own */
};

struct entry {
	char *key;  /* dotted path, heap */
	enum entry_kind kind;
	size_t line; /* 1-based line of the key */
	char *value; /* ENTRY_SCALAR: heap, NUL-free */
	char **items; /* ENTRY_LIST: heap, NULL-terminated, each heap */
	size_t *item_lines;
	size_t nitems;
	size_t items_cap;
};

struct ly_config {
	char *name;
	struct entry *entries;
	size_t count;
	size_t cap;
	size_t values; /* entries + list items, against LY_CONFIG_ENTRIES_MAX */
};

struct parse {
	yaml_parser_t parser;
	struct ly_config *cfg;
	struct ly_error *err;
};

static const char *const empty_list[] = { NULL };

/* ---- messages ---- */

/* Copies at most 32 bytes of `s` for a message, non-printable bytes as '?'. */
static void
show(const char *s, char out[40])
{
	size_t i = 0;
	for (; s[i] != '\0' && i < 32; i++) {
		unsigned char c = (unsigned char)s[i];
		out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	if (s[i] != '\0') {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
}

static size_t
event_line(const yaml_event_t *ev)
{
	return ev->start_mark.line + 1;
}

/* ---- the table ---- */

static void
entry_cleanup(struct entry *e)
{
	free(e->key);
	free(e->value);
	if (e->items != NULL) {
		for (size_t i = 0; i < e->nitems; i++)
			free(e->items[i]);
	}
	free(e->items);
	free(e->item_lines);
}

void
ly_config_free(struct ly_config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < cfg->count; i++)
		entry_cleanup(&cfg->entries[i]);
	free(cfg->entries);
	free(cfg->name);
	free(cfg);
}

static const struct entry *
find(const struct ly_config *cfg, const char *key)
{
	if (cfg == NULL || key == NULL)
		return NULL;
	for (size_t i = 0; i < cfg->count; i++) {
		if (strcmp(cfg->entries[i].key, key) == 0)
			return &cfg->entries[i];
	}
	return NULL;
}

/* Counts one more key or list item against LY_CONFIG_ENTRIES_MAX. */
static ly_status
count_value(struct parse *p, size_t line)
{
	if (p->cfg->values >= LY_CONFIG_ENTRIES_MAX)
		return ly_error_set(p->err, LY_E_LIMIT, "%s:%zu: more than %d keys and list items",
		    p->cfg->name, line, LY_CONFIG_ENTRIES_MAX);
	p->cfg->values++;
	return LY_OK;
}

/*
 * Adds an entry for `key` (taking ownership of it on success only) and
 * returns its index: indexes stay valid when the array moves.
 */
static ly_status
add_entry(struct parse *p, char *key, enum entry_kind kind, size_t line, size_t *idx)
{
	struct ly_config *cfg = p->cfg;
	const struct entry *dup = find(cfg, key);
	if (dup != NULL)
		return ly_error_set(p->err, LY_E_INVALID, "%s:%zu: key %s: duplicate key (first at line %zu)",
		    cfg->name, line, key, dup->line);
	LY_TRY(count_value(p, line));
	if (cfg->count == cfg->cap) {
		size_t ncap = cfg->cap == 0 ? 16 : cfg->cap * 2;
		struct entry *n = reallocarray(cfg->entries, ncap, sizeof(*n));
		if (n == NULL)
			return ly_error_set(p->err, LY_E_NOMEM, "%s: out of memory", cfg->name);
		cfg->entries = n;
		cfg->cap = ncap;
	}
	struct entry *e = &cfg->entries[cfg->count];
	memset(e, 0, sizeof(*e));
	e->key = key;
	e->kind = kind;
	e->line = line;
	*idx = cfg->count++;
	return LY_OK;
}

static ly_status
add_item(struct parse *p, size_t idx, const char *value, size_t line)
{
	struct entry *e = &p->cfg->entries[idx];
	LY_TRY(count_value(p, line));
	if (e->nitems + 1 >= e->items_cap) {
		size_t ncap = e->items_cap == 0 ? 8 : e->items_cap * 2;
		char **items = reallocarray(e->items, ncap, sizeof(*items));
		if (items == NULL)
			return ly_error_set(p->err, LY_E_NOMEM, "%s: out of memory", p->cfg->name);
		e->items = items;
		size_t *lines = reallocarray(e->item_lines, ncap, sizeof(*lines));
		if (lines == NULL)
			return ly_error_set(p->err, LY_E_NOMEM, "%s: out of memory", p->cfg->name);
		e->item_lines = lines;
		e->items_cap = ncap;
	}
	char *copy = strdup(value);
	if (copy == NULL)
		return ly_error_set(p->err, LY_E_NOMEM, "%s: out of memory", p->cfg->name);
	e->items[e->nitems] = copy;
	e->item_lines[e->nitems] = line;
	e->nitems++;
	e->items[e->nitems] = NULL;
	return LY_OK;
}

/* ---- events ---- */

/*
 * Pulls the next event into *ev and refuses, up front, everything the
 * format does not allow whatever the position: aliases, anchors, tags and
 * %TAG directives. On failure *ev holds nothing to delete.
 */
static ly_status
next_event(struct parse *p, yaml_event_t *ev)
{
	const char *name = p->cfg->name;

	if (!yaml_parser_parse(&p->parser, ev)) {
		const yaml_parser_t *y = &p->parser;
		if (y->error == YAML_MEMORY_ERROR)
			return ly_error_set(p->err, LY_E_NOMEM, "%s: out of memory", name);
		const char *problem = y->problem != NULL ? y->problem : "unknown error";
		if (y->error == YAML_READER_ERROR)
			return ly_error_set(p->err, LY_E_INVALID, "%s: byte offset %zu: %s", name, y->problem_offset,
			    problem);
		if (y->context != NULL)
			return ly_error_set(p->err, LY_E_INVALID, "%s:%zu: YAML syntax error: %s %s (line %zu)", name,
			    y->problem_mark.line + 1, problem, y->context, y->context_mark.line + 1);
		return ly_error_set(p->err, LY_E_INVALID, "%s:%zu: YAML syntax error: %s", name,
		    y->problem_mark.line + 1, problem);
	}

	size_t line = event_line(ev);
	const yaml_char_t *anchor = NULL;
	const yaml_char_t *tag = NULL;
	bool directives = false;
	switch (ev->type) {
	case YAML_ALIAS_EVENT:
		yaml_event_delete(ev);
		return ly_error_set(p->err, LY_E_INVALID, "%s:%zu: aliases ('*') are not allowed", name, line);
	case YAML_SCALAR_EVENT:
		anchor = ev->data.scalar.anchor;
		tag = ev->data.scalar.tag;
		break;
	case YAML_SEQUENCE_START_EVENT:
		anchor = ev->data.sequence_start.anchor;
		tag = ev->data.sequence_start.tag;
		break;
	case YAML_MAPPING_START_EVENT:
		anchor = ev->data.mapping_start.anchor;
		tag = ev->data.mapping_start.tag;
		break;
	case YAML_DOCUMENT_START_EVENT:
		directives = ev->data.document_start.tag_directives.start !=
		    ev->data.document_start.tag_directives.end;
		break;
	default:
		break;
	}
	if (anchor != NULL) {
		yaml_event_delete(ev);
		return ly_error_set(p->err, LY_E_INVALID, "%s:%zu: anchors ('&') are not allowed", name, line);
	}
	if (tag != NULL || directives) {
		yaml_event_delete(ev);
		return ly_error_set(p->err, LY_E_INVALID, "%s:%zu: tags ('!') are not allowed", name, line);
	}
	return LY_OK;
}

static bool
key_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
	    c == '-';
}

/* Builds "prefix.name" from a key event, after checking the name. */
static ly_status
make_key(struct parse *p, const char *prefix, const yaml_event_t *ev, char **out)
{
	const char *name = p->cfg->name;
	size_t line = event_line(ev);
	const char *k = (const char *)ev->data.scalar.value;
	size_t klen = ev->data.scalar.length;
	char shown[40];

	if (klen == 0)
		return ly_error_set(p->err, LY_E_INVALID, "%s:%zu: %s%sempty key", name, line,
		    prefix != NULL ? prefix : "", prefix != NULL ? ": " : "");
	size_t plen = prefix != NULL ? strlen(prefix) + 1 : 0;
	if (klen > LY_CONFIG_KEY_MAX || plen + klen > LY_CONFIG_KEY_MAX)
		return ly_error_set(p->err, LY_E_LIMIT, "%s:%zu: key longer than %d bytes", name, line,
		    LY_CONFIG_KEY_MAX);
	/*
	 * A quoted key may hold dots: a trust domain names a mapping
	 * (server.federation.federates_with."b.test"). Its dotted path is then
	 * read back by the caller, which knows the keys below it.
	 */
	bool quoted = ev->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
	    ev->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
	for (size_t i = 0; i < klen; i++) {
		if (quoted && k[i] == '.' && i > 0 && i + 1 < klen && k[i - 1] != '.')
			continue;
		if (!key_char_ok((unsigned char)k[i])) {
			show(k, shown);
			return ly_error_set(p->err, LY_E_INVALID,
			    "%s:%zu: key '%s': invalid character at offset %zu (names are [A-Za-z0-9_-]%s)", name,
			    line, shown, i, k[i] == '.' && !quoted ? "; quote a trust domain: \"b.test\":" : "");
		}
	}
	char *key = malloc(plen + klen + 1);
	if (key == NULL)
		return ly_error_set(p->err, LY_E_NOMEM, "%s: out of memory", name);
	if (prefix != NULL) {
		memcpy(key, prefix, plen - 1);
		key[plen - 1] = '.';
	}
	memcpy(key + plen, k, klen);
	key[plen + klen] = '\0';
	*out = key;
	return LY_OK;
}

/* Checks a value scalar: size cap, no NUL (a "\0" escape would cut it short). */
static ly_status
check_scalar(struct parse *p, const char *key, const yaml_event_t *ev)
{
	size_t line = event_line(ev);
	if (ev->data.scalar.length > LY_CONFIG_VALUE_MAX)
		return ly_error_set(p->err, LY_E_LIMIT, "%s:%zu: key %s: value longer than %d bytes",
		    p->cfg->name, line, key, LY_CONFIG_VALUE_MAX);
	if (memchr(ev->data.scalar.value, '\0', ev->data.scalar.length) != NULL)
		return ly_error_set(p->err, LY_E_INVALID, "%s:%zu: key %s: value contains a NUL byte",
		    p->cfg->name, line, key);
	return LY_OK;
}

static bool
scalar_is_null(const yaml_event_t *ev)
{
	if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *v = (const char *)ev->data.scalar.value;
	return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
	    strcmp(v, "NULL") == 0;
}

static ly_status
parse_list(struct parse *p, size_t idx)
{
	yaml_event_t ev;
	ly_status rc;

	for (;;) {
		const char *key = p->cfg->entries[idx].key;
		LY_TRY(next_event(p, &ev));
		size_t line = event_line(&ev);
		switch (ev.type) {
		case YAML_SEQUENCE_END_EVENT:
			rc = LY_OK;
			goto out;
		case YAML_SCALAR_EVENT:
			rc = check_scalar(p, key, &ev);
			if (rc != LY_OK)
				goto out;
			if (scalar_is_null(&ev)) {
				rc = ly_error_set(p->err, LY_E_INVALID, "%s:%zu: key %s: list item %zu has no value",
				    p->cfg->name, line, key, p->cfg->entries[idx].nitems);
				goto out;
			}
			rc = add_item(p, idx, (const char *)ev.data.scalar.value, line);
			if (rc != LY_OK)
				goto out;
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			rc = ly_error_set(p->err, LY_E_INVALID, "%s:%zu: key %s: a list may hold only single values, not %s",
			    p->cfg->name, line, key, ev.type == YAML_SEQUENCE_START_EVENT ? "lists" : "mappings");
			goto out;
		default:
			rc = ly_error_set(p->err, LY_E_INTERNAL, "%s:%zu: unexpected YAML event %d", p->cfg->name,
			    line, (int)ev.type);
			goto out;
		}
		yaml_event_delete(&ev);
	}
out:
	yaml_event_delete(&ev);
	return rc;
}

static ly_status
parse_mapping(struct parse *p, const char *prefix, int depth)
{
	yaml_event_t ev;
	char *key = NULL;
	ly_status rc;
	size_t idx;

	for (;;) {
		/* The key. */
		LY_TRY(next_event(p, &ev));
		size_t line = event_line(&ev);
		if (ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			return LY_OK;
		}
		if (ev.type != YAML_SCALAR_EVENT) {
			rc = ly_error_set(p->err, LY_E_INVALID, "%s:%zu: %s%sa key must be a name, not a %s",
			    p->cfg->name, line, prefix != NULL ? prefix : "", prefix != NULL ? ": " : "",
			    ev.type == YAML_SEQUENCE_START_EVENT ? "list" : "mapping");
			yaml_event_delete(&ev);
			return rc;
		}
		rc = make_key(p, prefix, &ev, &key);
		yaml_event_delete(&ev);
		if (rc != LY_OK)
			return rc;
		if (depth > LY_CONFIG_DEPTH_MAX) {
			rc = ly_error_set(p->err, LY_E_LIMIT, "%s:%zu: key %s: nested deeper than %d levels",
			    p->cfg->name, line, key, LY_CONFIG_DEPTH_MAX);
			goto out_key;
		}

		/* Its value. */
		rc = next_event(p, &ev);
		if (rc != LY_OK)
			goto out_key;
		switch (ev.type) {
		case YAML_SCALAR_EVENT: {
			rc = check_scalar(p, key, &ev);
			if (rc != LY_OK)
				goto out;
			bool null = scalar_is_null(&ev);
			char *value = NULL;
			if (!null) {
				value = strdup((const char *)ev.data.scalar.value);
				if (value == NULL) {
					rc = ly_error_set(p->err, LY_E_NOMEM, "%s: out of memory", p->cfg->name);
					goto out;
				}
			}
			rc = add_entry(p, key, null ? ENTRY_NULL : ENTRY_SCALAR, line, &idx);
			if (rc != LY_OK) {
				free(value);
				goto out;
			}
			key = NULL;
			p->cfg->entries[idx].value = value;
			break;
		}
		case YAML_SEQUENCE_START_EVENT:
			rc = add_entry(p, key, ENTRY_LIST, line, &idx);
			if (rc != LY_OK)
				goto out;
			key = NULL;
			yaml_event_delete(&ev);
			/* An empty list still gets its NULL terminator. */
			rc = parse_list(p, idx);
			if (rc != LY_OK)
				return rc;
			continue;
		case YAML_MAPPING_START_EVENT:
			rc = add_entry(p, key, ENTRY_MAP, line, &idx);
			if (rc != LY_OK)
				goto out;
			key = NULL;
			yaml_event_delete(&ev);
			rc = parse_mapping(p, p->cfg->entries[idx].key, depth + 1);
			if (rc != LY_OK)
				return rc;
			continue;
		default:
			rc = ly_error_set(p->err, LY_E_INTERNAL, "%s:%zu: unexpected YAML event %d", p->cfg->name,
			    line, (int)ev.type);
			goto out;
		}
		yaml_event_delete(&ev);
	}
out:
	yaml_event_delete(&ev);
out_key:
	free(key);
	return rc;
}

/* stream-start [document-start mapping document-end] stream-end */
static ly_status
parse_stream(struct parse *p)
{
	yaml_event_t ev;
	ly_status rc;

	LY_TRY(next_event(p, &ev));
	yaml_event_delete(&ev); /* stream start */
	LY_TRY(next_event(p, &ev));
	if (ev.type == YAML_STREAM_END_EVENT) {
		/* Nothing but comments: an empty configuration. */
		yaml_event_delete(&ev);
		return LY_OK;
	}
	yaml_event_delete(&ev); /* document start */
	LY_TRY(next_event(p, &ev));
	if (ev.type != YAML_MAPPING_START_EVENT) {
		rc = ly_error_set(p->err, LY_E_INVALID, "%s:%zu: the document is not a mapping of keys", p->cfg->name,
		    event_line(&ev));
		yaml_event_delete(&ev);
		return rc;
	}
	yaml_event_delete(&ev);
	LY_TRY(parse_mapping(p, NULL, 1));
	LY_TRY(next_event(p, &ev));
	yaml_event_delete(&ev); /* document end */
	LY_TRY(next_event(p, &ev));
	if (ev.type != YAML_STREAM_END_EVENT) {
		rc = ly_error_set(p->err, LY_E_INVALID, "%s:%zu: more than one document ('---')", p->cfg->name,
		    event_line(&ev));
		yaml_event_delete(&ev);
		return rc;
	}
	yaml_event_delete(&ev);
	return LY_OK;
}

ly_status
ly_config_load_buf(const char *name, const void *data, size_t len, struct ly_config **out, struct ly_error *err)
{
	struct parse p;
	bool parser_ready = false;
	ly_status rc;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "config: no output");
	*out = NULL;
	if (name == NULL)
		name = "config";
	if (data == NULL && len > 0)
		return ly_error_set(err, LY_E_INVALID, "%s: no data", name);
	if (len > LY_CONFIG_FILE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "%s: %zu bytes, over the %d-byte limit", name, len,
		    LY_CONFIG_FILE_MAX);

	memset(&p, 0, sizeof(p));
	p.err = err;
	p.cfg = calloc(1, sizeof(*p.cfg));
	if (p.cfg == NULL)
		return ly_error_set(err, LY_E_NOMEM, "%s: out of memory", name);
	p.cfg->name = strdup(name);
	if (p.cfg->name == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "%s: out of memory", name);
		goto out;
	}
	if (!yaml_parser_initialize(&p.parser)) {
		rc = ly_error_set(err, LY_E_NOMEM, "%s: out of memory", name);
		goto out;
	}
	parser_ready = true;
	yaml_parser_set_input_string(&p.parser, len > 0 ? data : (const unsigned char *)"", len);
	rc = parse_stream(&p);
	if (rc != LY_OK)
		goto out;
	*out = p.cfg;
	p.cfg = NULL;
out:
	if (parser_ready)
		yaml_parser_delete(&p.parser);
	ly_config_free(p.cfg);
	return rc;
}

ly_status
ly_config_load_file(const char *path, struct ly_config **out, struct ly_error *err)
{
	char *data = NULL;
	int fd = -1;
	ly_status rc;
	struct stat st;
	char ebuf[128];

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "config: no output");
	*out = NULL;
	if (path == NULL || path[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "config: no file name");
	/* O_NONBLOCK: opening a FIFO must not hang; it is refused below. */
	/*
	 * Symlinks are followed: a Kubernetes ConfigMap mount is a link into
	 * ..data/, and the operator chose the path. What is read must still be
	 * a regular file (checked on the opened fd, so no race).
	 */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return ly_error_set(err, LY_E_IO, "%s: cannot open: %s", path, strerror_r(errno, ebuf, sizeof(ebuf)));
	if (fstat(fd, &st) != 0) {
		rc = ly_error_set(err, LY_E_IO, "%s: cannot stat: %s", path, strerror_r(errno, ebuf, sizeof(ebuf)));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = ly_error_set(err, LY_E_INVALID, "%s: not a regular file", path);
		goto out;
	}
	if (st.st_size < 0 || (uintmax_t)st.st_size > LY_CONFIG_FILE_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "%s: %jd bytes, over the %d-byte limit", path, (intmax_t)st.st_size,
		    LY_CONFIG_FILE_MAX);
		goto out;
	}
	/* One byte of room past the size seen: a file that grew is noticed. */
	size_t want = (size_t)st.st_size + 1;
	data = malloc(want);
	if (data == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "%s: out of memory", path);
		goto out;
	}
	size_t got = 0;
	while (got < want) {
		ssize_t n = read(fd, data + got, want - got);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			rc = ly_error_set(err, LY_E_IO, "%s: cannot read: %s", path,
			    strerror_r(errno, ebuf, sizeof(ebuf)));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got == want) {
		rc = ly_error_set(err, LY_E_IO, "%s: changed while being read", path);
		goto out;
	}
	rc = ly_config_load_buf(path, data, got, out, err);
out:
	free(data);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* ---- lookups ---- */

const char *
ly_config_name(const struct ly_config *cfg)
{
	return cfg != NULL ? cfg->name : "";
}

size_t
ly_config_count(const struct ly_config *cfg)
{
	return cfg != NULL ? cfg->count : 0;
}

const char *
ly_config_key_at(const struct ly_config *cfg, size_t i)
{
	if (cfg == NULL || i >= cfg->count)
		return NULL;
	return cfg->entries[i].key;
}

bool
ly_config_has(const struct ly_config *cfg, const char *key)
{
	return find(cfg, key) != NULL;
}

size_t
ly_config_line(const struct ly_config *cfg, const char *key)
{
	const struct entry *e = find(cfg, key);
	return e != NULL ? e->line : 0;
}

static ly_status
bad_value(const struct ly_config *cfg, const struct entry *e, struct ly_error *err, const char *why)
{
	char shown[40];
	show(e->value, shown);
	return ly_error_set(err, LY_E_INVALID, "%s:%zu: key %s: '%s' %s", cfg->name, e->line, e->key, shown, why);
}

/* Finds a single value: absent gives *e = NULL and LY_OK. */
static ly_status
find_scalar(const struct ly_config *cfg, const char *key, const struct entry **out, struct ly_error *err)
{
	const struct entry *e = find(cfg, key);
	*out = NULL;
	if (e == NULL)
		return LY_OK;
	switch (e->kind) {
	case ENTRY_SCALAR:
		*out = e;
		return LY_OK;
	case ENTRY_NULL:
		return ly_error_set(err, LY_E_INVALID, "%s:%zu: key %s: has no value", cfg->name, e->line, e->key);
	case ENTRY_LIST:
		return ly_error_set(err, LY_E_INVALID, "%s:%zu: key %s: is a list, not a single value", cfg->name,
		    e->line, e->key);
	case ENTRY_MAP:
		return ly_error_set(err, LY_E_INVALID, "%s:%zu: key %s: is a mapping, not a single value",
		    cfg->name, e->line, e->key);
	}
	return ly_error_set(err, LY_E_INTERNAL, "%s: key %s: bad entry kind", cfg->name, e->key);
}

ly_status
ly_config_get_string(const struct ly_config *cfg, const char *key, const char *def, const char **out,
    struct ly_error *err)
{
	const struct entry *e;
	LY_TRY(find_scalar(cfg, key, &e, err));
	*out = e != NULL ? e->value : def;
	return LY_OK;
}

/* Parses s[0, len) as decimal; returns NULL or why it is not one. */
static const char *
parse_decimal(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;
	if (len == 0)
		return "is not a number";
	if (s[0] == '-')
		return "is negative";
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return "is not a decimal number";
		if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v))
			return "is too large";
	}
	*out = v;
	return NULL;
}

static const char *
parse_u64(const char *s, uint64_t *out)
{
	size_t len = strlen(s);
	const char *why = parse_decimal(s, len, out);
	/* "010" is octal to some YAML readers and decimal to others: refuse. */
	if (why == NULL && len > 1 && s[0] == '0')
		return "has a leading zero";
	return why;
}

/*
 * The scalar at `key` read by `parse` (NULL, or why the value is refused:
 * then the error names the file, line and key); `def` when absent.
 */
static ly_status
get_parsed(const struct ly_config *cfg, const char *key, const char *(*parse)(const char *, uint64_t *), uint64_t def,
    uint64_t *out, struct ly_error *err)
{
	const struct entry *e;
	uint64_t v;
	LY_TRY(find_scalar(cfg, key, &e, err));
	if (e == NULL) {
		*out = def;
		return LY_OK;
	}
	const char *why = parse(e->value, &v);
	if (why != NULL)
		return bad_value(cfg, e, err, why);
	*out = v;
	return LY_OK;
}

ly_status
ly_config_get_u64(const struct ly_config *cfg, const char *key, uint64_t def, uint64_t *out, struct ly_error *err)
{
	return get_parsed(cfg, key, parse_u64, def, out, err);
}

static const char *
parse_port(const char *s, uint64_t *out)
{
	const char *why = parse_u64(s, out);
	if (why == NULL && (*out < 1 || *out > 65535))
		why = "is not a port (1..65535)";
	return why;
}

ly_status
ly_config_get_port(const struct ly_config *cfg, const char *key, uint16_t def, uint16_t *out, struct ly_error *err)
{
	uint64_t v = 0;
	LY_TRY(get_parsed(cfg, key, parse_port, def, &v, err));
	*out = (uint16_t)v;
	return LY_OK;
}

ly_status
ly_config_get_bool(const struct ly_config *cfg, const char *key, bool def, bool *out, struct ly_error *err)
{
	const struct entry *e;
	LY_TRY(find_scalar(cfg, key, &e, err));
	if (e == NULL) {
		*out = def;
		return LY_OK;
	}
	if (strcmp(e->value, "true") == 0)
		*out = true;
	else if (strcmp(e->value, "false") == 0)
		*out = false;
	else
		return bad_value(cfg, e, err, "is not true or false");
	return LY_OK;
}

/* "300", or <digits><unit> groups with units in the order d, h, m, s. */
static const char *
parse_duration(const char *s, uint64_t *out)
{
	static const char units[] = "dhms";
	static const uint64_t mult[] = { 86400, 3600, 60, 1 };
	const char *bad = "is not a duration (like 300, 300s, 5m, 2h, 1d, 1h30m)";
	size_t len = strlen(s);
	uint64_t total = 0;
	size_t next_unit = 0; /* units already used are behind this index */

	if (len == 0)
		return bad;
	if (s[0] == '-')
		return "is negative";
	if (strspn(s, "0123456789") == len)
		return parse_u64(s, out);
	size_t i = 0;
	while (i < len) {
		size_t start = i;
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == start || i == len)
			return bad;
		const char *u = memchr(units + next_unit, s[i], sizeof(units) - 1 - next_unit);
		if (u == NULL)
			return bad;
		size_t ui = (size_t)(u - units);
		uint64_t v;
		const char *why = parse_decimal(s + start, i - start, &v);
		if (why != NULL)
			return why;
		if (__builtin_mul_overflow(v, mult[ui], &v) || __builtin_add_overflow(total, v, &total))
			return "is too large";
		next_unit = ui + 1;
		i++;
	}
	*out = total;
	return NULL;
}

ly_status
ly_config_get_duration(const struct ly_config *cfg, const char *key, uint64_t def_seconds, uint64_t *out_seconds,
    struct ly_error *err)
{
	return get_parsed(cfg, key, parse_duration, def_seconds, out_seconds, err);
}

ly_status
ly_config_get_list(const struct ly_config *cfg, const char *key, const char *const **out, size_t *count,
    struct ly_error *err)
{
	const struct entry *e = find(cfg, key);
	if (e == NULL) {
		*out = empty_list;
		*count = 0;
		return LY_OK;
	}
	switch (e->kind) {
	case ENTRY_LIST:
		*out = e->items != NULL ? (const char *const *)e->items : empty_list;
		*count = e->nitems;
		return LY_OK;
	case ENTRY_SCALAR:
		return ly_error_set(err, LY_E_INVALID, "%s:%zu: key %s: is a single value, not a list (write [value])",
		    cfg->name, e->line, e->key);
	case ENTRY_NULL:
		return ly_error_set(err, LY_E_INVALID, "%s:%zu: key %s: has no value (write [] for an empty list)",
		    cfg->name, e->line, e->key);
	case ENTRY_MAP:
		return ly_error_set(err, LY_E_INVALID, "%s:%zu: key %s: is a mapping, not a list", cfg->name,
		    e->line, e->key);
	}
	return ly_error_set(err, LY_E_INTERNAL, "%s: key %s: bad entry kind", cfg->name, e->key);
}

/* ---- unknown keys ---- */

static bool
key_known(const struct entry *e, const char *const known[])
{
	size_t klen = strlen(e->key);
	for (size_t i = 0; known[i] != NULL; i++) {
		const char *k = known[i];
		size_t len = strlen(k);
		if (strcmp(k, e->key) == 0)
			return true;
		/* "P.*": P itself and everything below it. */
		if (len >= 2 && k[len - 2] == '.' && k[len - 1] == '*') {
			size_t plen = len - 2;
			if (klen >= plen && memcmp(e->key, k, plen) == 0 && (klen == plen || e->key[plen] == '.'))
				return true;
		}
		/* A mapping on the way to a known key. */
		if (e->kind == ENTRY_MAP && len > klen && memcmp(k, e->key, klen) == 0 && k[klen] == '.')
			return true;
	}
	return false;
}

/* Levenshtein distance, or SIZE_MAX for strings too long to bother. */
static size_t
edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[LY_CONFIG_KEY_MAX + 1];
	if (la > LY_CONFIG_KEY_MAX || lb > LY_CONFIG_KEY_MAX)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] == b[j - 1] ? 0 : 1);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

ly_status
ly_config_check_known(const struct ly_config *cfg, const char *const known[], struct ly_error *err)
{
	static const char *const none[] = { NULL };
	if (cfg == NULL)
		return LY_OK;
	if (known == NULL)
		known = none;
	for (size_t i = 0; i < cfg->count; i++) {
		const struct entry *e = &cfg->entries[i];
		if (key_known(e, known))
			continue;
		const char *best = NULL;
		size_t best_d = 3; /* suggest only within two edits */
		for (size_t j = 0; known[j] != NULL; j++) {
			size_t d = edit_distance(e->key, known[j]);
			if (d < best_d) {
				best_d = d;
				best = known[j];
			}
		}
		if (best != NULL)
			return ly_error_set(err, LY_E_INVALID, "%s:%zu: unknown key %s (did you mean %s?)", cfg->name,
			    e->line, e->key, best);
		return ly_error_set(err, LY_E_INVALID, "%s:%zu: unknown key %s", cfg->name, e->line, e->key);
	}
	return LY_OK;
}

ly_status
ly_config_wrap(const struct ly_config *cfg, const char *key, struct ly_error *err, ly_status code)
{
	const struct entry *e = find(cfg, key);
	if (e == NULL)
		return ly_error_wrap(err, code, "%s%skey %s", ly_config_name(cfg), cfg != NULL ? ": " : "",
		    key != NULL ? key : "(null)");
	return ly_error_wrap(err, code, "%s:%zu: key %s", cfg->name, e->line, e->key);
}

ly_status
ly_config_wrap_item(const struct ly_config *cfg, const char *key, size_t i, struct ly_error *err, ly_status code)
{
	const struct entry *e = find(cfg, key);
	if (e == NULL || e->kind != ENTRY_LIST || i >= e->nitems)
		return ly_config_wrap(cfg, key, err, code);
	return ly_error_wrap(err, code, "%s:%zu: key %s[%zu]", cfg->name, e->item_lines[i], e->key, i);
}

/* ---- settings: flag, file, default ---- */

ly_status
ly_config_setting_string(const struct ly_config *cfg, const char *key, const char *flag_value, const char *def,
    const char **out, struct ly_error *err)
{
	if (flag_value != NULL) {
		*out = flag_value;
		return LY_OK;
	}
	return ly_config_get_string(cfg, key, def, out, err);
}

ly_status
ly_config_setting_wrap(const struct ly_config *cfg, const char *key, const char *flag_value, const char *flag_name,
    struct ly_error *err, ly_status code)
{
	if (flag_value != NULL)
		return ly_error_wrap(err, code, "flag -%s", flag_name);
	return ly_config_wrap(cfg, key, err, code);
}

ly_status
ly_config_check_path(const char *path, const char *what, struct ly_error *err)
{
	if (path == NULL || path[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "%s is empty", what);
	if (strlen(path) > LY_CONFIG_VALUE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "%s is over %d bytes", what, LY_CONFIG_VALUE_MAX);
	return LY_OK;
}

ly_status
ly_config_check_socket_path(const char *path, struct ly_error *err)
{
	const size_t sun_path_max = sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1;

	LY_TRY(ly_config_check_path(path, "socket path", err));
	if (path[0] != '/')
		return ly_error_set(err, LY_E_INVALID, "socket path %s is not absolute", path);
	if (strlen(path) > sun_path_max)
		return ly_error_set(err, LY_E_LIMIT, "socket path is over %zu bytes", sun_path_max);
	const char *slash = strrchr(path, '/');
	if (slash == path || slash[1] == '\0')
		return ly_error_set(err, LY_E_INVALID, "socket path %s must name a socket inside a directory", path);
	return LY_OK;
}
