/*
 * netback: the net VM's back end helper. The stock ne2k-pci driver owns
 * the NIC (IFACE); a bridge br0 joins it to tap0, and netback pumps
 * Ethernet frames between tap0 and two frame rings in a shared window
 * (helpers/window.h) that the host reads and writes directly:
 *
 *   ring A (to guest): frames the host gives us; we write them to tap0,
 *                      the bridge sends them out on IFACE.
 *   ring B (to host):  frames the bridge hands tap0; we read them and put
 *                      them in the ring for the host.
 *
 * The net VM has no address of its own; the bridge just forwards. The ring
 * layout is mirrored in frame-ring.ts. Doorbells as in blkback: we `outb`
 * to a port the host claims (or send a 0x07 byte without ioperm); the host
 * flips the UART's ring-indicator line (or sends a 0x07 byte).
 *
 *   guest: BH1 window-pfns ... / window-end 65 0     (see window.h)
 *          BH1 hello net
 *          BH1 error <what> ERRNO                     (then exit 1, at startup)
 *   verbs: window | garbage N | stats
 *
 * usage: netback [IFACE [TTY]]
 */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <time.h>
#include <net/if.h>
#include <sys/io.h>
#include <sys/socket.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include "../helpers/channel.h"
#include "../helpers/window.h"

#define NET_MAGIC 0x3152544Eu /* "NTR1" */
#define SLOT_BYTES 2048u
#define SLOTS 64u
#define RING_A WIN_PAGE                        /* to guest: host produces */
#define RING_B (WIN_PAGE + SLOTS * SLOT_BYTES) /* to host: we produce */
#define NET_WINDOW_BYTES (WIN_PAGE + 2 * SLOTS * SLOT_BYTES)
#define NET_WINDOW_PAGES (NET_WINDOW_BYTES / WIN_PAGE)
#define FRAME_MIN 14   /* an Ethernet header */
#define FRAME_MAX 1514 /* header + 1500-byte MTU, no FCS */
#define NET_DOORBELL_PORT 0x6f1 /* frame-ring.ts */
#define TX_BATCH 16       /* frames put in ring B between two doorbells */
#define TAP_NAME "tap0"
#define BRIDGE_NAME "br0"
#define TAP_QUEUE_FRAMES 2000
#define RING_FULL_WAIT_US 200

/* Page 0. The host may write any of it at any time; see the readers. */
struct net_header {
	uint32_t magic;
	uint32_t to_guest_prod;    /* ring A, host writes */
	uint32_t to_guest_cons;    /* ring A, we write */
	uint32_t to_host_prod;     /* ring B, we write */
	uint32_t to_host_cons;     /* ring B, host writes */
	uint32_t to_host_dropped;  /* tap frames lost to a full ring B: none now, netback waits for room */
	uint32_t to_guest_invalid; /* we write: ring A slots with a bad length */
};

_Static_assert(offsetof(struct net_header, to_guest_prod) == 4, "header as in frame-ring.ts");
_Static_assert(offsetof(struct net_header, to_host_prod) == 12, "header as in frame-ring.ts");
_Static_assert(offsetof(struct net_header, to_guest_invalid) == 24, "header as in frame-ring.ts");
_Static_assert(sizeof(struct net_header) <= WIN_PAGE, "header fits page 0");
_Static_assert(4 + FRAME_MAX <= SLOT_BYTES, "a slot holds its length and a full frame");
_Static_assert((SLOTS & (SLOTS - 1)) == 0, "free-running u32 indices wrap onto slot 0");
_Static_assert(RING_B == 4096 + 64 * 2048, "ring B follows ring A");
_Static_assert(NET_WINDOW_BYTES == 65 * 4096, "window is 65 pages");

static unsigned char *window;
static struct net_header *hdr;
static int tap_fd = -1;
/* Our own indices and counts live here; the window copies are only for the
 * host to read, since it can overwrite them. */
static uint32_t to_guest_cons, to_host_prod;
static struct {
	uint32_t to_host, to_guest, to_host_dropped, to_guest_invalid, tap_write_errors;
} st;
static pthread_mutex_t tx_lock = PTHREAD_MUTEX_INITIALIZER; /* ring B producers */
static pthread_mutex_t kick_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t kick_cond;
static int kicked;
static int port_doorbell;

/* Stores a value for the host; release: the slots it covers go first. */
static void publish(uint32_t *field, uint32_t v)
{
	__atomic_store_n(field, v, __ATOMIC_RELEASE);
}

