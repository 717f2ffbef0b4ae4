/*
 * slirp-wire: the wire behind the net VM's NIC. A host-side user-mode
 * network (libslirp, the stack behind QEMU's "-netdev user") that the
 * emulated NIC plugs into through a Unix stream socket.
 *
 *   network 10.0.2.0/24, host/gateway 10.0.2.2, DNS 10.0.2.3,
 *   DHCP from 10.0.2.15; IPv4 only.
 *
 * Socket protocol (QEMU's stream netdev): each Ethernet frame, without
 * FCS, follows its length as a 4-byte big-endian number. One client at a
 * time: a new connection replaces the current one, as a NIC plugged in
 * after its machine died. slirp's state (TCP connections, DHCP leases)
 * outlives clients; with no client, frames for the guest are dropped.
 *
 * Port policy: with --allow-ports P1,P2,... a guest TCP SYN to a host
 * port not in the list is refused here with a RST (connect() fails at
 * once) and never reaches slirp; UDP to such a port is dropped.
 *
 * usage: slirp-wire --socket PATH [--allow-ports all|P1,P2,...]
 * Prints "ready" once listening. SIGUSR1, and exit, print counters as a
 * JSON line on stderr. SIGTERM/SIGINT unlink PATH and exit 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <libslirp.h>

#define FRAME_MIN 14		/* an Ethernet header */
#define FRAME_MAX 1514		/* MTU 1500 + header, no FCS */
#define PREFIX_MAX 65535	/* beyond this the stream is out of step */
#define CLIENT_SNDBUF (16 << 20)	/* a few connections' 1 MiB flights, counted as the kernel counts (skb overhead) */
#define ETH_P_IPV4 0x0800
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PORT_DHCP 67		/* slirp's own DHCP server; never the host's */
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10
#define USAGE "usage: slirp-wire --socket PATH [--allow-ports all|P1,P2,...]"

static struct {
	uint64_t to_slirp_frames, to_slirp_bytes, to_client_frames, to_client_bytes;
	uint64_t dropped_malformed, dropped_no_client, dropped_would_block;
	uint64_t refused_by_policy, clients, held;
} cnt;

/*
 * Frames for a machine that is being replaced (its net VM rebooting) wait
 * here, a bounded while, for the next client: a reboot then costs the
 * guest's TCP a delay instead of a loss and a retransmission timeout.
 */
#define HOLD_FRAMES 256
#define HOLD_MS 2000
static struct {
	uint8_t data[FRAME_MAX];
	uint16_t len;
	int64_t at_ms;
} hold[HOLD_FRAMES];
static unsigned hold_first, hold_count;
static int64_t now_ns(void);

static Slirp *slirp;
static struct in_addr host_addr;
static bool allow_all = true;
static uint8_t allowed[65536 / 8];
static volatile sig_atomic_t got_stop, got_usr1;

/* The client: the NIC's end of the wire, and our parse/send state for it. */
static struct {
	int fd;			/* -1: nothing plugged in */
	bool dead;		/* a send failed deep inside slirp; the loop closes it */
	uint8_t hdr[4];
	size_t hdr_have;
	uint32_t skip;		/* bytes left of a frame being discarded */
	uint8_t frame[FRAME_MAX];
	size_t frame_len, frame_have;
	uint8_t out[4 + PREFIX_MAX];	/* the unsent tail of one frame */
	size_t out_off, out_len;
} cl = { .fd = -1 };

static void die(const char *what)
{
	fprintf(stderr, "slirp-wire: %s\n", what);
	exit(1);
}

static void print_counters(void)
{
	fprintf(stderr, "{\"to_slirp_frames\":%" PRIu64 ",\"to_slirp_bytes\":%" PRIu64
		",\"to_client_frames\":%" PRIu64 ",\"to_client_bytes\":%" PRIu64
		",\"held\":%" PRIu64 ",\"dropped_malformed\":%" PRIu64 ",\"dropped_no_client\":%" PRIu64
		",\"dropped_would_block\":%" PRIu64 ",\"refused_by_policy\":%" PRIu64
		",\"clients\":%" PRIu64 "}\n",
		cnt.to_slirp_frames, cnt.to_slirp_bytes, cnt.to_client_frames,
		cnt.to_client_bytes, cnt.held, cnt.dropped_malformed, cnt.dropped_no_client,
		cnt.dropped_would_block, cnt.refused_by_policy, cnt.clients);
	fflush(stderr);
}

