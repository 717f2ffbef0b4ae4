/*
 * netback: the net VM's back end helper. The stock ne2k-pci driver owns
 * the NIC (IFACE); netback holds a packet socket bound to it and pumps
 * Ethernet frames between the NIC and two frame rings in a shared window
 * (helpers/window.h) that the host reads and writes directly:
 *
 *   ring A (to guest): frames the host gives us; we send them on IFACE
 *                      through the socket (the driver's transmit path).
 *   ring B (to host):  frames IFACE receives, in promiscuous mode (they are
 *                      for the app VM's MAC, not the NIC's); the kernel
 *                      puts them in the socket's mapped receive ring and we
 *                      copy them into ring B.
 *
 * A packet socket, not a TAP joined to IFACE by a bridge (the first design):
 * a received frame then skips the bridge, a qdisc, the TAP and one read()
 * each, and the net VM's guest ran 1.6 M instructions per MB downloaded
 * instead of 2.6 M (docs/benchmarks.md). It is the way the original work's
 * translation modules talk to a driver: straight to the device, with no
 * forwarding stack in between. The net VM has no address of its own. The
 * ring layout is mirrored in frame-ring.ts. Doorbells as in blkback: we `outb`
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
#include <sys/mman.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
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
#define RING_FULL_WAIT_US 200
/* The socket's receive ring is where frames wait while the NIC's interrupts
 * keep the guest's CPU from us: it must hold what the wire's connections
 * have in flight (slirp keeps up to 1 MiB each), or a burst is dropped there
 * and TCP backs off. 2048 frames of 2 KiB (two to a page) hold about 3 MB. */
#define RX_FRAME_BYTES 2048u
#define RX_BLOCK_BYTES 4096u
#define RX_FRAMES 2048u

/* Page 0. The host may write any of it at any time; see the readers. */
struct net_header {
	uint32_t magic;
	uint32_t to_guest_prod;    /* ring A, host writes */
	uint32_t to_guest_cons;    /* ring A, we write */
	uint32_t to_host_prod;     /* ring B, we write */
	uint32_t to_host_cons;     /* ring B, host writes */
	uint32_t to_host_dropped;  /* we write: frames the NIC received that the socket's receive ring had no room for */
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
static int pkt_fd = -1;
static unsigned char *rx_ring; /* the socket's receive ring, RX_FRAMES slots */
/* Our own indices and counts live here; the window copies are only for the
 * host to read, since it can overwrite them. */
static uint32_t to_guest_cons, to_host_prod;
static struct {
	uint32_t to_host, to_guest, to_host_dropped, to_guest_invalid, send_errors;
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

/* The kernel marks a frame TP_STATUS_LOSING when it dropped some since we
 * last asked: add its drop count (which asking resets) to ours. */
static void count_ring_drops(void)
{
	struct tpacket_stats ts;
	socklen_t len = sizeof ts;
	if (getsockopt(pkt_fd, SOL_PACKET, PACKET_STATISTICS, &ts, &len) == 0)
		publish(&hdr->to_host_dropped, __atomic_add_fetch(&st.to_host_dropped, ts.tp_drops, __ATOMIC_RELAXED));
}

/* Sleeps until the receive ring has a frame. IFACE going down leaves an
 * error on the socket, and poll reports it until it is read. */
static void wait_for_frames(void)
{
	struct pollfd p = { .fd = pkt_fd, .events = POLLIN };
	if (poll(&p, 1, -1) > 0 && (p.revents & POLLERR)) {
		int err;
		socklen_t len = sizeof err;
		getsockopt(pkt_fd, SOL_SOCKET, SO_ERROR, &err, &len);
		usleep(10000); /* IFACE is down: don't spin */
	}
}

/* IFACE -> the socket's receive ring -> ring B, with one doorbell per
 * TX_BATCH frames of a burst rather than one per frame. */
static void *nic_reader(void *unused)
{
	(void)unused;
	unsigned next = 0, batch = 0;
	for (;;) {
		struct tpacket2_hdr *h = (struct tpacket2_hdr *)(rx_ring + (size_t)next * RX_FRAME_BYTES);
		uint32_t status = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
		if (!(status & TP_STATUS_USER)) {
			if (batch)
				ring_host();
			batch = 0;
			wait_for_frames();
			continue;
		}
		pthread_mutex_lock(&tx_lock);
		unsigned char *s = to_host_slot();
		if (!s) {
			/* The host takes no more for now (the app VM is behind): leave
			 * frames in the receive ring, where they wait rather than drop. */
			pthread_mutex_unlock(&tx_lock);
			if (batch)
				ring_host();
			batch = 0;
			usleep(RING_FULL_WAIT_US);
			continue;
		}
		/* A 1500-MTU NIC never hands us more, but check: a frame cut
		 * short by the slot (tp_len > tp_snaplen) is dropped whole. */
		uint32_t len = h->tp_snaplen;
		int ok = h->tp_len == len && len >= FRAME_MIN && len <= FRAME_MAX && h->tp_mac + len <= RX_FRAME_BYTES;
		if (ok) {
			memcpy(s + 4, (unsigned char *)h + h->tp_mac, len);
			to_host_commit(s, len);
		}
		pthread_mutex_unlock(&tx_lock);
		/* Copied out: the slot is the kernel's again. */
		__atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
		next = (next + 1) % RX_FRAMES;
		if (status & TP_STATUS_LOSING)
			count_ring_drops();
		if (!ok)
			continue;
		count(&st.to_host);
		if (++batch == TX_BATCH) {
			ring_host();
			batch = 0;
		}
	}
	return NULL;
}

/*
 * Ring A -> IFACE. Only our own cons index is trusted;
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
			 * (slow) send through the driver. */
			__atomic_signal_fence(__ATOMIC_SEQ_CST);
			publish(&hdr->to_guest_cons, ++to_guest_cons);
			if (!valid)
				continue;
			ssize_t n;
			do
				n = send(pkt_fd, frame, len, 0);
			while (n < 0 && errno == EINTR);
			/* ENOBUFS, ENETDOWN (IFACE down): the frame is lost, as on a wire. */
			if (n < 0)
				count(&st.send_errors);
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
		count_ring_drops();
		ch_send("net-stats to_host=%u to_guest=%u to_host_dropped=%u to_guest_invalid=%u send_errors=%u",
			__atomic_load_n(&st.to_host, __ATOMIC_RELAXED),
			__atomic_load_n(&st.to_guest, __ATOMIC_RELAXED),
			__atomic_load_n(&st.to_host_dropped, __ATOMIC_RELAXED),
			__atomic_load_n(&st.to_guest_invalid, __ATOMIC_RELAXED),
			__atomic_load_n(&st.send_errors, __ATOMIC_RELAXED));
		return 1;
	}
	return 0;
}