static uint32_t count(uint32_t *counter)
{
	return __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

static unsigned char *slot(unsigned ring, uint32_t index)
{
	return window + ring + (index % SLOTS) * SLOT_BYTES;
}

static uint64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void ring_host(void)
{
	if (port_doorbell)
		outb(0, NET_DOORBELL_PORT);
	else
		ch_kick();
}

/* A host whose indices make no sense is lying; say so at most once a second
 * (it could otherwise flood the line), and carry on as if its ring were empty. */
static void report_overrun(uint32_t n)
{
	static long last = -1;
	long now = (long)(now_ms() / 1000);
	if (__atomic_exchange_n(&last, now, __ATOMIC_RELAXED) != now)
		ch_send("error ring-overrun %u", n);
}

/*
 * The next free slot of ring B, or NULL when the ring is full. The caller
 * holds tx_lock, fills the slot's data, then commits it.
 */
static unsigned char *to_host_slot(void)
{
	uint32_t used = to_host_prod - __atomic_load_n(&hdr->to_host_cons, __ATOMIC_ACQUIRE);
	if (used > SLOTS) {
		report_overrun(used);
		used = 0;
	}
	return used == SLOTS ? NULL : slot(RING_B, to_host_prod);
}

/* Hands the slot to_host_slot gave to the host, with `len` in its length field. */
static void to_host_commit(unsigned char *s, uint32_t len)
{
	__atomic_store_n((uint32_t *)s, len, __ATOMIC_RELAXED);
	publish(&hdr->to_host_prod, ++to_host_prod);
}

/*
 * Puts one entry in ring B: `len` in the length field, `bytes` bytes of
 * data (they differ only for garbage). Returns 0 when the ring is full.
 * The caller holds tx_lock and rings the host.
 */
static int to_host_put(uint32_t len, const unsigned char *data, size_t bytes)
{
	unsigned char *s = to_host_slot();
	if (!s)
		return 0;
	memcpy(s + 4, data, bytes);
	to_host_commit(s, len);
	return 1;
}

/* Bridge -> tap0 -> ring B. The tap is non-blocking so that a burst goes
 * into the ring with one doorbell per TX_BATCH frames, not one per frame.
 * A frame is read straight into its slot: one copy fewer per frame, in the
 * VM that bounds a download (docs/benchmarks.md). */
static void *tap_reader(void *unused)
{
	(void)unused;
	for (;;) {
		struct pollfd p = { .fd = tap_fd, .events = POLLIN };
		if (poll(&p, 1, -1) < 0)
			continue; /* EINTR */
		unsigned batch = 0;
		for (;;) {
			pthread_mutex_lock(&tx_lock);
			unsigned char *s = to_host_slot();
			if (!s) {
				/* The host takes no more for now (the app VM is behind): leave
				 * frames in tap0's queue, where they wait rather than drop. */
				pthread_mutex_unlock(&tx_lock);
				if (batch)
					ring_host();
				batch = 0;
				usleep(RING_FULL_WAIT_US);
				continue;
			}
			unsigned char *into = s + 4;
			ssize_t n = read(tap_fd, into, SLOT_BYTES - 4);
			int err = errno;
			/* A 1500-MTU bridge never hands us more, but check. */
			int ok = n >= FRAME_MIN && n <= FRAME_MAX;
			if (ok)
				to_host_commit(s, (uint32_t)n);
			pthread_mutex_unlock(&tx_lock);
			if (n < 0 && err == EINTR)
				continue;
			if (n < 0) {
				if (err != EAGAIN) {
					ch_send("error tap-read %d", err);
					if (batch)
						ring_host(); /* what is in the ring goes now */
					batch = 0;
					sleep(1); /* tap0 taken down by hand; don't spin */
				}
				break;
			}
			if (ok) {
				count(&st.to_host);
				if (++batch == TX_BATCH) {
					ring_host();
					batch = 0;
				}
			}
		}
		if (batch)
			ring_host();
	}
	return NULL;
}

/*
 * Ring A -> tap0 -> bridge -> IFACE. Only our own cons index is trusted;
 * the length is read once and each frame is copied out before use, since
 * the host may rewrite a slot at any time.
 */
static void drain_to_guest(void)
{
	static unsigned char frame[FRAME_MAX];
	int was_full = 0;

	for (;;) {
		uint32_t prod = __atomic_load_n(&hdr->to_guest_prod, __ATOMIC_ACQUIRE);
		uint32_t pending = prod - to_guest_cons;
		if (pending > SLOTS) {
			report_overrun(pending);
			to_guest_cons = prod;
			publish(&hdr->to_guest_cons, to_guest_cons);
			break;
		}
		if (!pending)
			break;
		was_full |= pending == SLOTS;
		while (to_guest_cons != prod) {
			const unsigned char *s = slot(RING_A, to_guest_cons);
			uint32_t len = __atomic_load_n((const uint32_t *)s, __ATOMIC_RELAXED);
			int valid = len >= FRAME_MIN && len <= FRAME_MAX;
			if (valid)
				memcpy(frame, s + 4, len);
			else
				publish(&hdr->to_guest_invalid, count(&st.to_guest_invalid));
			/* Copied out: the slot is the host's again before the
			 * (slow) write through the bridge and the driver. */
			__atomic_signal_fence(__ATOMIC_SEQ_CST);
			publish(&hdr->to_guest_cons, ++to_guest_cons);
			if (!valid)
				continue;
			ssize_t n;
			do
				n = write(tap_fd, frame, len);
			while (n < 0 && errno == EINTR);
			/* ENOBUFS, EAGAIN, EIO: the frame is lost, as on a wire. */
			if (n < 0)
				count(&st.tap_write_errors);
			else
				count(&st.to_guest);
		}
	}
	/* The host may be holding frames back for want of room: tell it. */
	if (was_full)
		ring_host();
}

static void *to_guest_drainer(void *unused)
{
	(void)unused;
	for (;;) {
		/* No timeout: a ring-indicator edge lost between two waits is
		 * covered by the host, which rings again while ring A holds frames
		 * we have not taken (backend.ts). A poll here woke the idle VM ten
		 * times a second, each wake-up costing hundreds of us in v86. */
		pthread_mutex_lock(&kick_lock);
		while (!kicked)
			pthread_cond_wait(&kick_cond, &kick_lock);
		kicked = 0;
		pthread_mutex_unlock(&kick_lock);
		drain_to_guest();
	}
	return NULL;
}

/* The host rang: a kick byte on the line or a ring-indicator edge. */
static void on_kick(void)
{
	pthread_mutex_lock(&kick_lock);
	kicked = 1;
	pthread_cond_signal(&kick_cond);
	pthread_mutex_unlock(&kick_lock);
}


/*
 * `garbage N`: behave like a broken or hostile net VM for N ring B
 * entries, so tests can see the host drop and count them. Entry i has
 * length bad[i % 7] for i % 7 < 6, else a valid random length; the slot
 * is random bytes either way. Waits for room while the host drains.
 */
static void send_garbage(unsigned n)
{
	static const uint32_t bad[] = { 0, 5, 13, 1515, 9000, 0xFFFFFFFFu };
	static unsigned char junk[SLOT_BYTES - 4];
	static uint32_t seed;
	unsigned sent = 0;

	if (!seed)
		seed = (uint32_t)now_ms() ^ ((uint32_t)getpid() << 16) ^ 1;
	for (; sent < n; sent++) {
		for (size_t i = 0; i < sizeof junk; i++) {
			seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
			junk[i] = (unsigned char)seed;
		}
		junk[0] = (junk[0] & 0xfc) | 0x02; /* unicast: never flooded as broadcast */
		uint32_t len = sent % 7 < 6 ? bad[sent % 7]
					   : FRAME_MIN + seed % (FRAME_MAX - FRAME_MIN + 1);
		uint64_t deadline = now_ms() + 2000;
		for (;;) {
			pthread_mutex_lock(&tx_lock);
			int ok = to_host_put(len, junk, sizeof junk);
			pthread_mutex_unlock(&tx_lock);
			ring_host();
			if (ok)
				break;
			if (now_ms() > deadline)
				goto out; /* the host stopped draining */
			usleep(1000);
		}
	}
out:
	ch_send("garbage-sent %u", sent);
}

static int handle(char *verb, char *args)
{
	if (strcmp(verb, "window") == 0) {
		win_report(window, NET_WINDOW_PAGES, 0);
		return 1;
	}
	if (strcmp(verb, "garbage") == 0) {
		char *end = NULL;
		unsigned long n = args ? strtoul(args, &end, 10) : 0;
		if (!args || end == args || *end || n < 1 || n > 1000)
			ch_send("error garbage bad-arguments");
		else
			send_garbage((unsigned)n);
		return 1;
	}
	if (strcmp(verb, "stats") == 0) {
		ch_send("net-stats to_host=%u to_guest=%u to_host_dropped=%u to_guest_invalid=%u tap_write_errors=%u",
			__atomic_load_n(&st.to_host, __ATOMIC_RELAXED),
			__atomic_load_n(&st.to_guest, __ATOMIC_RELAXED),
			__atomic_load_n(&st.to_host_dropped, __ATOMIC_RELAXED),
			__atomic_load_n(&st.to_guest_invalid, __ATOMIC_RELAXED),
			__atomic_load_n(&st.tap_write_errors, __ATOMIC_RELAXED));
		return 1;
	}
	return 0;
}

/* ---- setup: tap0, and br0 joining it to IFACE ---- */

static void if_request(int sock, unsigned long req, const char *name, struct ifreq *ifr, const char *what)
{
	char tag[48];
	strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
	if (ioctl(sock, req, ifr) == 0)
		return;
	snprintf(tag, sizeof tag, "%s-%s", what, name);
	fail(tag, errno);
}

static void bridge_port(int sock, const char *name)
{
	struct ifreq ifr = { 0 };
	if_request(sock, SIOCGIFINDEX, name, &ifr, "ifindex");
	int index = ifr.ifr_ifindex;
	ifr = (struct ifreq){ .ifr_ifindex = index };
	strncpy(ifr.ifr_name, BRIDGE_NAME, IFNAMSIZ - 1);
	/* EBUSY: already a port, from before a restart of netback. */
	if (ioctl(sock, SIOCBRADDIF, &ifr) != 0 && errno != EBUSY && errno != EEXIST)
		fail("bridge-addif", errno);
}

static void link_up(int sock, const char *name)
{
	struct ifreq ifr = { 0 };
	if_request(sock, SIOCGIFFLAGS, name, &ifr, "ifflags");
	ifr.ifr_flags |= IFF_UP;
	if_request(sock, SIOCSIFFLAGS, name, &ifr, "ifup");
}

static void setup_network(const char *iface)
{
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };

	/* Close-on-exec: a lingering `exec` child must not keep tap0 alive. */
	tap_fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (tap_fd < 0)
		fail("tun-open", errno);
	if_request(tap_fd, TUNSETIFF, TAP_NAME, &ifr, "tunsetiff");

	int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		fail("socket", errno);
	char br[IFNAMSIZ] = BRIDGE_NAME; /* the kernel reads IFNAMSIZ bytes */
	if (ioctl(sock, SIOCBRADDBR, br) != 0 && errno != EEXIST)
		fail("bridge-add", errno);
	bridge_port(sock, iface);
	bridge_port(sock, TAP_NAME);
	/* tap0's queue is where frames wait while the NIC's interrupts keep the
	 * guest's CPU from us: it must hold what the wire's connections have in
	 * flight (slirp keeps up to 1 MiB each), or a burst is dropped there
	 * and TCP backs off. 2000 frames hold about 3 MB. */
	ifr = (struct ifreq){ .ifr_qlen = TAP_QUEUE_FRAMES };
	strncpy(ifr.ifr_name, TAP_NAME, IFNAMSIZ - 1);
	if (ioctl(sock, SIOCSIFTXQLEN, &ifr) != 0)
		ch_send("error tap-txqlen %d", errno);
	link_up(sock, iface);
	link_up(sock, TAP_NAME);
	link_up(sock, BRIDGE_NAME);
	close(sock);
}