static void client_close(const char *why)
{
	if (cl.fd < 0)
		return;
	fprintf(stderr, "slirp-wire: client closed: %s\n", why);
	close(cl.fd);
	cl.fd = -1;
}

static bool would_block(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* Pushes out the tail of a partly written frame; false while some is left. */
static bool client_flush(void)
{
	while (cl.out_off < cl.out_len) {
		ssize_t n = send(cl.fd, cl.out + cl.out_off, cl.out_len - cl.out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			cl.dead |= !would_block();
			return false;
		}
		cl.out_off += n;
	}
	cl.out_off = cl.out_len = 0;
	return true;
}

/*
 * One frame to the client. Never blocks slirp: when the socket is full the
 * frame is dropped whole (the guest's TCP retransmits). A frame the kernel
 * took only part of must be finished before any other, or the stream falls
 * out of step: its tail waits in cl.out.
 */
static void client_send(const void *buf, size_t len)
{
	uint8_t prefix[4] = { len >> 24, len >> 16, len >> 8, len };
	struct iovec iov[2] = { { prefix, 4 }, { (void *)buf, len } };
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
	ssize_t n;

	if (cl.fd < 0 || cl.dead) {
		if (hold_count == HOLD_FRAMES || len > FRAME_MAX) {
			cnt.dropped_no_client++;
			return;
		}
		unsigned i = (hold_first + hold_count++) % HOLD_FRAMES;
		memcpy(hold[i].data, buf, len);
		hold[i].len = (uint16_t)len;
		hold[i].at_ms = now_ns() / 1000000;
		cnt.held++;
		return;
	}
	if (len > PREFIX_MAX) {
		cnt.dropped_malformed++;
		return;
	}
	if (!client_flush()) {
		cnt.dropped_would_block++;
		return;
	}
	n = sendmsg(cl.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0) {
		if (would_block())
			cnt.dropped_would_block++;
		else
			cl.dead = true;
		return;
	}
	if ((size_t)n < 4 + len) {
		memcpy(cl.out, prefix, 4);
		memcpy(cl.out + 4, buf, len);
		cl.out_off = n;
		cl.out_len = 4 + len;
	}
	cnt.to_client_frames++;
	cnt.to_client_bytes += len;
}

static uint16_t get16(const uint8_t *p) { return p[0] << 8 | p[1]; }
static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8, p[1] = v; }

