/*
 * blkback: the disk VM's back end helper. It owns the physical disk
 * (DEVICE, opened O_DIRECT so every request goes through the real driver)
 * and serves block requests that the host puts into a shared window: a
 * pinned, locked anonymous mapping whose page frames it reports once
 * (helpers/window.h).
 * Page 0 of the window is the request ring; the rest holds data slots.
 * The host rings by flipping the control line's ring indicator; blkback
 * rings with an `outb` to a port the host claims when it has completed
 * requests. The ring layout is mirrored in guest-ring.ts.
 *
 *   guest: BH1 window-pfns FIRST_PAGE PFNHEX+COUNT,...   (one or more)
 *          BH1 window-end TOTAL_PAGES DEVICE_BYTES
 *          BH1 hello disk
 *          BH1 error <what> ERRNO                         (then exit 1)
 *   verbs: window (report the window again) | garbage N (fault injection: N lying replies)
 *
 * usage: blkback [DEVICE [TTY]]
 */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/fs.h>
#include <linux/serial.h>
#include "../helpers/channel.h"
#include "../helpers/window.h"

#define PAGE 4096u
#define DATA_BASE PAGE
#define DATA_SLOT_BYTES (256u * 1024u)
#define DATA_SLOTS 8u
#define WINDOW_BYTES (DATA_BASE + DATA_SLOTS * DATA_SLOT_BYTES)
#define WINDOW_PAGES (WINDOW_BYTES / PAGE)

#define RING_MAGIC 0x31524B42u /* "BKR1" */
#define OFF_REQ_PROD 4
#define OFF_REQ_CONS 8
#define OFF_RESP_PROD 12
#define OFF_SPINNING 20 /* we write: 1 while we look for work without sleeping */
#define REQ_BASE 64
#define RESP_BASE 576
#define RING_SLOTS 16u
#define DOORBELL_PORT 0x6f0 /* guest-ring.ts: DOORBELL_PORT */

enum { OP_READ, OP_WRITE, OP_FLUSH, OP_DISCARD };
enum { ST_OK, ST_IO_ERROR, ST_UNSUPPORTED, ST_INVALID };

struct ring_req {
	uint32_t id;
	uint8_t op;
	uint8_t data_slot;
	uint16_t reserved;
	uint32_t sector_lo;
	uint32_t sector_hi;
	uint32_t length;
	uint32_t data_offset;
	uint32_t reserved2;
	uint32_t reserved3;
};

struct ring_resp {
	uint32_t id;
	uint8_t status;
	uint8_t op;
	uint16_t reserved;
	uint32_t length;
	uint32_t err;
};

_Static_assert(sizeof(struct ring_req) == 32, "request slot is 32 bytes");
_Static_assert(sizeof(struct ring_resp) == 16, "response slot is 16 bytes");
_Static_assert(offsetof(struct ring_req, data_offset) == 20, "request layout as in guest-ring.ts");
_Static_assert(offsetof(struct ring_resp, length) == 8, "response layout as in guest-ring.ts");
_Static_assert(REQ_BASE + RING_SLOTS * 32 == RESP_BASE, "responses follow requests");

static unsigned char *window;
static int disk_fd = -1;
static uint64_t disk_bytes;
/* Our own indices live here, not in the ring: the host may overwrite the ring. */
static uint32_t req_cons, resp_prod;

static uint32_t *ring_u32(unsigned off)
{
	return (uint32_t *)(window + off);
}

static uint64_t req_sector(const struct ring_req *r)
{
	return (uint64_t)r->sector_hi << 32 | r->sector_lo;
}

/* Checks a request the host wrote; everything past here trusts its fields. */
static int request_valid(const struct ring_req *r)
{
	uint64_t sector = req_sector(r);

	if (r->op == OP_FLUSH)
		return r->length == 0;
	if (r->op != OP_READ && r->op != OP_WRITE)
		return 0;
	if (r->length == 0 || r->length % 512 || r->length > DATA_SLOT_BYTES)
		return 0;
	/* O_DIRECT wants page-aligned buffers; page 0 is the ring, never data. */
	if (r->data_offset < DATA_BASE || r->data_offset % PAGE ||
	    (uint64_t)r->data_offset + r->length > WINDOW_BYTES)
		return 0;
	/* Bound the sector before multiplying so sector*512 cannot wrap. */
	if (sector > disk_bytes / 512 || sector * 512 + r->length > disk_bytes)
		return 0;
	return 1;
}