static void start(void *(*fn)(void *))
{
	pthread_t t;
	int err = pthread_create(&t, NULL, fn, NULL);
	if (err)
		fail("pthread_create", err);
}

int main(int argc, char **argv)
{
	const char *iface = argc > 1 ? argv[1] : "eth0";

	ch_open(argc > 2 ? argv[2] : "/dev/ttyS1");
	if (strlen(iface) >= IFNAMSIZ)
		fail("iface-name", EINVAL);
	setup_network(iface);

	window = win_map(NET_WINDOW_BYTES);
	hdr = (struct net_header *)window;
	/* Zero first, magic last: the host checks the magic when it attaches. */
	memset(window, 0, WIN_PAGE);
	__atomic_store_n(&hdr->magic, NET_MAGIC, __ATOMIC_RELEASE);
	win_report(window, NET_WINDOW_PAGES, 0);

	port_doorbell = ioperm(NET_DOORBELL_PORT, 1, 1) == 0;
	if (!port_doorbell)
		ch_send("error ioperm %d", errno);

	/* The drainer's timed wait must not jump with the `clock` verb. */
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&kick_cond, &ca);

	ch_send("hello net");
	/* ioperm is per thread: the threads inherit it from here. */
	start(tap_reader);
	start(to_guest_drainer);
	ch_on_kick = on_kick;
	start(ch_watch_ring_indicator);
	ch_loop(handle);
	return 0;
}