/* ---- setup: a packet socket on IFACE ---- */

static void if_request(int sock, unsigned long req, const char *name, struct ifreq *ifr, const char *what)
{
	char tag[48];
	strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
	if (ioctl(sock, req, ifr) == 0)
		return;
	snprintf(tag, sizeof tag, "%s-%s", what, name);
	fail(tag, errno);
}

static void sockopt(int level, int name, const void *value, socklen_t len, const char *what)
{
	if (setsockopt(pkt_fd, level, name, value, len) != 0)
		fail(what, errno);
}

/* Brings IFACE up and returns its index. */
static int iface_up(const char *iface)
{
	int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		fail("socket", errno);
	struct ifreq ifr = { 0 };
	if_request(sock, SIOCGIFINDEX, iface, &ifr, "ifindex");
	int index = ifr.ifr_ifindex;
	ifr = (struct ifreq){ 0 };
	if_request(sock, SIOCGIFFLAGS, iface, &ifr, "ifflags");
	ifr.ifr_flags |= IFF_UP;
	if_request(sock, SIOCSIFFLAGS, iface, &ifr, "ifup");
	close(sock);
	return index;
}

static void setup_network(const char *iface)
{
	int index = iface_up(iface);
	/* Close-on-exec: a lingering `exec` child must not keep the socket. */
	pkt_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
	if (pkt_fd < 0)
		fail("packet-socket", errno);
	int v2 = TPACKET_V2, one = 1;
	sockopt(SOL_PACKET, PACKET_VERSION, &v2, sizeof v2, "packet-version");
	struct tpacket_req req = {
		.tp_block_size = RX_BLOCK_BYTES,
		.tp_block_nr = RX_FRAMES * RX_FRAME_BYTES / RX_BLOCK_BYTES,
		.tp_frame_size = RX_FRAME_BYTES,
		.tp_frame_nr = RX_FRAMES,
	};
	sockopt(SOL_PACKET, PACKET_RX_RING, &req, sizeof req, "packet-rx-ring");
	rx_ring = mmap(NULL, (size_t)RX_FRAMES * RX_FRAME_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, pkt_fd, 0);
	if (rx_ring == MAP_FAILED)
		fail("packet-mmap", errno);
	/* What we send is not received back. */
	sockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one, "packet-ignore-outgoing");
	struct sockaddr_ll at = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = index };
	if (bind(pkt_fd, (struct sockaddr *)&at, sizeof at) != 0)
		fail("packet-bind", errno);
	struct packet_mreq promisc = { .mr_ifindex = index, .mr_type = PACKET_MR_PROMISC };
	sockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, &promisc, sizeof promisc, "packet-promisc");
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
	start(nic_reader);
	start(to_guest_drainer);
	ch_on_kick = on_kick;
	start(ch_watch_ring_indicator);
	ch_loop(handle);
	return 0;
}
