/*
 * blkbench: a block workload for the disk benchmarks, run inside the
 * application VM against its virtio-blk disk. INFLIGHT worker processes
 * each keep one O_DIRECT request outstanding, so the device sees up to
 * INFLIGHT requests at once without depending on libaio in the guest.
 *
 *   seq modes:  the first TOTAL_BYTES of DEVICE, split into INFLIGHT
 *               contiguous parts, each walked in BLOCK_BYTES requests.
 *   rand modes: TOTAL_BYTES/BLOCK_BYTES/INFLIGHT requests per worker at
 *               random block-aligned offsets anywhere on DEVICE.
 *
 * Prints one JSON line on stdout; any error goes to stderr, exit status 1.
 *
 * usage: blkbench DEVICE MODE BLOCK_BYTES TOTAL_BYTES INFLIGHT [SEED]
 *
 * BLKBENCH_GAP_US=N in the environment makes each worker sleep N us before
 * each request: what a guest's sleep and wake-up cost (docs/benchmarks.md).
 */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

#define MAX_INFLIGHT 256

static const char *const modes[] = { "seqread", "seqwrite", "randread", "randwrite" };

static void die(const char *what, int err)
{
	fprintf(stderr, "blkbench: %s: %s\n", what, strerror(err));
	exit(1);
}

static uint64_t parse_u64(const char *text, const char *name)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (errno || end == text || *end || text[0] == '-') {
		fprintf(stderr, "blkbench: bad %s: %s\n", name, text);
		exit(1);
	}
	return v;
}

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* Spreads nearby seeds apart and never yields xorshift's stuck state, 0. */
static uint64_t seed_state(uint64_t seed)
{
	uint64_t z = seed + 0x9E3779B97F4A7C15ull;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	z ^= z >> 31;
	return z ? z : 1;
}

struct job {
	int fd;
	int write;
	int random;
	uint64_t block;
	uint64_t first;    /* seq: byte offset of this worker's part */
	uint64_t requests; /* this worker's request count */
	uint64_t dev_blocks;
	uint64_t seed;
};

/* One worker: runs in a child, returns only through _exit. */
static void worker(const struct job *j, unsigned char *buf)
{
	uint64_t state = seed_state(j->seed);
	const char *gap = getenv("BLKBENCH_GAP_US");
	unsigned gap_us = gap ? (unsigned)atoi(gap) : 0;
	for (uint64_t i = 0; i < j->requests; i++) {
		if (gap_us)
			usleep(gap_us);
		uint64_t off = j->random ? (xorshift64(&state) % j->dev_blocks) * j->block
					 : j->first + i * j->block;
		ssize_t n;
		do
			n = j->write ? pwrite(j->fd, buf, j->block, (off_t)off)
				     : pread(j->fd, buf, j->block, (off_t)off);
		while (n < 0 && errno == EINTR);
		if (n < 0 || (uint64_t)n != j->block) {
			fprintf(stderr, "blkbench: %s at %" PRIu64 ": %s\n", j->write ? "write" : "read",
				off, n < 0 ? strerror(errno) : "short transfer");
			_exit(1);
		}
	}
	_exit(0);
}