/* The Internet checksum over a 12-byte pseudo header (or none) and data. */
static uint16_t csum(const uint8_t *pseudo, const uint8_t *p, size_t len)
{
	uint32_t sum = 0;
	size_t i;

	for (i = 0; pseudo && i < 12; i += 2)
		sum += get16(pseudo + i);
	for (i = 0; i + 1 < len; i += 2)
		sum += get16(p + i);
	if (len & 1)
		sum += p[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/*
 * Refuses a SYN as a closed port does: RST|ACK acknowledging the SYN (and
 * any data on it), from the address it was sent to and slirp's gateway MAC.
 */
static void refuse_syn(const uint8_t *f, const uint8_t *ip, const uint8_t *th, size_t seg_len)
{
	uint8_t r[14 + 20 + 20] = { 0 }, *rip = r + 14, *rth = r + 34, pseudo[12] = { 0 };
	uint32_t ack = ((uint32_t)get16(th + 4) << 16 | get16(th + 6)) + 1 +
		       (seg_len - (th[12] >> 4) * 4);

	memcpy(r, f + 6, 6);
	r[6] = 0x52, r[7] = 0x55;		/* slirp's MACs: 52:55 + IPv4 address */
	memcpy(r + 8, &host_addr, 4);
	put16(r + 12, ETH_P_IPV4);

	rip[0] = 0x45;
	put16(rip + 2, 40);
	put16(rip + 6, 0x4000);			/* DF */
	rip[8] = 64;
	rip[9] = PROTO_TCP;
	memcpy(rip + 12, ip + 16, 4);
	memcpy(rip + 16, ip + 12, 4);
	put16(rip + 10, csum(NULL, rip, 20));

	memcpy(rth, th + 2, 2);
	memcpy(rth + 2, th, 2);
	put16(rth + 8, ack >> 16);
	put16(rth + 10, ack);
	rth[12] = 5 << 4;
	rth[13] = TH_RST | TH_ACK;
	memcpy(pseudo, rip + 12, 8);
	pseudo[9] = PROTO_TCP;
	pseudo[11] = 20;
	put16(rth + 16, csum(pseudo, rth, 20));
	client_send(r, sizeof(r));
}

/*
 * Where slirp would take the guest to the host itself: the gateway, and
 * the addresses it passes to connect() unchanged that mean "this machine"
 * (127/8, 0/8) or that it maps to loopback (255.255.255.255).
 */
static bool is_host(const uint8_t *a)
{
	return memcmp(a, &host_addr, 4) == 0 || a[0] == 127 || a[0] == 0 ||
	       (a[0] & a[1] & a[2] & a[3]) == 255;
}

/* True when the port policy consumed the frame (refused or dropped it). */
static bool policy_filter(const uint8_t *f, size_t len)
{
	const uint8_t *ip = f + 14, *l4;
	size_t ihl, ip_len, l4_len, doff;
	unsigned frag, dport;
	uint8_t proto;

	if (allow_all || len < 14 + 20 || get16(f + 12) != ETH_P_IPV4)
		return false;
	ihl = (ip[0] & 15) * 4;
	proto = ip[9];
	if (ip[0] >> 4 != 4 || ihl < 20 || len < 14 + ihl || !is_host(ip + 16) ||
	    (proto != PROTO_TCP && proto != PROTO_UDP))
		return false;	/* not for the host's ports; slirp judges the rest */

	/*
	 * Later fragments carry no ports and make nothing without the first,
	 * which is checked here. But a TCP fragment at offset 8 could rewrite
	 * the flags of a tiny first one (RFC 1858): drop it.
	 */
	frag = get16(ip + 6) & 0x1fff;
	if (frag != 0) {
		if (frag == 1 && proto == PROTO_TCP)
			goto drop;
		return false;
	}
	ip_len = get16(ip + 2) < len - 14 ? get16(ip + 2) : len - 14;
	l4 = ip + ihl;
	l4_len = ip_len > ihl ? ip_len - ihl : 0;
	if (l4_len < (proto == PROTO_TCP ? 20u : 8u))
		goto drop;	/* too short to judge: a tiny fragment or junk */
	dport = get16(l4 + 2);
	if ((allowed[dport / 8] & (1 << dport % 8)) || (proto == PROTO_UDP && dport == PORT_DHCP))
		return false;
	doff = (l4[12] >> 4) * 4;
	if (proto == PROTO_TCP && (l4[13] & (TH_SYN | TH_ACK | TH_RST)) == TH_SYN &&
	    doff >= 20 && doff <= l4_len)
		refuse_syn(f, ip, l4, l4_len);
drop:
	cnt.refused_by_policy++;
	return true;
}

/* Bytes from the client: split into frames, skip bad ones, feed slirp. */
static bool client_feed(const uint8_t *p, size_t n)
{
	while (n > 0) {
		size_t k;
		uint32_t len;

		if (cl.skip) {
			k = n < cl.skip ? n : cl.skip;
			cl.skip -= k, p += k, n -= k;
			continue;
		}
		if (cl.hdr_have < 4) {
			cl.hdr[cl.hdr_have++] = *p++, n--;
			if (cl.hdr_have < 4)
				continue;
			len = (uint32_t)cl.hdr[0] << 24 | cl.hdr[1] << 16 | cl.hdr[2] << 8 | cl.hdr[3];
			if (len > PREFIX_MAX) {
				fprintf(stderr, "slirp-wire: frame length %" PRIu32
					" from client: stream out of step\n", len);
				return false;
			}
			if (len < FRAME_MIN || len > FRAME_MAX) {
				cnt.dropped_malformed++;
				cl.skip = len;
				cl.hdr_have = 0;
				continue;
			}
			cl.frame_len = len;
			cl.frame_have = 0;
			continue;
		}
		k = cl.frame_len - cl.frame_have < n ? cl.frame_len - cl.frame_have : n;
		memcpy(cl.frame + cl.frame_have, p, k);
		cl.frame_have += k, p += k, n -= k;
		if (cl.frame_have < cl.frame_len)
			continue;
		cl.hdr_have = 0;
		if (policy_filter(cl.frame, cl.frame_len))
			continue;
		cnt.to_slirp_frames++;
		cnt.to_slirp_bytes += cl.frame_len;
		slirp_input(slirp, cl.frame, cl.frame_len);
	}
	return true;
}

static void client_read(void)
{
	static uint8_t buf[64 * 1024];
	ssize_t n = recv(cl.fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (n == 0)
		client_close("end of stream");
	else if (n < 0 && !would_block())
		client_close(strerror(errno));
	else if (n > 0 && !client_feed(buf, n))
		client_close("bad length prefix");
}

/* A new client: hand it what waited for it, unless it waited too long. */
static void hold_release(void)
{
	int64_t now = now_ns() / 1000000;
	for (; hold_count > 0; hold_count--, hold_first = (hold_first + 1) % HOLD_FRAMES) {
		if (now - hold[hold_first].at_ms > HOLD_MS)
			cnt.dropped_no_client++;
		else
			client_send(hold[hold_first].data, hold[hold_first].len);
	}
}

static void client_accept(int lfd)
{
	int fd, sz = CLIENT_SNDBUF;

	while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		client_close("replaced by a new client");
		/* Deep enough for a burst; root may exceed net.core.wmem_max. */
		if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) < 0) {
			int got = 0;
			socklen_t len = sizeof(got);
			setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
			/* Without root the kernel caps it at wmem_max, then doubles that for its overhead. */
			if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &got, &len) == 0 && got / 2 < sz)
				fprintf(stderr, "slirp-wire: socket to the cable holds %d bytes, not %d "
					"(not root: net.core.wmem_max caps it); bursts past it are dropped\n",
					got / 2, sz);
		}
		memset(&cl, 0, sizeof(cl));
		cl.fd = fd;
		cnt.clients++;
	}
	if (cl.fd >= 0 && !cl.dead)
		hold_release();
}