static void serve(const struct ring_req *r, struct ring_resp *out)
{
	*out = (struct ring_resp){ .id = r->id, .op = r->op, .status = ST_OK };
	if (r->op == OP_DISCARD) {
		out->status = ST_UNSUPPORTED;
		return;
	}
	if (!request_valid(r)) {
		out->status = ST_INVALID;
		return;
	}
	if (r->op == OP_FLUSH) {
		if (fdatasync(disk_fd) != 0) {
			out->status = ST_IO_ERROR;
			out->err = (uint32_t)errno;
		}
		return;
	}
	off_t pos = (off_t)(req_sector(r) * 512);
	unsigned char *buf = window + r->data_offset;
	ssize_t n;
	do
		n = r->op == OP_READ ? pread(disk_fd, buf, r->length, pos)
				     : pwrite(disk_fd, buf, r->length, pos);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		out->status = ST_IO_ERROR;
		out->err = (uint32_t)errno;
	} else if ((size_t)n != r->length) {
		out->status = ST_IO_ERROR;
		out->err = EIO;
		out->length = (uint32_t)n;
	} else {
		out->length = r->length;
	}
}

/* The host's doorbell: one `outb` to a port the host claims (see
 * guest-ring.ts), or, without ioperm, a 0x07 byte on the control line. */
static int port_doorbell;
/* Reply slots are written by the server and by fault injection (`garbage`). */
static pthread_mutex_t reply_lock = PTHREAD_MUTEX_INITIALIZER;

static void ring_host(void)
{
	if (port_doorbell)
		outb(0, DOORBELL_PORT);
	else
		ch_kick();
}

/*
 * Takes the next request, in ring order; returns 0 when the ring is empty.
 * One copy, then only the copy: the host can rewrite the slot at any time.
 */
static int take_request(struct ring_req *req)
{
	uint32_t prod = __atomic_load_n(ring_u32(OFF_REQ_PROD), __ATOMIC_ACQUIRE);
	uint32_t pending = prod - req_cons;
	/* An honest host never has more than a ring's worth queued; a lying
	 * one is reported and its ring is taken as empty. */
	if (pending > RING_SLOTS) {
		ch_send("error ring-overrun %u", pending);
		req_cons = prod;
		__atomic_store_n(ring_u32(OFF_REQ_CONS), req_cons, __ATOMIC_RELEASE);
		return 0;
	}
	if (pending == 0)
		return 0;
	memcpy(req, window + REQ_BASE + (req_cons % RING_SLOTS) * sizeof *req, sizeof *req);
	/* The fence keeps the compiler from re-reading the slot later. */
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	req_cons++;
	__atomic_store_n(ring_u32(OFF_REQ_CONS), req_cons, __ATOMIC_RELEASE);
	return 1;
}

static void put_reply(const struct ring_resp *resp)
{
	pthread_mutex_lock(&reply_lock);
	memcpy(window + RESP_BASE + (resp_prod % RING_SLOTS) * sizeof *resp, resp, sizeof *resp);
	resp_prod++;
	__atomic_store_n(ring_u32(OFF_RESP_PROD), resp_prod, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&reply_lock);
}

static uint64_t now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000 + (uint64_t)t.tv_nsec / 1000;
}

/*
 * How long the server looks for its next request before it sleeps. A
 * sleep and a wake-up cost the guest about 4k instructions and the host
 * hundreds of us of CPU in v86 (the idle path, the interrupt, two context
 * switches; docs/benchmarks.md), more than a request itself. One request at
 * a time, the next one comes some 0.4-0.7 ms after our reply.
 */
#define SPIN_US 1000
/* A bound that does not trust the clock (a VM restored from a snapshot taken
 * mid-look may see its monotonic clock jump): a look takes a few us. */
#define SPIN_MAX_LOOKS 2000

/* Looks for the next request for up to SPIN_US. Each outb lets the host
 * look at its channel and fill the ring; while OFF_SPINNING is set it need
 * not ring us. Returns 1 if a request came. */
static int spin_for_request(void)
{
	uint64_t until = now_us() + SPIN_US;
	int found, looks = 0;
	__atomic_store_n(ring_u32(OFF_SPINNING), 1, __ATOMIC_RELEASE);
	do {
		found = __atomic_load_n(ring_u32(OFF_REQ_PROD), __ATOMIC_ACQUIRE) != req_cons;
		if (!found)
			outb(1, DOORBELL_PORT);
	} while (!found && ++looks < SPIN_MAX_LOOKS && now_us() < until);
	__atomic_store_n(ring_u32(OFF_SPINNING), 0, __ATOMIC_RELEASE);
	/* A request put in after our last look rang us: the wait sees it. */
	return found || __atomic_load_n(ring_u32(OFF_REQ_PROD), __ATOMIC_ACQUIRE) != req_cons;
}

