/* attest_unix.c: see attest_unix.h. */
#include "agent/attest_unix.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent/attest_sels.h"
#include "lib/caps.h"
#include "lib/log.h"

#define HASH_CHUNK (64 * 1024)
#define PWBUF_START 4096
#define DELETED_SUFFIX " (deleted)"

/* What identifies one version of an executable file. */
struct exe_key {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	struct timespec ctime;
};

struct cache_entry {
	struct exe_key key;
	uint64_t last_used;
	char hex[65];
};

struct ly_unix_attestor {
	char *proc_root;
	uint64_t hash_max;
	size_t cache_max;
	EVP_MD *sha256;
	pthread_mutex_t lock; /* guards everything below */
	struct cache_entry *cache;
	size_t n_cache;
	uint64_t clock;
	struct ly_unix_attestor_stats stats;
};

ly_status
ly_unix_attestor_new(const struct ly_unix_attestor_config *cfg, struct ly_unix_attestor **out,
    struct ly_error *err)
{
	struct ly_unix_attestor *a = NULL;
	const char *root = cfg != NULL && cfg->proc_root != NULL ? cfg->proc_root : LY_PROC_ROOT_DEFAULT;
	uint64_t hash_max = cfg != NULL && cfg->hash_max != 0 ? cfg->hash_max : LY_UNIX_EXE_HASH_MAX;
	size_t cache_max = cfg != NULL && cfg->cache_max != 0 ? cfg->cache_max : LY_UNIX_HASH_CACHE_MAX;

	*out = NULL;
	if (root[0] != '/')
		return ly_error_set(err, LY_E_INVALID, "unix attestor: proc root must be an absolute path");
	if (hash_max > LY_UNIX_EXE_HASH_MAX)
		return ly_error_set(err, LY_E_LIMIT, "unix attestor: hash size limit may not exceed %llu bytes",
		    (unsigned long long)LY_UNIX_EXE_HASH_MAX);
	if (cache_max > LY_UNIX_HASH_CACHE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "unix attestor: hash cache may not exceed %d entries",
		    LY_UNIX_HASH_CACHE_MAX);
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return ly_error_set(err, LY_E_NOMEM, "unix attestor: out of memory");
	a->hash_max = hash_max;
	a->cache_max = cache_max;
	a->proc_root = strdup(root);
	a->cache = calloc(cache_max, sizeof(*a->cache));
	if (a->proc_root == NULL || a->cache == NULL) {
		free(a->proc_root);
		free(a->cache);
		free(a);
		return ly_error_set(err, LY_E_NOMEM, "unix attestor: out of memory");
	}
	/* Fetched once: per-call implicit fetches cost a lock and a lookup (NOTES-openssl). */
	a->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (a->sha256 == NULL) {
		free(a->proc_root);
		free(a->cache);
		free(a);
		return ly_error_openssl(err, LY_E_CRYPTO, "unix attestor: SHA-256 unavailable");
	}
	if (pthread_mutex_init(&a->lock, NULL) != 0) {
		EVP_MD_free(a->sha256);
		free(a->proc_root);
		free(a->cache);
		free(a);
		return ly_error_set(err, LY_E_INTERNAL, "unix attestor: mutex initialisation failed");
	}
	*out = a;
	return LY_OK;
}

void
ly_unix_attestor_free(struct ly_unix_attestor *a)
{
	if (a == NULL)
		return;
	pthread_mutex_destroy(&a->lock);
	EVP_MD_free(a->sha256);
	free(a->cache);
	free(a->proc_root);
	free(a);
}

void
ly_unix_attestor_stats(struct ly_unix_attestor *a, struct ly_unix_attestor_stats *out)
{
	pthread_mutex_lock(&a->lock);
	*out = a->stats;
	pthread_mutex_unlock(&a->lock);
}

/* ---- the hash cache ---- */

static void
key_of(const struct stat *st, struct exe_key *k)
{
	memset(k, 0, sizeof(*k));
	k->dev = st->st_dev;
	k->ino = st->st_ino;
	k->size = st->st_size;
	k->mtime = st->st_mtim;
	k->ctime = st->st_ctim;
}

static bool
key_equal(const struct exe_key *a, const struct exe_key *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
	    a->mtime.tv_nsec == b->mtime.tv_nsec && a->ctime.tv_sec == b->ctime.tv_sec &&
	    a->ctime.tv_nsec == b->ctime.tv_nsec;
}