/*
 * slirp's timers: a list, expiry in ms on the CLOCK_MONOTONIC clock that
 * clock_get_ns reports. Timers made by timer_new_opaque (config version
 * 4, preferred by slirp when offered) fire through slirp_handle_timer.
 */
struct wire_timer {
	struct wire_timer *next;
	SlirpTimerCb cb;		/* NULL: fire by id */
	int id;
	void *cb_opaque;
	int64_t expire;			/* -1: not armed */
};
static struct wire_timer *timers;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *cb_timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque)
{
	struct wire_timer *t = calloc(1, sizeof(*t));

	(void)opaque;
	if (!t)
		die("out of memory");
	*t = (struct wire_timer){ .next = timers, .cb = cb, .cb_opaque = cb_opaque, .expire = -1 };
	timers = t;
	return t;
}

#if SLIRP_CONFIG_VERSION_MAX >= 4
static void *cb_timer_new_opaque(SlirpTimerId id, void *cb_opaque, void *opaque)
{
	struct wire_timer *t = cb_timer_new(NULL, cb_opaque, opaque);

	t->id = id;
	return t;
}
#endif

static void cb_timer_free(void *timer, void *opaque)
{
	struct wire_timer **pp;

	(void)opaque;
	for (pp = &timers; *pp; pp = &(*pp)->next)
		if (*pp == timer) {
			*pp = (*pp)->next;
			free(timer);
			return;
		}
}

static void cb_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
	(void)opaque;
	((struct wire_timer *)timer)->expire = expire_ms;
}

