/* test_agent_cgroup.c: pod UID and container ID from cgroup and mountinfo text (agent/cgroup.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/cgroup.h"
#include "lib/caps.h"

#define UID1 "3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f"
#define UID1_ "3f2a9c1e_7b4d_4e8a_9c2f_1a2b3c4d5e6f"
#define UID2 "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
#define CID1 "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
#define CID2 "aff34703e5e1f89443e9a1bffcc80f43f74d4808a2dd22c8f88c08547b323934"
#define CID3 "8d461fa5765781bcf5f7eb192f101bc3103d4b932e26236f43feecfa20664f96"

static ly_status
parse(const char *text, struct ly_cgroup_ids *ids, struct ly_error *err)
{
	return ly_cgroup_parse(text, strlen(text), ids, err);
}

static void
expect_ids(const char *text, const char *pod, const char *cid)
{
	struct ly_cgroup_ids ids;
	struct ly_error err;
	ly_status rc = parse(text, &ids, &err);
	if (rc != LY_OK)
		fail_msg("%s: %s", text, err.msg);
	assert_true(ids.has_container);
	assert_string_equal(ids.container_id, cid);
	if (pod != NULL) {
		assert_true(ids.has_pod);
		assert_string_equal(ids.pod_uid, pod);
	} else {
		assert_false(ids.has_pod);
	}
}

static void
expect_none(const char *text)
{
	struct ly_cgroup_ids ids;
	struct ly_error err;
	ly_status rc = parse(text, &ids, &err);
	if (rc != LY_OK)
		fail_msg("%s: %s", text, err.msg);
	assert_false(ids.has_container);
	assert_false(ids.has_pod);
}

static void
expect_refused(const char *text, ly_status want, const char *words)
{
	struct ly_cgroup_ids ids;
	struct ly_error err;
	assert_int_equal(parse(text, &ids, &err), want);
	assert_false(ids.has_container);
	if (strstr(err.msg, words) == NULL)
		fail_msg("message \"%s\" lacks \"%s\"", err.msg, words);
}

static void
test_v1_cgroupfs(void **state)
{
	(void)state;
	/* Every v1 controller line names the same cgroup, as the kernel writes it. */
	expect_ids("12:hugetlb:/kubepods/burstable/pod" UID1 "/" CID1 "\n"
		   "11:memory:/kubepods/burstable/pod" UID1 "/" CID1 "\n"
		   "10:cpu,cpuacct:/kubepods/burstable/pod" UID1 "/" CID1 "\n"
		   "1:name=systemd:/kubepods/burstable/pod" UID1 "/" CID1 "\n",
	    UID1, CID1);
	/* Guaranteed QoS: no QoS level. No trailing newline. */
	expect_ids("4:pids:/kubepods/pod" UID1 "/" CID1, UID1, CID1);
}

static void
test_kind_last_id_wins(void **state)
{
	(void)state;
	expect_ids("5:memory:/docker/" CID3 "/kubepods/besteffort/pod" UID1 "/" CID1 "\n", UID1, CID1);
}

static void
test_systemd_docker_crio_containerd(void **state)
{
	(void)state;
	expect_ids("1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" UID1_
		   ".slice/docker-" CID1 ".scope\n",
	    UID1, CID1);
	expect_ids("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" UID1_ ".slice/crio-" CID2
		   ".scope\n",
	    UID1, CID2);
	expect_ids("0::/kubepods.slice/kubepods-pod" UID1_ ".slice/cri-containerd-" CID1 ".scope\n", UID1, CID1);
	/* Dashes in a systemd slice name are accepted as well. */
	expect_ids("0::/kubepods.slice/kubepods-besteffort-pod" UID1 ".slice/crio-" CID2 ".scope\n", UID1, CID2);
}

static void
test_containerd_colon_form(void **state)
{
	(void)state;
	expect_ids("0::/kubepods-besteffort-pod" UID1_ ".slice:cri-containerd:" CID1 "\n", UID1, CID1);
	expect_ids("3:cpuset:/system.slice/containerd.service/kubepods-burstable-pod" UID1_
		   ".slice:cri-containerd:" CID2 "\n",
	    UID1, CID2);
}

static void
test_v2_cgroup_namespace(void **state)
{
	(void)state;
	expect_ids("0::/../../pod" UID1 "/" CID1 "\n", UID1, CID1);
	expect_ids("0::/../../kubepods-besteffort-pod" UID1_ ".slice/cri-containerd-" CID1 ".scope\n", UID1, CID1);
	/* A process in a sub-cgroup its container made (systemd inside, or a v2 leaf). */
	expect_ids("0::/kubepods/pod" UID1 "/" CID1 "/init.scope\n", UID1, CID1);
}

