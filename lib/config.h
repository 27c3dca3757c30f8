/*
 * config.h: the daemons' configuration file, a small strict subset of YAML
 * read with libyaml into a flat table of dotted keys.
 *
 *   server:
 *     trust_domain: example.org          -> "server.trust_domain" = "example.org"
 *     node_attestors:
 *       join_token: {}                   -> "server.node_attestors.join_token" (mapping)
 *       k8s_psat:
 *         allow: ["ns:sa", "ns2:sa2"]    -> "server.node_attestors.k8s_psat.allow" (list)
 *
 * The root is a mapping. A value is a scalar, a list of scalars, or a
 * mapping; mappings nest up to LY_CONFIG_DEPTH_MAX keys deep. Keys are
 * names of [A-Za-z0-9_-] (no '.', which would make dotted paths
 * ambiguous), except that a quoted key may hold single inner dots, for
 * names that are trust domains ("b.test": the caller reads such a
 * subtree by the known keys below it). Refused, with "file:line: ..." errors: syntax errors, a root
 * that is not a mapping, duplicate keys, anchors and aliases (no "billion
 * laughs"), tags, more than one document, keys that are not scalars,
 * lists of lists or of mappings, a NUL byte inside a value, and anything
 * over the caps in caps.h (LY_CONFIG_FILE_MAX bytes, LY_CONFIG_ENTRIES_MAX
 * keys and list items in all, LY_CONFIG_VALUE_MAX bytes per scalar,
 * LY_CONFIG_KEY_MAX bytes per dotted key).
 *
 * A key written with no value ("data_dir:", "~", "null") is present but
 * has no value: every getter refuses it rather than guess a default.
 * Typed getters parse on demand and, on a bad value, fill `err` with
 * "file:line: key K: why". Unknown keys are found by
 * ly_config_check_known(), so a typo fails loudly instead of being
 * ignored.
 *
 * Ownership: ly_config_load_*() return a heap object the caller frees with
 * ly_config_free(). Every string or array a getter returns points into it
 * and lives until ly_config_free(). A NULL `cfg` is accepted by every
 * getter and acts as an empty file (defaults everywhere), so a daemon run
 * without -config needs no special case. Values are not secret-wiped:
 * keep keys and tokens out of the config file (point to files instead).
 */
#ifndef LANYARD_CONFIG_H
#define LANYARD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caps.h"
#include "error.h"

struct ly_config;

/*
 * Reads and parses the file at `path`: it must be (or a symlink must lead
 * to) a regular file of at most
 * LY_CONFIG_FILE_MAX bytes. Messages use `path` as the file name.
 */
ly_status ly_config_load_file(const char *path, struct ly_config **out, struct ly_error *err) LY_MUST_CHECK;

/* Parses `len` bytes at `data`; `name` is used in messages (copied). */
ly_status ly_config_load_buf(const char *name, const void *data, size_t len, struct ly_config **out,
    struct ly_error *err) LY_MUST_CHECK;

void ly_config_free(struct ly_config *cfg);

/* The name given at load ("" for a NULL cfg). */
const char *ly_config_name(const struct ly_config *cfg);

/* Keys in file order, mappings included: 0 <= i < ly_config_count(cfg). */
size_t ly_config_count(const struct ly_config *cfg);
/* The i-th dotted key, or NULL when i is out of range. */
const char *ly_config_key_at(const struct ly_config *cfg, size_t i);
/* True when `key` is present, whatever its kind (a mapping or no value too). */
bool ly_config_has(const struct ly_config *cfg, const char *key);
/* The 1-based line where `key` was written, 0 when absent. */
size_t ly_config_line(const struct ly_config *cfg, const char *key);

/*
 * Getters. When `key` is absent, *out is the default and the result is
 * LY_OK. When it is present with a value of the wrong kind or form, the
 * result is LY_E_INVALID, *out is left unchanged and `err` says
 * "file:line: key K: why".
 */
/* Any single scalar, as written (no trimming, no case folding). */
ly_status ly_config_get_string(const struct ly_config *cfg, const char *key, const char *def, const char **out,
    struct ly_error *err) LY_MUST_CHECK;