/* Fires expired timers; a callback may re-arm or free any, so rescan. */
static void timers_run(void)
{
	int64_t now = now_ns() / 1000000;
	struct wire_timer *t;

again:
	for (t = timers; t; t = t->next) {
		if (t->expire < 0 || t->expire > now)
			continue;
		t->expire = -1;
		if (t->cb)
			t->cb(t->cb_opaque);
#if SLIRP_CONFIG_VERSION_MAX >= 4
		else
			slirp_handle_timer(slirp, t->id, t->cb_opaque);
#endif
		goto again;
	}
}

/* Milliseconds until the next timer is due, or -1 for none. */
static int64_t timers_next(void)
{
	int64_t now = now_ns() / 1000000, best = -1, d;
	struct wire_timer *t;

	for (t = timers; t; t = t->next) {
		if (t->expire < 0)
			continue;
		d = t->expire > now ? t->expire - now : 0;
		if (best < 0 || d < best)
			best = d;
	}
	return best;
}

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
	(void)opaque;
	client_send(buf, len);
	return len;		/* dropped or not: slirp must never wait for us */
}

static void cb_guest_error(const char *msg, void *opaque)
{
	(void)opaque;
	fprintf(stderr, "slirp-wire: guest error: %s\n", msg);
}

static int64_t cb_clock_get_ns(void *opaque) { (void)opaque; return now_ns(); }
/* Every poll set is built afresh from slirp_pollfds_fill: nothing to track. */
static void cb_poll_fd(int fd, void *opaque) { (void)fd, (void)opaque; }
static void cb_notify(void *opaque) { (void)opaque; }

/* The poll set: the listening socket, the client, then slirp's sockets. */
static struct pollfd *pfds;
static size_t npfds, cap_pfds;

static int pfd_add(int fd, short events)
{
	if (npfds == cap_pfds) {
		cap_pfds = cap_pfds ? 2 * cap_pfds : 64;
		pfds = realloc(pfds, cap_pfds * sizeof(*pfds));
		if (!pfds)
			die("out of memory");
	}
	pfds[npfds] = (struct pollfd){ .fd = fd, .events = events };
	return npfds++;
}

static int cb_add_poll(int fd, int ev, void *opaque)
{
	(void)opaque;
	return pfd_add(fd, (ev & SLIRP_POLL_IN ? POLLIN : 0) | (ev & SLIRP_POLL_OUT ? POLLOUT : 0) |
			   (ev & SLIRP_POLL_PRI ? POLLPRI : 0));
}

static int cb_get_revents(int idx, void *opaque)
{
	short r = pfds[idx].revents;

	(void)opaque;
	return (r & POLLIN ? SLIRP_POLL_IN : 0) | (r & POLLOUT ? SLIRP_POLL_OUT : 0) |
	       (r & POLLPRI ? SLIRP_POLL_PRI : 0) | (r & POLLERR ? SLIRP_POLL_ERR : 0) |
	       (r & POLLHUP ? SLIRP_POLL_HUP : 0);
}

static const SlirpCb callbacks = {
	.send_packet = cb_send_packet,
	.guest_error = cb_guest_error,
	.clock_get_ns = cb_clock_get_ns,
	.timer_new = cb_timer_new,
	.timer_free = cb_timer_free,
	.timer_mod = cb_timer_mod,
	.register_poll_fd = cb_poll_fd,
	.unregister_poll_fd = cb_poll_fd,
	.notify = cb_notify,
#if SLIRP_CONFIG_VERSION_MAX >= 4
	.timer_new_opaque = cb_timer_new_opaque,
#endif
};

static void parse_ports(const char *s)
{
	char *end;
	long p;

	if (strcmp(s, "all") == 0)
		return;
	allow_all = false;
	for (;; s = end + 1) {
		p = strtol(s, &end, 10);
		if (end == s || p < 1 || p > 65535 || (*end != ',' && *end != '\0'))
			die("--allow-ports wants \"all\" or a list such as 22,80,443");
		allowed[p / 8] |= 1 << p % 8;
		if (*end == '\0')
			return;
	}
}