static bool
cache_lookup(struct ly_unix_attestor *a, const struct exe_key *k, char hex[65])
{
	bool hit = false;

	pthread_mutex_lock(&a->lock);
	for (size_t i = 0; i < a->n_cache; i++) {
		if (key_equal(&a->cache[i].key, k)) {
			a->cache[i].last_used = ++a->clock;
			memcpy(hex, a->cache[i].hex, 65);
			a->stats.cache_hits++;
			hit = true;
			break;
		}
	}
	pthread_mutex_unlock(&a->lock);
	return hit;
}

static void
cache_insert(struct ly_unix_attestor *a, const struct exe_key *k, const char hex[65])
{
	pthread_mutex_lock(&a->lock);
	size_t slot = a->n_cache;
	for (size_t i = 0; i < a->n_cache; i++) {
		if (key_equal(&a->cache[i].key, k)) {
			slot = i; /* another thread hashed it meanwhile */
			break;
		}
	}
	if (slot == a->n_cache) {
		if (a->n_cache < a->cache_max) {
			a->n_cache++;
		} else {
			slot = 0;
			for (size_t i = 1; i < a->n_cache; i++) {
				if (a->cache[i].last_used < a->cache[slot].last_used)
					slot = i;
			}
		}
	}
	a->cache[slot].key = *k;
	a->cache[slot].last_used = ++a->clock;
	memcpy(a->cache[slot].hex, hex, 65);
	pthread_mutex_unlock(&a->lock);
}

static void
count_hash(struct ly_unix_attestor *a)
{
	pthread_mutex_lock(&a->lock);
	a->stats.hashes++;
	pthread_mutex_unlock(&a->lock);
}

/* SHA-256 of everything `fd` reads from offset 0, as 64 lower-case hex digits. */
static ly_status
hash_fd(struct ly_unix_attestor *a, int fd, uint64_t max, char hex[65], struct ly_error *err)
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	uint64_t total = 0;
	off_t off = 0;
	ly_status rc = LY_OK;
	unsigned char *buf = malloc(HASH_CHUNK);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (buf == NULL || ctx == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "hashing the executable: out of memory");
		goto out;
	}
	if (EVP_DigestInit_ex(ctx, a->sha256, NULL) != 1) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "hashing the executable");
		goto out;
	}
	for (;;) {
		ssize_t r = pread(fd, buf, HASH_CHUNK, off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rc = ly_error_set(err, LY_E_IO, "reading the executable: %s", strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		total += (uint64_t)r;
		off += (off_t)r;
		if (total > max) {
			rc = ly_error_set(err, LY_E_LIMIT, "the executable grew past %llu bytes while hashed",
			    (unsigned long long)max);
			goto out;
		}
		if (EVP_DigestUpdate(ctx, buf, (size_t)r) != 1) {
			rc = ly_error_openssl(err, LY_E_CRYPTO, "hashing the executable");
			goto out;
		}
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "hashing the executable");
		goto out;
	}
	for (unsigned int i = 0; i < mdlen; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 0xf];
	}
	hex[64] = '\0';
	count_hash(a);
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
	return rc;
}

/* ---- selectors ---- */

/* Adds a selector the attestor may do without (names, path, sha256): an invalid value is skipped. */
static ly_status
add_optional(struct ly_attest_sels *l, pid_t pid, const char *key, const char *value, struct ly_error *err)
{
	struct ly_error e;
	ly_status rc = ly_attest_sels_addf(l, "unix", &e, "%s:%s", key, value);
	if (rc == LY_E_INVALID) {
		log_debug("pid %ld: no unix:%s selector: %s", (long)pid, key, e.msg);
		return LY_OK;
	}
	if (rc != LY_OK && err != NULL)
		*err = e;
	return rc;
}

static ly_status
add_names(struct ly_attest_sels *l, const struct ly_unix_peer *peer, struct ly_error *err)
{
	size_t size = PWBUF_START;
	char *buf = NULL;
	ly_status rc = LY_OK;
	int e;

	for (;;) {
		char *p = realloc(buf, size);
		if (p == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "user name lookup: out of memory");
			goto out;
		}
		buf = p;
		struct passwd pw, *pwp = NULL;
		e = getpwuid_r(peer->uid, &pw, buf, size, &pwp);
		if (e == ERANGE && size < LY_PASSWD_BUF_MAX) {
			size *= 2;
			continue;
		}
		if (e == 0 && pwp != NULL)
			rc = add_optional(l, peer->pid, "user", pwp->pw_name, err);
		else if (e != 0)
			log_debug("uid %lu: no user name: %s", (unsigned long)peer->uid, strerror(e));
		break;
	}
	if (rc != LY_OK)
		goto out;
	for (;;) {
		struct group gr, *grp = NULL;
		e = getgrgid_r(peer->gid, &gr, buf, size, &grp);
		if (e == ERANGE && size < LY_PASSWD_BUF_MAX) {
			size *= 2;
			char *p = realloc(buf, size);
			if (p == NULL) {
				rc = ly_error_set(err, LY_E_NOMEM, "group name lookup: out of memory");
				goto out;
			}
			buf = p;
			continue;
		}
		if (e == 0 && grp != NULL)
			rc = add_optional(l, peer->pid, "group", grp->gr_name, err);
		else if (e != 0)
			log_debug("gid %lu: no group name: %s", (unsigned long)peer->gid, strerror(e));
		break;
	}
