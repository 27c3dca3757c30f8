/*
 * flags.h: command-line flags the way SPIRE's CLI (Go's flag package) reads
 * them, so operators who know SPIRE feel at home:
 *
 *   -spiffeID spiffe://example.org/web     value in the next argument
 *   -x509SVIDTTL=300                       or after '='
 *   --dataDir /var/lib/lanyard             two dashes are the same as one
 *   -node                                  booleans take no separate value
 *   -node=false                            (but '=' works)
 *   -selector unix:uid:1000 -selector ...  list flags repeat
 *
 * Parsing stops at the first argument that is not a flag, or after "--".
 * An unknown flag, a missing value, a non-number, a number out of range or
 * a non-list flag given twice is a usage error (LY_E_INVALID, the message
 * says which flag and why; callers exit 2).
 *
 * Ownership: the parser stores pointers into argv (never copies) in the
 * destinations; they live as long as argv. A list flag's array is heap
 * memory freed with ly_flags_cleanup().
 */
#ifndef LANYARD_FLAGS_H
#define LANYARD_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "caps.h"
#include "error.h"

enum ly_flag_kind {
	LY_FLAG_STRING, /* dst: const char ** */
	LY_FLAG_INT,    /* dst: int64_t *, within [min, max] */
	LY_FLAG_BOOL,   /* dst: bool * */
	LY_FLAG_LIST,   /* dst: struct ly_flag_list * */
};

struct ly_flag_list {
	const char **items;
	size_t count;
};

struct ly_flag {
	const char *name;  /* without the dash: "spiffeID" */
	enum ly_flag_kind kind;
	void *dst;
	const char *usage; /* one line for the help text */
	int64_t min, max;  /* LY_FLAG_INT only */
	bool seen;         /* set by the parser */
};

/* LY_FLAG_LIST_MAX (caps.h): most flags a list flag takes; more is a usage error. */

/*
 * Parses argv[0..argc) (argv[0] is the first candidate flag, not the
 * program name). On success *rest is the index of the first positional
 * argument (argc when none).
 */
ly_status ly_flags_parse(struct ly_flag *flags, size_t nflags, int argc, const char *const *argv, int *rest,
    struct ly_error *err) LY_MUST_CHECK;

/* True when argv[0..argc), before any "--", asks for help: -h, -help or --help. */
bool ly_flags_wants_help(int argc, const char *const *argv);

/*
 * Parses a command's flags: every argument must be a flag (a positional one
 * is a usage error, LY_E_INVALID 'unexpected argument "x"'). When help is
 * asked for (ly_flags_wants_help), nothing is parsed: "Usage: COMMAND
 * [flags]", the synopsis and the flags are written to help_out, *help is set
 * and LY_OK returned. `command` is what the usage line names, e.g.
 * "lanyard-agent api fetch x509".
 */
ly_status ly_flags_parse_command(const char *command, const char *synopsis, struct ly_flag *flags, size_t nflags,
    int argc, const char *const *argv, FILE *help_out, bool *help, struct ly_error *err) LY_MUST_CHECK;

/* Writes "  -name\tusage" lines for every flag. */
void ly_flags_usage(FILE *out, const struct ly_flag *flags, size_t nflags);

/* Frees the arrays of list flags and clears them. */
void ly_flags_cleanup(struct ly_flag *flags, size_t nflags);

#endif /* LANYARD_FLAGS_H */
