/*
 * fsperm.h: who may change a path, and whether a file a daemon opens is
 * its own. One copy of each rule, for every directory and file the
 * daemons keep (data dirs, datastore, CA, audit log, agent state, socket
 * directories) and for the CLIs that judge a socket before they talk.
 *
 * The threat: another local user who could write some directory on the
 * path (or who created a file or directory there first) can swap in what
 * we open or connect to. A directory is safe when only root and one
 * trusted uid may change it; a file is ours when we own it, it is a
 * regular file and it was not reached through a link.
 *
 * Paths are borrowed for the call; descriptors handed out belong to the
 * caller (close them). Checks go through descriptors (fstat after an
 * O_NOFOLLOW open) where the system allows; the directory walk uses lstat,
 * which is enough because what it proves (only root and `uid` can change
 * any directory on the path) is what makes a later swap impossible.
 */
#ifndef LANYARD_FSPERM_H
#define LANYARD_FSPERM_H

#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "error.h"

/* ly_fsperm_dir_chain: create what is missing (parents 0755, the last directory leaf_mode). */
#define LY_FSPERM_CREATE 0x1u
/* ly_fsperm_dir_chain: the last directory must not be reached through a link. */
#define LY_FSPERM_LEAF_NOFOLLOW 0x2u
/* ly_fsperm_openat, ly_fsperm_check_file: group and other bits are removed (fchmod) instead of refused. */
#define LY_FSPERM_TIGHTEN 0x4u
/* ly_fsperm_private_dir: create missing parents (0755) too. */
#define LY_FSPERM_PARENTS 0x8u

struct ly_fsperm_chain {
	struct stat leaf; /* the last directory (after any link) */
	/* The first directory on the way that is not root's sits in one that
	 * is root's and writable by root alone (or every directory is root's):
	 * only root can have made or moved it there (/run/lanyard/server made
	 * for a service user), unlike a name another user could take first
	 * in a sticky /tmp. */
	bool given_by_root;
};

/*
 * Walks `dir` (absolute) from / down, following links, and checks every
 * step: each directory and each link is owned by root or `uid`; no
 * directory is writable by group or others, except a sticky one above the
 * last (/tmp: there nobody can rename or remove what another user made).
 * ".." is resolved on the path walked so far (which has no links). With
 * LY_FSPERM_CREATE, a missing directory is made and its mode set exactly
 * (whatever the umask): 0755 above, leaf_mode last. *out (may be NULL)
 * describes the result. LY_E_UNTRUSTED names the first step that fails
 * the rule, with its owner and mode; LY_E_NOT_FOUND when a step is absent
 * (without LY_FSPERM_CREATE); LY_E_INVALID for a step that is not a
 * directory, a path that is not absolute, or a link as the last step with
 * LY_FSPERM_LEAF_NOFOLLOW; LY_E_LIMIT for too long a path or too many
 * links; LY_E_IO when the system refuses.
 */
ly_status ly_fsperm_dir_chain(const char *dir, uid_t uid, unsigned flags, mode_t leaf_mode,
    struct ly_fsperm_chain *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Checks an open file: a regular file owned by our effective uid, without
 * group or other permission bits (LY_FSPERM_TIGHTEN: they are removed,
 * fchmod, instead). `shown` names it in messages. LY_E_INVALID when
 * refused, LY_E_IO when the system refuses.
 */
ly_status ly_fsperm_check_file(int fd, const char *shown, unsigned flags, struct ly_error *err) LY_MUST_CHECK;

/*
 * Opens `name` relative to `at` (a directory descriptor or AT_FDCWD) with
 * `oflags` plus O_NOFOLLOW, O_CLOEXEC and O_NOCTTY (with O_CREAT the mode
 * is 0600), then ly_fsperm_check_file. On LY_OK *out is the descriptor;
 * LY_E_NOT_FOUND when absent and not created; LY_E_INVALID for a link or
 * a file that is not ours; LY_E_IO otherwise.
 */
ly_status ly_fsperm_openat(int at, const char *name, const char *shown, int oflags, unsigned flags, int *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Makes `path` (relative to `at`) a private directory of ours: created
 * 0700 when absent (LY_FSPERM_PARENTS: missing parents 0755), opened with
 * O_NOFOLLOW (a link is refused, not followed: we would chmod its
 * target), owned by our effective uid (else refused), made 0700 when
 * group or others have any bit (logged). On LY_OK *out (may be NULL) is
 * its descriptor. LY_E_INVALID when refused, LY_E_LIMIT for too long a
 * path, LY_E_IO when the system refuses.
 */
ly_status ly_fsperm_private_dir(int at, const char *path, unsigned flags, int *out, struct ly_error *err)
    LY_MUST_CHECK;

#endif /* LANYARD_FSPERM_H */