/* Ring-indicator edges seen so far (the host's doorbell flips the line). */
static int kicks_seen(void)
{
	struct serial_icounter_struct ic;
	return ioctl(ch_fd, TIOCGICOUNT, &ic) == 0 ? ic.rng : -1;
}

/*
 * The server: one thread serves every request, one at a time, and sleeps
 * only when the ring is empty. The guest's CPU is the only thing that runs
 * here (v86's IDE model completes a command inside the instruction that
 * starts it), so more threads would only add wake-ups and context switches:
 * measured, one thread takes fewer guest instructions per request than four.
 * While blkback serves, the host adds requests without ringing (it rings
 * only when blkback has caught up, see backend.ts), and blkback finds them
 * when it looks at the ring again.
 */
static void *server(void *unused)
{
	(void)unused;
	for (;;) {
		/* Without the port, a doorbell that rings while we serve is seen
		 * by its count (two ioctls a round). With it, we look at the ring
		 * before we sleep, which sees every request such a doorbell was for,
		 * and save the two syscalls. One that rings between the last look
		 * and the wait's start is missed either way; the host rings again
		 * when its work sits untaken. */
		int before = port_doorbell ? 0 : kicks_seen();
		struct ring_req req;
		while (take_request(&req)) {
			struct ring_resp resp;
			serve(&req, &resp);
			put_reply(&resp);
			ring_host();
		}
		if (port_doorbell) {
			if (spin_for_request())
				continue;
		} else if (before < 0 || kicks_seen() != before) {
			continue;
		}
		if (ioctl(ch_fd, TIOCMIWAIT, TIOCM_RNG) != 0 && errno != EINTR) {
			ch_send("error tiocmiwait %d", errno);
			sleep(1);
		}
	}
	return NULL;
}

_Static_assert(PAGE == WIN_PAGE, "window pages are pages");

static void report_window(void)
{
	win_report(window, WINDOW_PAGES, disk_bytes);
}

/* `window`: report the window again (a restored VM's new worker asks). */
/*
 * Fault injection: turn hostile and put `count` lying replies into the
 * reply ring (unknown ids, wrong ops, impossible lengths), as a compromised
 * disk VM would. The host must refuse them and treat the VM as dead.
 */
static void send_garbage(unsigned count)
{
	static const uint32_t lengths[] = { 0, 7, 4096, 0xFFFFFFFFu };
	for (unsigned i = 0; i < count; i++) {
		struct ring_resp resp = {
			.id = 0x80000000u | (uint32_t)rand(),
			.status = (uint8_t)(i % 5),
			.op = (uint8_t)(rand() % 7),
			.length = lengths[i % 4],
			.err = 0,
		};
		put_reply(&resp);
	}
	ring_host();
	ch_send("garbage-sent %u", count);
}

static int handle(char *verb, char *args)
{
	if (strcmp(verb, "window") == 0) {
		report_window();
		return 1;
	}
	if (strcmp(verb, "garbage") == 0) {
		unsigned long n = args ? strtoul(args, NULL, 10) : 0;
		if (n < 1 || n > RING_SLOTS)
			ch_send("error garbage bad-arguments");
		else
			send_garbage((unsigned)n);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *device = argc > 1 ? argv[1] : "/dev/sda";

	ch_open(argc > 2 ? argv[2] : "/dev/ttyS1");
	disk_fd = open(device, O_RDWR | O_DIRECT);
	if (disk_fd < 0)
		fail("open", errno);
	if (ioctl(disk_fd, BLKGETSIZE64, &disk_bytes) != 0)
		fail("blkgetsize64", errno);
	window = win_map(WINDOW_BYTES);
	port_doorbell = ioperm(DOORBELL_PORT, 1, 1) == 0;
	if (!port_doorbell)
		ch_send("error ioperm %d", errno);

	/* Zero first, magic last: the host checks the magic when it attaches. */
	memset(window, 0, PAGE);
	__atomic_store_n(ring_u32(0), RING_MAGIC, __ATOMIC_RELEASE);
	report_window();

	ch_send("hello disk");
	/* ioperm is per thread: the server inherits it from here. */
	pthread_t t;
	int err = pthread_create(&t, NULL, server, NULL);
	if (err)
		fail("pthread_create", err);
	ch_loop(handle);
	return 0;
}