static void
test_container_without_pod(void **state)
{
	(void)state;
	/* cri-o with kubeedge: no pod UID (the caller searches every pod). */
	expect_ids("0::/../crio-" CID1 ".scope\n", NULL, CID1);
	/* A plain docker container of the host. */
	expect_ids("0::/system.slice/docker-" CID2 ".scope\n", NULL, CID2);
	/* A pod segment after the container is not its pod. */
	expect_ids("0::/" CID1 "/pod" UID1 "\n", NULL, CID1);
}

static void
test_not_in_a_pod(void **state)
{
	(void)state;
	expect_none("0::/user.slice/user-1000.slice/session-3.scope\n");
	expect_none("0::/\n");
	expect_none("12:memory:/\n1:name=systemd:/init.scope\n0::/init.scope\n");
	/* A pod-level cgroup (no container yet) names no container. */
	expect_none("0::/kubepods/burstable/pod" UID1 "\n");
	expect_none("");
	expect_none("\n\n");
}

static void
test_shapes_not_recognized(void **state)
{
	(void)state;
	/* 63 and 65 hex digits, upper case, no '-' before the ID, an empty prefix. */
	expect_none("0::/kubepods/pod" UID1 "/" "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e013596\n");
	expect_none("0::/kubepods/pod" UID1 "/" CID1 "0\n");
	expect_none("0::/kubepods/pod" UID1 "/9BCA8D63D5FA610783847915BCFF0ECAC1273E5B4BED3F6FA1B07350E0135961\n");
	expect_none("0::/kubepods/pod" UID1 "/docker_" CID1 ".scope\n");
	expect_none("0::/kubepods/pod" UID1 "/-" CID1 ".scope\n");
	/* A pod UID with mixed separators, upper case, or no "pod" prefix is not a pod UID. */
	expect_ids("0::/kubepods/pod3f2a9c1e-7b4d_4e8a-9c2f-1a2b3c4d5e6f/" CID1 "\n", NULL, CID1);
	expect_ids("0::/kubepods/pod3F2A9C1E-7B4D-4E8A-9C2F-1A2B3C4D5E6F/" CID1 "\n", NULL, CID1);
	expect_ids("0::/kubepods/" UID1 "/" CID1 "\n", NULL, CID1);
	expect_ids("0::/kubepods/xpod" UID1 "/" CID1 "\n", NULL, CID1);
}

static void
test_pod_line_beats_line_without(void **state)
{
	(void)state;
	/* A hybrid host: the unified line names the kind node's container, the v1 lines the pod's. */
	expect_ids("0::/system.slice/docker-" CID3 ".scope\n"
		   "5:memory:/docker/" CID3 "/kubepods/besteffort/pod" UID1 "/" CID1 "\n",
	    UID1, CID1);
	expect_ids("5:memory:/docker/" CID3 "/kubepods/besteffort/pod" UID1 "/" CID1 "\n"
		   "0::/system.slice/docker-" CID3 ".scope\n",
	    UID1, CID1);
	/* Lines without a pod that disagree do not matter when a pod line wins. */
	expect_ids("0::/system.slice/docker-" CID3 ".scope\n1:cpu:/docker-" CID2 ".scope\n"
		   "2:memory:/kubepods/pod" UID1 "/" CID1 "\n",
	    UID1, CID1);
}

static void
test_conflicts_refused(void **state)
{
	(void)state;
	expect_refused("1:cpu:/kubepods/pod" UID1 "/" CID1 "\n2:memory:/kubepods/pod" UID2 "/" CID1 "\n",
	    LY_E_INVALID, "line 2");
	expect_refused("1:cpu:/kubepods/pod" UID1 "/" CID1 "\n2:memory:/kubepods/pod" UID1 "/" CID2 "\n",
	    LY_E_INVALID, "another pod or container");
	expect_refused("1:cpu:/docker-" CID1 ".scope\n2:memory:/docker-" CID2 ".scope\n", LY_E_INVALID,
	    "another container");
}