int main(int argc, char **argv)
{
	if (argc < 6 || argc > 7) {
		fprintf(stderr, "usage: blkbench DEVICE MODE BLOCK_BYTES TOTAL_BYTES INFLIGHT [SEED]\n");
		return 1;
	}
	int mode = -1;
	for (int m = 0; m < 4; m++)
		if (strcmp(argv[2], modes[m]) == 0)
			mode = m;
	if (mode < 0) {
		fprintf(stderr, "blkbench: MODE must be seqread, seqwrite, randread or randwrite\n");
		return 1;
	}
	uint64_t block = parse_u64(argv[3], "BLOCK_BYTES");
	uint64_t total = parse_u64(argv[4], "TOTAL_BYTES");
	uint64_t inflight = parse_u64(argv[5], "INFLIGHT");
	uint64_t seed = argc > 6 ? parse_u64(argv[6], "SEED") : 1;
	/* O_DIRECT needs sector-sized requests; 1 GiB keeps size_t math safe on i386. */
	if (block == 0 || block % 512 || block > (1u << 30)) {
		fprintf(stderr, "blkbench: BLOCK_BYTES must be a multiple of 512, at most 1 GiB\n");
		return 1;
	}
	if (inflight == 0 || inflight > MAX_INFLIGHT) {
		fprintf(stderr, "blkbench: INFLIGHT must be 1..%d\n", MAX_INFLIGHT);
		return 1;
	}

	int fd = open(argv[1], O_RDWR | O_DIRECT);
	if (fd < 0)
		die(argv[1], errno);
	uint64_t dev_bytes;
	if (ioctl(fd, BLKGETSIZE64, &dev_bytes) != 0)
		die("BLKGETSIZE64", errno);

	struct job job = { .fd = fd, .write = mode == 1 || mode == 3, .random = mode >= 2,
			   .block = block, .dev_blocks = dev_bytes / block };
	uint64_t blocks = total / block;
	if (job.random ? job.dev_blocks == 0 : total > dev_bytes) {
		fprintf(stderr, "blkbench: device has %" PRIu64 " bytes, too small\n", dev_bytes);
		return 1;
	}
	uint64_t requests = job.random ? blocks / inflight * inflight : blocks;
	if (requests == 0) {
		fprintf(stderr, "blkbench: TOTAL_BYTES too small for one request per worker\n");
		return 1;
	}

	unsigned char *buf;
	int err = posix_memalign((void **)&buf, 4096, (size_t)block);
	if (err)
		die("posix_memalign", err);
	/* Not zeros: a back end or disk that special-cases zero pages must not win. */
	uint64_t fill = seed_state(seed);
	for (size_t i = 0; i < block; i += 8) {
		uint64_t v = xorshift64(&fill);
		memcpy(buf + i, &v, 8);
	}

	pid_t pids[MAX_INFLIGHT] = { 0 };
	struct timespec t0, t1;
	if (clock_gettime(CLOCK_MONOTONIC, &t0) != 0)
		die("clock_gettime", errno);
	uint64_t first_block = 0;
	for (uint64_t w = 0; w < inflight; w++) {
		/* Seq parts differ by at most one block; the first ones take the remainder. */
		job.requests = job.random ? blocks / inflight : blocks / inflight + (w < blocks % inflight);
		job.first = first_block * block;
		job.seed = seed + w;
		first_block += job.requests;
		pids[w] = fork();
		if (pids[w] < 0) {
			int fork_err = errno;
			for (uint64_t k = 0; k < w; k++)
				kill(pids[k], SIGKILL);
			die("fork", fork_err);
		}
		if (pids[w] == 0)
			worker(&job, buf);
	}
	int failed = 0;
	for (uint64_t w = 0; w < inflight; w++) {
		int status;
		while (waitpid(pids[w], &status, 0) < 0) {
			if (errno != EINTR)
				die("waitpid", errno);
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed = 1;
	}
	if (clock_gettime(CLOCK_MONOTONIC, &t1) != 0)
		die("clock_gettime", errno);
	if (failed) {
		fprintf(stderr, "blkbench: a worker failed\n");
		return 1;
	}

	double seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	uint64_t bytes = requests * block;
	printf("{\"mode\":\"%s\",\"block\":%" PRIu64 ",\"inflight\":%" PRIu64 ",\"bytes\":%" PRIu64
	       ",\"requests\":%" PRIu64 ",\"seconds\":%.6f,\"mbps\":%.3f,\"iops\":%.1f}\n",
	       modes[mode], block, inflight, bytes, requests, seconds,
	       seconds > 0 ? (double)bytes / 1e6 / seconds : 0.0,
	       seconds > 0 ? (double)requests / seconds : 0.0);
	if (fflush(stdout) != 0)
		die("stdout", errno);
	return 0;
}
