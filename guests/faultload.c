/*
 * faultload: the app VM's verifying disk workload for fault campaigns.
 * It writes sequence-tagged, checksummed 64 KiB blocks to DEVICE (O_DIRECT,
 * so every request crosses the bridge) and reads random ones back, checking
 * each against what it last wrote there. A write or read that fails is an
 * error the app saw; a block that reads back different is corruption.
 *
 *   faultload DEVICE BLOCKS SEED
 *
 * Runs until SIGTERM, then reads every block once more and prints
 *   done writes=N reads=N errors=N corrupt=N
 * and one "block SEQ" line per block it knows the contents of, so the host
 * can check the disk image itself. A line "progress ..." goes out every
 * second meanwhile.
 */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (64 * 1024)
#define MAGIC 0x4c464842u /* "BHFL" */
#define MAX_BLOCKS 8192
#define UNKNOWN 0xffffffffu /* a write to it failed: old or new contents */

struct header {
	uint32_t magic, block, seq, crc;
};

static uint32_t expected[MAX_BLOCKS]; /* 0: never written */
static volatile sig_atomic_t stop;
static unsigned long writes, reads, errors, corrupt;

static uint32_t crc32(const unsigned char *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	while (n--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & -(c & 1));
	}
	return ~c;
}

/* xorshift32: the payload of (block, seq) is the same every time. */
static void fill(unsigned char *buf, uint32_t block, uint32_t seq)
{
	uint32_t x = block * 2654435761u ^ seq * 40503u ^ 0x9e3779b9u;
	for (size_t i = sizeof(struct header); i + 4 <= BLOCK; i += 4) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		memcpy(buf + i, &x, 4);
	}
	struct header h = { MAGIC, block, seq, 0 };
	memcpy(buf, &h, sizeof h);
	h.crc = crc32(buf + sizeof h, BLOCK - sizeof h);
	memcpy(buf, &h, sizeof h);
}

/* 0: as expected; 1: corrupt. */
static int check(const unsigned char *buf, uint32_t block)
{
	struct header h;
	memcpy(&h, buf, sizeof h);
	if (expected[block] == UNKNOWN)
		return 0;
	if (h.magic != MAGIC || h.block != block || h.seq != expected[block] ||
	    h.crc != crc32(buf + sizeof h, BLOCK - sizeof h)) {
		fprintf(stderr, "corrupt block %u: magic %08x block %u seq %u (expected %u)\n",
			block, h.magic, h.block, h.seq, expected[block]);
		return 1;
	}
	return 0;
}

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static int read_block(int fd, unsigned char *buf, uint32_t b)
{
	reads++;
	if (pread(fd, buf, BLOCK, (off_t)b * BLOCK) != BLOCK) {
		errors++;
		fprintf(stderr, "read block %u: %s\n", b, strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: faultload DEVICE BLOCKS SEED\n");
		return 2;
	}
	unsigned blocks = (unsigned)atoi(argv[2]);
	if (blocks < 1 || blocks > MAX_BLOCKS) {
		fprintf(stderr, "faultload: BLOCKS must be 1..%d\n", MAX_BLOCKS);
		return 2;
	}
	srand((unsigned)atoi(argv[3]));
	int fd = open(argv[1], O_RDWR | O_DIRECT);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	unsigned char *buf;
	if (posix_memalign((void **)&buf, 4096, BLOCK) != 0)
		return 1;
	struct sigaction sa = { .sa_handler = on_term };
	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);

	uint32_t seq = 0;
	time_t last = time(NULL);
	while (!stop) {
		uint32_t b = (uint32_t)rand() % blocks;
		fill(buf, b, ++seq);
		writes++;
		if (pwrite(fd, buf, BLOCK, (off_t)b * BLOCK) != BLOCK) {
			errors++;
			expected[b] = UNKNOWN;
			fprintf(stderr, "write block %u: %s\n", b, strerror(errno));
		} else {
			expected[b] = seq;
		}
		uint32_t r = (uint32_t)rand() % blocks;
		if (expected[r] && read_block(fd, buf, r) == 0)
			corrupt += (unsigned long)check(buf, r);
		if (time(NULL) != last) {
			last = time(NULL);
			printf("progress writes=%lu reads=%lu errors=%lu corrupt=%lu\n", writes, reads, errors, corrupt);
		}
	}
	for (uint32_t b = 0; b < blocks; b++)
		if (expected[b] && read_block(fd, buf, b) == 0)
			corrupt += (unsigned long)check(buf, b);
	printf("done writes=%lu reads=%lu errors=%lu corrupt=%lu\n", writes, reads, errors, corrupt);
	for (uint32_t b = 0; b < blocks; b++)
		if (expected[b] && expected[b] != UNKNOWN)
			printf("block %u %u\n", b, expected[b]);
	return 0;
}