out:
	free(buf);
	return rc;
}

static bool
ends_with(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);
	return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/*
 * unix:path and unix:sha256. Only the failures that must fail the whole
 * attestation (out of memory) are returned; anything about the file itself
 * just leaves the selectors out.
 */
static ly_status
add_exe(struct ly_unix_attestor *a, struct ly_attest_sels *l, const struct ly_unix_peer *peer, struct ly_error *err)
{
	pid_t pid = peer->pid;
	char link[PATH_MAX];
	char target[PATH_MAX + 1];
	char hex[65];
	struct stat st, st2, at_path;
	struct ly_error e;
	int fd = -1;
	ly_status rc = LY_OK;

	LY_TRY(ly_proc_path(a->proc_root, pid, "exe", link, sizeof(link), err));
	ssize_t n = readlink(link, target, sizeof(target));
	if (n < 0) {
		log_debug("pid %ld: no unix:path or unix:sha256: readlink %s: %s", (long)pid, link, strerror(errno));
		return LY_OK;
	}
	if ((size_t)n >= sizeof(target)) {
		log_debug("pid %ld: no unix:path or unix:sha256: the executable path is too long", (long)pid);
		return LY_OK;
	}
	target[n] = '\0';
	if (ends_with(target, (size_t)n, DELETED_SUFFIX)) {
		log_info("pid %ld: executable deleted or replaced since exec: no unix:path or unix:sha256", (long)pid);
		return LY_OK;
	}
	/* Opening the magic link gives the inode the process runs, whatever is at its path now. */
	fd = open(link, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		log_debug("pid %ld: no unix:path or unix:sha256: open %s: %s", (long)pid, link, strerror(errno));
		return LY_OK;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		log_debug("pid %ld: no unix:path or unix:sha256: the executable is not a regular file", (long)pid);
		goto out;
	}
	if (peer->exe.known && (st.st_dev != peer->exe.dev || st.st_ino != peer->exe.ino)) {
		rc = ly_error_set(err, LY_E_UNTRUSTED,
		    "pid %ld runs another executable than when it connected (exec before attestation): refused",
		    (long)pid);
		goto out;
	}
	if (st.st_nlink == 0) {
		log_info("pid %ld: executable deleted since exec: no unix:path or unix:sha256", (long)pid);
		goto out;
	}
	/* The path as the agent sees it must be the same inode (attest_unix.h: bind mounts). */
	if (stat(target, &at_path) != 0 || at_path.st_dev != st.st_dev || at_path.st_ino != st.st_ino) {
		log_info("pid %ld: %s is another file (or none) in the agent's mount namespace: no unix:path",
		    (long)pid, target);
	} else {
		rc = add_optional(l, pid, "path", target, err);
		if (rc != LY_OK)
			goto out;
	}
	if (st.st_size < 0 || (uint64_t)st.st_size > a->hash_max) {
		log_warn("pid %ld: executable %s is %lld bytes, over the hash limit of %llu: no unix:sha256",
		    (long)pid, target, (long long)st.st_size, (unsigned long long)a->hash_max);
		goto out;
	}
	struct exe_key key;
	key_of(&st, &key);
	if (!cache_lookup(a, &key, hex)) {
		if (hash_fd(a, fd, a->hash_max, hex, &e) != LY_OK) {
			log_warn("pid %ld: no unix:sha256: %s", (long)pid, e.msg);
			goto out;
		}
		struct exe_key key2;
		if (fstat(fd, &st2) != 0) {
			log_warn("pid %ld: no unix:sha256: fstat: %s", (long)pid, strerror(errno));
			goto out;
		}
		key_of(&st2, &key2);
		if (!key_equal(&key, &key2)) {
			log_warn("pid %ld: executable %s changed while hashed: no unix:sha256", (long)pid, target);
			goto out;
		}
		cache_insert(a, &key, hex);
	}
	rc = add_optional(l, pid, "sha256", hex, err);
out:
	close(fd);
	return rc;
}

ly_status
ly_unix_attest(struct ly_unix_attestor *a, const struct ly_unix_peer *peer, struct ly_selector **out, size_t *n,
    struct ly_error *err)
{
	struct ly_attest_sels l = LY_ATTEST_SELS_INIT;
	uint64_t start = 0;
	ly_status rc;

