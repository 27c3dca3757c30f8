/* flags.c: see flags.h. */
#include "flags.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static struct ly_flag *
find_flag(struct ly_flag *flags, size_t nflags, const char *name, size_t len)
{
	for (size_t i = 0; i < nflags; i++) {
		if (strlen(flags[i].name) == len && memcmp(flags[i].name, name, len) == 0)
			return &flags[i];
	}
	return NULL;
}

static ly_status
parse_bool(const char *v, bool *out)
{
	/* Go's strconv.ParseBool, which SPIRE's flags use. */
	static const char *const yes[] = { "1", "t", "T", "true", "TRUE", "True" };
	static const char *const no[] = { "0", "f", "F", "false", "FALSE", "False" };
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcmp(v, yes[i]) == 0) {
			*out = true;
			return LY_OK;
		}
		if (strcmp(v, no[i]) == 0) {
			*out = false;
			return LY_OK;
		}
	}
	return LY_E_INVALID;
}

static ly_status
set_value(struct ly_flag *f, const char *v, struct ly_error *err)
{
	switch (f->kind) {
	case LY_FLAG_STRING:
		*(const char **)f->dst = v;
		return LY_OK;
	case LY_FLAG_BOOL:
		if (parse_bool(v, (bool *)f->dst) != LY_OK)
			return ly_error_set(err, LY_E_INVALID, "invalid boolean value \"%s\" for flag -%s", v,
			    f->name);
		return LY_OK;
	case LY_FLAG_INT: {
		char *end = NULL;
		errno = 0;
		long long n = strtoll(v, &end, 10);
		if (v[0] == '\0' || *end != '\0' || errno != 0)
			return ly_error_set(err, LY_E_INVALID, "invalid value \"%s\" for flag -%s: not an integer",
			    v, f->name);
		if (n < f->min || n > f->max)
			return ly_error_set(err, LY_E_INVALID,
			    "invalid value \"%s\" for flag -%s: must be between %lld and %lld", v, f->name,
			    (long long)f->min, (long long)f->max);
		*(int64_t *)f->dst = (int64_t)n;
		return LY_OK;
	}
	case LY_FLAG_LIST: {
		struct ly_flag_list *l = f->dst;
		if (l->count >= LY_FLAG_LIST_MAX)
			return ly_error_set(err, LY_E_LIMIT, "flag -%s given more than %d times", f->name,
			    LY_FLAG_LIST_MAX);
		const char **items = realloc(l->items, (l->count + 1) * sizeof(*items));
		if (items == NULL)
			return ly_error_set(err, LY_E_NOMEM, "flag -%s: out of memory", f->name);
		items[l->count++] = v;
		l->items = items;
		return LY_OK;
	}
	}
	return ly_error_set(err, LY_E_INTERNAL, "flag -%s has no kind", f->name);
}

ly_status
ly_flags_parse(struct ly_flag *flags, size_t nflags, int argc, const char *const *argv, int *rest, struct ly_error *err)
{
	int i = 0;

	for (size_t k = 0; k < nflags; k++)
		flags[k].seen = false;
	while (i < argc) {
		const char *arg = argv[i];
		if (arg[0] != '-' || arg[1] == '\0')
			break; /* first positional argument */
		i++;
		if (strcmp(arg, "--") == 0)
			break;
		const char *name = arg + (arg[1] == '-' ? 2 : 1);
		if (name[0] == '\0' || name[0] == '-' || name[0] == '=')
			return ly_error_set(err, LY_E_INVALID, "bad flag syntax: %s", arg);
		const char *eq = strchr(name, '=');
		size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
		struct ly_flag *f = find_flag(flags, nflags, name, len);
		if (f == NULL)
			return ly_error_set(err, LY_E_INVALID, "flag provided but not defined: -%.*s", (int)len,
			    name);
		if (f->seen && f->kind != LY_FLAG_LIST)
			return ly_error_set(err, LY_E_INVALID, "flag -%s given more than once", f->name);
		f->seen = true;
		const char *value;
		if (eq != NULL) {
			value = eq + 1;
		} else if (f->kind == LY_FLAG_BOOL) {
			value = "true";
		} else {
			if (i >= argc)
				return ly_error_set(err, LY_E_INVALID, "flag needs an argument: -%s", f->name);
			value = argv[i++];
		}
		LY_TRY(set_value(f, value, err));
	}
	*rest = i;
	return LY_OK;
}

bool
ly_flags_wants_help(int argc, const char *const *argv)
{
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return false;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "-help") == 0 || strcmp(argv[i], "--help") == 0)
			return true;
	}
	return false;
}

ly_status
ly_flags_parse_command(const char *command, const char *synopsis, struct ly_flag *flags, size_t nflags, int argc,
    const char *const *argv, FILE *help_out, bool *help, struct ly_error *err)
{
	int rest = 0;

	*help = false;
	if (ly_flags_wants_help(argc, argv)) {
		fprintf(help_out, "Usage: %s [flags]\n\n%s\n\nFlags:\n", command, synopsis);
		ly_flags_usage(help_out, flags, nflags);
		*help = true;
		return LY_OK;
	}
	LY_TRY(ly_flags_parse(flags, nflags, argc, argv, &rest, err));
	if (rest < argc)
		return ly_error_set(err, LY_E_INVALID, "unexpected argument \"%s\"", argv[rest]);
	return LY_OK;
}

void
ly_flags_usage(FILE *out, const struct ly_flag *flags, size_t nflags)
{
	for (size_t i = 0; i < nflags; i++) {
		const char *arg = "";
		switch (flags[i].kind) {
		case LY_FLAG_STRING: arg = " string"; break;
		case LY_FLAG_INT: arg = " int"; break;
		case LY_FLAG_LIST: arg = " value (repeatable)"; break;
		case LY_FLAG_BOOL: break;
		}
		fprintf(out, "  -%s%s\n    \t%s\n", flags[i].name, arg, flags[i].usage);
	}
}

void
ly_flags_cleanup(struct ly_flag *flags, size_t nflags)
{
	for (size_t i = 0; i < nflags; i++) {
		if (flags[i].kind == LY_FLAG_LIST && flags[i].dst != NULL) {
			struct ly_flag_list *l = flags[i].dst;
			free(l->items);
			l->items = NULL;
			l->count = 0;
		}
	}
}