static int listen_on(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		die("socket path too long");
	strcpy(sa.sun_path, path);
	/* A stale socket from a killed run is ours to replace; nothing else is. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			die("socket path exists and is not a socket");
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
		fprintf(stderr, "slirp-wire: cannot listen on %s: %s\n", path, strerror(errno));
		exit(1);
	}
	return fd;
}

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		got_usr1 = 1;
	else
		got_stop = 1;
}

int main(int argc, char **argv)
{
	SlirpConfig cfg = {
		.version = SLIRP_CONFIG_VERSION_MAX < 4 ? SLIRP_CONFIG_VERSION_MAX : 4,
		.in_enabled = true,
		.in6_enabled = false,
		.if_mtu = 1500,
		.if_mru = 1500,
		.disable_host_loopback = false,	/* 10.0.2.2 is host 127.0.0.1 */
		.restricted = 0,
	};
	struct sigaction sa = { .sa_handler = on_signal };
	const int sigs[] = { SIGTERM, SIGINT, SIGUSR1 };
	const char *path = NULL;
	sigset_t block, in_poll;
	pid_t parent;
	int lfd, i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (strcmp(argv[i], "--allow-ports") == 0 && i + 1 < argc)
			parse_ports(argv[++i]);
		else
			die(USAGE);
	}
	if (!path)
		die(USAGE);

	/* Signals are let in only during ppoll(), so none slips past a check. */
	sigemptyset(&block);
	for (i = 0; i < 3; i++) {
		sigaddset(&block, sigs[i]);
		sigaction(sigs[i], &sa, NULL);
	}
	sigprocmask(SIG_BLOCK, &block, &in_poll);
	for (i = 0; i < 3; i++)
		sigdelset(&in_poll, sigs[i]);
	signal(SIGPIPE, SIG_IGN);

	/* The wire goes when the hypervisor that started it goes, however it
	 * ends (killed, crashed): SIGTERM then arrives as from `stop`. A parent
	 * that died before this call is seen as a changed parent. */
	parent = getppid();
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0)
		die("prctl(PR_SET_PDEATHSIG) failed");
	if (getppid() != parent)
		die("the process that started the wire is gone");

	inet_pton(AF_INET, "10.0.2.0", &cfg.vnetwork);
	inet_pton(AF_INET, "255.255.255.0", &cfg.vnetmask);
	inet_pton(AF_INET, "10.0.2.2", &cfg.vhost);
	inet_pton(AF_INET, "10.0.2.15", &cfg.vdhcp_start);
	inet_pton(AF_INET, "10.0.2.3", &cfg.vnameserver);
	host_addr = cfg.vhost;

	lfd = listen_on(path);
	slirp = slirp_new(&cfg, &callbacks, NULL);
	if (!slirp) {
		unlink(path);
		die("slirp_new failed");
	}
	printf("ready\n");
	fflush(stdout);

	while (!got_stop) {
		uint32_t timeout = UINT32_MAX;	/* ms; slirp lowers it */
		struct timespec ts, *tsp = NULL;
		int64_t next;
		int n;

		if (got_usr1) {
			got_usr1 = 0;
			print_counters();
		}
		npfds = 0;
		pfd_add(lfd, POLLIN);
		pfd_add(cl.fd, POLLIN | (cl.out_len ? POLLOUT : 0));	/* fd -1: ignored */
		slirp_pollfds_fill(slirp, &timeout, cb_add_poll, NULL);
		next = timers_next();
		if (next >= 0 && next < timeout)
			timeout = next;
		if (timeout != UINT32_MAX) {
			ts = (struct timespec){ timeout / 1000, timeout % 1000 * 1000000L };
			tsp = &ts;
		}
		n = ppoll(pfds, npfds, tsp, &in_poll);
		slirp_pollfds_poll(slirp, n < 0, cb_get_revents, NULL);
		timers_run();
		if (n < 0)
			continue;
		if (cl.fd >= 0 && (pfds[1].revents & POLLOUT))
			client_flush();
		if (cl.fd >= 0 && !cl.dead && (pfds[1].revents & (POLLIN | POLLHUP | POLLERR)))
			client_read();
		if (cl.dead)
			client_close("write failed");
		if (pfds[0].revents & POLLIN)
			client_accept(lfd);
	}

	print_counters();
	client_close("shutting down");
	slirp_cleanup(slirp);
	close(lfd);
	unlink(path);
	return 0;
}