	*out = NULL;
	*n = 0;
	if (peer->pid <= 0)
		return ly_error_set(err, LY_E_UNSUPPORTED,
		    "pid %ld: a caller in a PID namespace the agent cannot see is refused (hostPID needed)",
		    (long)peer->pid);
	rc = ly_proc_start_time(a->proc_root, peer->pid, &start, err);
	if (rc == LY_E_NOT_FOUND)
		rc = ly_error_wrap(err, LY_E_UNTRUSTED, "pid %ld: the caller exited", (long)peer->pid);
	if (rc != LY_OK)
		goto out;
	if (peer->has_start_time && start != peer->start_time) {
		rc = ly_error_set(err, LY_E_UNTRUSTED,
		    "pid %ld now names another process (start time %llu, at accept %llu): PID reused",
		    (long)peer->pid, (unsigned long long)start, (unsigned long long)peer->start_time);
		goto out;
	}
	rc = ly_attest_sels_addf(&l, "unix", err, "uid:%lu", (unsigned long)peer->uid);
	if (rc == LY_OK)
		rc = ly_attest_sels_addf(&l, "unix", err, "gid:%lu", (unsigned long)peer->gid);
	if (rc == LY_OK)
		rc = add_names(&l, peer, err);
	if (rc == LY_OK)
		rc = add_exe(a, &l, peer, err);
	if (rc != LY_OK)
		goto out;
	rc = ly_proc_verify(a->proc_root, peer->pid, peer->pidfd, start, err);
	if (rc == LY_OK)
		rc = ly_proc_verify_exe(a->proc_root, peer->pid, &peer->exe, err);
	if (rc != LY_OK)
		goto out;
	ly_attest_sels_take(&l, out, n);
out:
	ly_attest_sels_cleanup(&l);
	return rc;
}

ly_status
ly_unix_peer_verify(const char *proc_root, const struct ly_unix_peer *peer, struct ly_error *err)
{
	LY_TRY(ly_proc_verify(proc_root, peer->pid, peer->pidfd, peer->start_time, err));
	return ly_proc_verify_exe(proc_root, peer->pid, &peer->exe, err);
}

/* ---- on the libuv loop ---- */

struct ly_unix_attest_req {
	uv_work_t work;
	struct ly_unix_attestor *a;
	struct ly_unix_peer peer;
	ly_unix_attest_cb cb;
	void *arg;
	bool cancelled;
	/* worker results */
	ly_status rc;
	struct ly_error err;
	struct ly_selector *sels;
	size_t n;
};

static void
unix_work(uv_work_t *w)
{
	struct ly_unix_attest_req *r = w->data;
	r->rc = ly_unix_attest(r->a, &r->peer, &r->sels, &r->n, &r->err);
}

static void
unix_after_work(uv_work_t *w, int status)
{
	struct ly_unix_attest_req *r = w->data;

	if (!r->cancelled) {
		if (status == UV_ECANCELED) {
			r->rc = ly_error_set(&r->err, LY_E_INTERNAL, "unix attestation: work cancelled");
			ly_selectors_free(r->sels, r->n);
			r->sels = NULL;
			r->n = 0;
		}
		const struct ly_error *e = &r->err;
		r->cb(r->arg, r->rc, r->rc == LY_OK ? NULL : e, r->sels, r->n);
		r->sels = NULL;
		r->n = 0;
	}
	ly_selectors_free(r->sels, r->n);
	free(r);
}

ly_status
ly_unix_attest_start(uv_loop_t *loop, struct ly_unix_attestor *a, const struct ly_unix_peer *peer,
    ly_unix_attest_cb cb, void *arg, struct ly_unix_attest_req **req, struct ly_error *err)
{
	if (req != NULL)
		*req = NULL;
	struct ly_unix_attest_req *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return ly_error_set(err, LY_E_NOMEM, "unix attestation: out of memory");
	r->a = a;
	r->peer = *peer;
	r->cb = cb;
	r->arg = arg;
	r->work.data = r;
	ly_error_clear(&r->err);
	int e = uv_queue_work(loop, &r->work, unix_work, unix_after_work);
	if (e != 0) {
		free(r);
		return ly_error_set(err, LY_E_INTERNAL, "unix attestation: uv_queue_work: %s", uv_strerror(e));
	}
	if (req != NULL)
		*req = r;
	return LY_OK;
}

void
ly_unix_attest_cancel(struct ly_unix_attest_req *req)
{
	if (req == NULL)
		return;
	req->cancelled = true;
	/* Fails harmlessly when the worker already runs: unix_after_work frees it either way. */
	(void)uv_cancel((uv_req_t *)&req->work);
}