/* Decimal digits only: no sign, no spaces, no leading zero, no hex; <= UINT64_MAX. */
ly_status ly_config_get_u64(const struct ly_config *cfg, const char *key, uint64_t def, uint64_t *out,
    struct ly_error *err) LY_MUST_CHECK;
/* As get_u64, within 1..65535. */
ly_status ly_config_get_port(const struct ly_config *cfg, const char *key, uint16_t def, uint16_t *out,
    struct ly_error *err) LY_MUST_CHECK;
/* Exactly "true" or "false" (not yes/no/on/off/True, which YAML 1.1 muddles). */
ly_status ly_config_get_bool(const struct ly_config *cfg, const char *key, bool def, bool *out,
    struct ly_error *err) LY_MUST_CHECK;
/*
 * A duration in seconds: "300" (seconds), or one or more <digits><unit>
 * groups with units d, h, m, s in that order, each at most once: "300s",
 * "5m", "2h", "1d", "1h30m". Negative values and totals over UINT64_MAX
 * seconds are refused.
 */
ly_status ly_config_get_duration(const struct ly_config *cfg, const char *key, uint64_t def_seconds,
    uint64_t *out_seconds, struct ly_error *err) LY_MUST_CHECK;
/*
 * A list of scalars ("[a, b]" or "- a" lines). Absent: *out is an empty
 * array and *count 0. *out is NULL-terminated. A single scalar is refused
 * (write "[value]"), so a list never silently becomes a string.
 */
ly_status ly_config_get_list(const struct ly_config *cfg, const char *key, const char *const **out,
    size_t *count, struct ly_error *err) LY_MUST_CHECK;

/*
 * Refuses (LY_E_INVALID, "file:line: unknown key K") the first key, in file
 * order, that `known` (NULL-terminated) does not allow. A key is allowed
 * when it is listed; a mapping is allowed when a listed key lies below it;
 * an entry "P.*" allows every key below P (for free-form plugin settings).
 * The message suggests a listed key when one is a likely typo.
 */
ly_status ly_config_check_known(const struct ly_config *cfg, const char *const known[], struct ly_error *err)
    LY_MUST_CHECK;

/*
 * For callers that validate a value further (a trust domain, a path):
 * prefixes err->msg with "file:line: key K" (or "file:line: key K[i]" for
 * list item i, with that item's line) and returns `code`, like
 * ly_error_wrap().
 */
ly_status ly_config_wrap(const struct ly_config *cfg, const char *key, struct ly_error *err, ly_status code);
ly_status ly_config_wrap_item(const struct ly_config *cfg, const char *key, size_t i, struct ly_error *err,
    ly_status code);

/*
 * Settings that a flag or the file may give (the daemons' run commands):
 * the flag wins, then the file, then the default.
 */
/* `flag_value` when not NULL, else ly_config_get_string(cfg, key, def). */
ly_status ly_config_setting_string(const struct ly_config *cfg, const char *key, const char *flag_value,
    const char *def, const char **out, struct ly_error *err) LY_MUST_CHECK;
/*
 * Wraps err for a setting that failed a further check, naming where it
 * came from: "flag -F: why" when `flag_value` (what the flag gave) is not
 * NULL, F being `flag_name` (no dash); else "file:line: key K: why"
 * (ly_config_wrap). Returns `code`.
 */
ly_status ly_config_setting_wrap(const struct ly_config *cfg, const char *key, const char *flag_value,
    const char *flag_name, struct ly_error *err, ly_status code);

/*
 * Checks of path values, messages without the path's origin (wrap them):
 * a path is non-empty and at most LY_CONFIG_VALUE_MAX bytes ("<what> is
 * empty", LY_E_INVALID; "is over", LY_E_LIMIT); a Unix socket path is also
 * absolute, fits sockaddr_un.sun_path, and names a socket inside a
 * directory (not "/" itself, not ending in "/").
 */
ly_status ly_config_check_path(const char *path, const char *what, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_config_check_socket_path(const char *path, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_CONFIG_H */