static void
test_malformed_refused(void **state)
{
	(void)state;
	expect_refused("0:/kubepods/pod" UID1 "/" CID1 "\n", LY_E_INVALID, "ID:CONTROLLERS:PATH");
	expect_refused("garbage\n", LY_E_INVALID, "ID:CONTROLLERS:PATH");
	expect_refused("x::/kubepods/pod" UID1 "/" CID1 "\n", LY_E_INVALID, "decimal");
	expect_refused(":cpu:/\n", LY_E_INVALID, "1..10 digits");
	expect_refused("12345678901:cpu:/\n", LY_E_INVALID, "1..10 digits");
	expect_refused("0::kubepods/pod" UID1 "/" CID1 "\n", LY_E_INVALID, "start with '/'");
	expect_refused("0::\n", LY_E_INVALID, "start with '/'");
	/* A valid line does not excuse a malformed one. */
	expect_refused("0::/kubepods/pod" UID1 "/" CID1 "\nbad line\n", LY_E_INVALID, "line 2");

	struct ly_cgroup_ids ids;
	struct ly_error err;
	static const char nul[] = "0::/kubepods/pod" UID1 "/" CID1 "\0\n";
	assert_int_equal(ly_cgroup_parse(nul, sizeof(nul) - 1, &ids, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "NUL"));
}

static void
test_size_cap(void **state)
{
	(void)state;
	struct ly_cgroup_ids ids;
	struct ly_error err;
	size_t n = LY_PROC_CGROUP_MAX + 1;
	char *big = malloc(n);
	assert_non_null(big);
	memset(big, '\n', n);
	memcpy(big, "0::/\n", 5);
	assert_int_equal(ly_cgroup_parse(big, n, &ids, &err), LY_E_LIMIT);
	/* Exactly at the cap is fine. */
	assert_int_equal(ly_cgroup_parse(big, n - 1, &ids, &err), LY_OK);
	free(big);
}

static void
test_path_ids(void **state)
{
	(void)state;
	struct ly_cgroup_ids ids;
	const char *p = "/kubepods/pod" UID1 "/" CID1;
	assert_true(ly_cgroup_path_ids(p, strlen(p), &ids));
	assert_string_equal(ids.pod_uid, UID1);
	assert_false(ly_cgroup_path_ids("", 0, &ids));
	assert_false(ly_cgroup_path_ids("/", 1, &ids));
	assert_false(ly_cgroup_path_ids(":::", 3, &ids));
	/* Only the first `len` bytes count. */
	assert_false(ly_cgroup_path_ids(p, strlen(p) - 1, &ids));
}

/* ---- mountinfo ---- */

#define MI_ROOT "22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/l\n"
#define MI_PROC "23 22 0:22 / /proc rw,nosuid - proc proc rw\n"

static void
test_mountinfo(void **state)
{
	(void)state;
	struct ly_cgroup_ids ids;
	struct ly_error err;
	const char *mi = MI_ROOT MI_PROC
	    "30 22 0:26 /kubepods/burstable/pod" UID1 "/" CID1 " /sys/fs/cgroup ro,nosuid shared:9 master:2 - "
	    "cgroup2 cgroup2 rw\n";
	assert_int_equal(ly_cgroup_parse_mountinfo(mi, strlen(mi), &ids, &err), LY_OK);
	assert_true(ids.has_container && ids.has_pod);
	assert_string_equal(ids.container_id, CID1);
	assert_string_equal(ids.pod_uid, UID1);

	/* cgroup v1 mounts, no optional fields. */
	mi = "31 22 0:27 /kubepods/pod" UID1 "/" CID2 " /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
	assert_int_equal(ly_cgroup_parse_mountinfo(mi, strlen(mi), &ids, &err), LY_OK);
	assert_string_equal(ids.container_id, CID2);

	/* A cgroup mount at "/" and other file systems name nothing, whatever their root. */
	mi = MI_ROOT "30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
		     "40 22 0:4 net:[4026531840] /run/netns/x rw - nsfs nsfs rw\n"
		     "41 22 8:1 /kubepods/pod" UID1 "/" CID1 " /data rw - ext4 /dev/sda1 rw\n";
	assert_int_equal(ly_cgroup_parse_mountinfo(mi, strlen(mi), &ids, &err), LY_OK);
	assert_false(ids.has_container);
}

