/*
 * replay_main.c: runs a libFuzzer target over every file of its corpus
 * directories without libFuzzer, so plain gcc builds and ctest exercise
 * each fuzz target on every run. Exit 0 when every input was consumed
 * without a crash (a crash aborts the process, failing the test), 1 on a
 * usage or I/O error, and 1 when the corpus is empty: a replay that reads
 * nothing would be a test that cannot fail.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_FILE_MAX (4 * 1024 * 1024)

static int
replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "replay: cannot open %s\n", path);
		return -1;
	}
	uint8_t *data = malloc(REPLAY_FILE_MAX);
	if (data == NULL) {
		fclose(f);
		return -1;
	}
	size_t n = fread(data, 1, REPLAY_FILE_MAX, f);
	int rc = ferror(f) ? -1 : 0;
	fclose(f);
	if (rc == 0) {
		/* Copy into an exact-size allocation so ASan sees overreads. */
		uint8_t *exact = malloc(n > 0 ? n : 1);
		if (exact == NULL) {
			free(data);
			return -1;
		}
		memcpy(exact, data, n);
		(void)LLVMFuzzerTestOneInput(exact, n);
		free(exact);
	}
	free(data);
	return rc;
}

int
main(int argc, char **argv)
{
	unsigned long count = 0;

	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "replay: cannot stat %s\n", argv[i]);
			return 1;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (replay_file(argv[i]) != 0)
				return 1;
			count++;
			continue;
		}
		DIR *dir = opendir(argv[i]);
		if (dir == NULL) {
			fprintf(stderr, "replay: cannot open directory %s\n", argv[i]);
			return 1;
		}
		struct dirent *de;
		while ((de = readdir(dir)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			char path[4096];
			int n = snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
			if (n < 0 || (size_t)n >= sizeof(path)) {
				closedir(dir);
				return 1;
			}
			if (replay_file(path) != 0) {
				closedir(dir);
				return 1;
			}
			count++;
		}
		closedir(dir);
	}
	if (count == 0) {
		fprintf(stderr, "replay: no inputs found\n");
		return 1;
	}
	printf("replay: %lu inputs, no crash\n", count);
	return 0;
}