static void
test_mountinfo_refused(void **state)
{
	(void)state;
	struct ly_cgroup_ids ids;
	struct ly_error err;
	const char *bad[] = {
		"30 22 0:26 /x /sys/fs/cgroup rw cgroup2 cgroup2 rw\n", /* no " - " */
		"30 22 0:26 /x /sys/fs/cgroup rw -\n",                  /* no fstype */
		"30 22 0:26 /x - cgroup2 cgroup2 rw\n",                 /* '-' among the fixed fields */
		"30 22 0:26 x/kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", /* cgroup root not absolute */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (ly_cgroup_parse_mountinfo(bad[i], strlen(bad[i]), &ids, &err) != LY_E_INVALID)
			fail_msg("accepted: %s", bad[i]);
	}
	const char *two = "30 22 0:26 /kubepods/pod" UID1 "/" CID1 " /a rw - cgroup2 cgroup2 rw\n"
			  "31 22 0:27 /kubepods/pod" UID2 "/" CID2 " /b rw - cgroup cgroup rw\n";
	assert_int_equal(ly_cgroup_parse_mountinfo(two, strlen(two), &ids, &err), LY_E_INVALID);
	size_t n = LY_PROC_MOUNTINFO_MAX + 1;
	char *big = calloc(1, n);
	assert_non_null(big);
	memset(big, '\n', n);
	assert_int_equal(ly_cgroup_parse_mountinfo(big, n, &ids, &err), LY_E_LIMIT);
	free(big);
}

/* ---- reading a (fake) /proc ---- */

static void
write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
test_read_fake_proc(void **state)
{
	(void)state;
	char root[] = "/tmp/ly-cgroup-XXXXXX";
	char dir[256];
	struct ly_cgroup_ids ids;
	struct ly_error err;

	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof(dir), "%s/4242", root);
	assert_int_equal(mkdir(dir, 0755), 0);

	/* The cgroup file names the container: mountinfo (malformed here) is not read. */
	write_file(dir, "cgroup", "0::/kubepods/pod" UID1 "/" CID1 "\n");
	write_file(dir, "mountinfo", "not mountinfo at all\n");
	assert_int_equal(ly_cgroup_read(root, 4242, &ids, &err), LY_OK);
	assert_string_equal(ids.container_id, CID1);

	/* No container in the cgroup file: mountinfo is the fallback. */
	write_file(dir, "cgroup", "0::/\n");
	write_file(dir, "mountinfo", MI_ROOT "30 22 0:26 /../../pod" UID2 "/" CID2 " /sys/fs/cgroup rw - cgroup2 "
					     "cgroup2 rw\n");
	assert_int_equal(ly_cgroup_read(root, 4242, &ids, &err), LY_OK);
	assert_string_equal(ids.container_id, CID2);
	assert_string_equal(ids.pod_uid, UID2);

	/* Neither: not in a pod. */
	write_file(dir, "mountinfo", MI_ROOT MI_PROC);
	assert_int_equal(ly_cgroup_read(root, 4242, &ids, &err), LY_OK);
	assert_false(ids.has_container);

	/* The fallback is parsed strictly too. */
	write_file(dir, "mountinfo", "not mountinfo at all\n");
	assert_int_equal(ly_cgroup_read(root, 4242, &ids, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "pid 4242"));

	/* The process is gone. */
	assert_int_equal(ly_cgroup_read(root, 4343, &ids, &err), LY_E_NOT_FOUND);
	/* PID 0 is refused. */
	assert_int_equal(ly_cgroup_read(root, 0, &ids, &err), LY_E_UNSUPPORTED);

	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	assert_int_equal(system(cmd), 0);
}

static void
test_read_own_cgroup(void **state)
{
	(void)state;
	struct ly_cgroup_ids ids;
	struct ly_error err;
	/* Whatever this machine is, its own cgroup file must parse. */
	ly_status rc = ly_cgroup_read(NULL, getpid(), &ids, &err);
	if (rc != LY_OK)
		fail_msg("%s", err.msg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_cgroupfs),
		cmocka_unit_test(test_kind_last_id_wins),
		cmocka_unit_test(test_systemd_docker_crio_containerd),
		cmocka_unit_test(test_containerd_colon_form),
		cmocka_unit_test(test_v2_cgroup_namespace),
		cmocka_unit_test(test_container_without_pod),
		cmocka_unit_test(test_not_in_a_pod),
		cmocka_unit_test(test_shapes_not_recognized),
		cmocka_unit_test(test_pod_line_beats_line_without),
		cmocka_unit_test(test_conflicts_refused),
		cmocka_unit_test(test_malformed_refused),
		cmocka_unit_test(test_size_cap),
		cmocka_unit_test(test_path_ids),
		cmocka_unit_test(test_mountinfo),
		cmocka_unit_test(test_mountinfo_refused),
		cmocka_unit_test(test_read_fake_proc),
		cmocka_unit_test(test_read_own_cgroup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
