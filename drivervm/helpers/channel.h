/*
 * channel.h: the control channel between a guest helper and the hypervisor.
 *
 * The channel is the guest's second serial port (/dev/ttyS1) in raw mode,
 * so it never mixes with the console. Messages are text lines:
 *   host -> guest:  "BH1 <verb> [args...]\n"
 *   guest -> host:  "BH1 <kind> [args...]\n"
 * Binary payloads travel as base64. The host treats everything on this line
 * as hostile input and validates it; the guest does the same with commands.
 *
 * Shared verbs (every helper answers them):
 *   ping SEQ            -> pong SEQ                    (heartbeat)
 *   clock SEC USEC      -> clock-ok | error clock ERRNO
 *   resume SEC USEC     -> clock-ok   (after a snapshot restore: clock, and block caches dropped)
 *   exec ID B64CMD      -> out ID B64 ... ; exit ID STATUS   (run `sh -c`)
 *   hang                -> nothing ever again (fault injection: SIGSTOP to itself)
 *   sysrq c|b           -> the kernel panics | the machine reboots (fault injection)
 *
 * Doorbell: a single byte CH_KICK (0x07, BEL) may travel in either direction
 * between lines; text lines never contain it. It says "look at the shared
 * memory" without the cost of a text line. A helper that shares memory sets
 * ch_on_kick before ch_loop and rings the host with ch_kick.
 */
#ifndef BULKHEAD_CHANNEL_H
#define BULKHEAD_CHANNEL_H

#include <dirent.h>
#include <errno.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define CH_LINE_MAX 8192
#define CH_MAX_EXEC 8
#define CH_OUT_CHUNK 384
#define CH_KICK 0x07

static int ch_fd = -1;

/* Called once per read that carried at least one kick, after its lines. */
static void (*ch_on_kick)(void);

/* Write all of buf, retrying on EINTR and short writes. */
static void ch_write_all(const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(ch_fd, buf, len);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			perror("channel write");
			exit(2);
		}
		buf += n;
		len -= (size_t)n;
	}
}

static void ch_send(const char *fmt, ...)
{
	char line[CH_LINE_MAX];
	int n = snprintf(line, sizeof line, "BH1 ");
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	ch_write_all(line, (size_t)n);
}

/*
 * Ring the host's doorbell. A whole byte written between ch_send's
 * single-write lines, so it never lands inside a line: never call it from
 * ch_send. Unused by helpers without shared memory, hence the attribute.
 */
__attribute__((unused)) static void ch_kick(void)
{
	static const char kick = CH_KICK;
	ch_write_all(&kick, 1);
}

/*
 * The host's fast doorbell: it flips the UART's ring-indicator line, and
 * the 8250 driver wakes TIOCMIWAIT straight from its interrupt handler (a
 * byte on the line would go through the tty workqueue first). Run this as a
 * thread; it calls ch_on_kick for every edge. An edge that falls between
 * two waits is missed: the host rings again when its work sits untaken,
 * and a 0x07 byte on the line still works too.
 */
__attribute__((unused)) static void *ch_watch_ring_indicator(void *unused)
{
	(void)unused;
	for (;;) {
		if (ioctl(ch_fd, TIOCMIWAIT, TIOCM_RNG) != 0) {
			if (errno == EINTR)
				continue;
			ch_send("error tiocmiwait %d", errno);
			return NULL;
		}
		if (ch_on_kick)
			ch_on_kick();
	}
	return NULL;
}

/* Drops kick bytes from buf in place; returns how many were dropped. */
static size_t ch_strip_kicks(char *buf, size_t *len)
{
	size_t kept = 0;
	for (size_t i = 0; i < *len; i++)
		if (buf[i] != CH_KICK)
			buf[kept++] = buf[i];
	size_t kicks = *len - kept;
	*len = kept;
	return kicks;
}

static const char b64chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const unsigned char *in, size_t len, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i += 3) {
		unsigned v = (unsigned)in[i] << 16;
		if (i + 1 < len) v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < len) v |= in[i + 2];
		out[o++] = b64chars[(v >> 18) & 63];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64chars[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? b64chars[v & 63] : '=';
	}
	out[o] = 0;
	return o;
}

/* Returns the decoded length, or -1 on a character outside the alphabet. */
static int b64_decode(const char *in, unsigned char *out, size_t cap)
{
	size_t o = 0;
	unsigned v = 0;
	int bits = 0;
	for (; *in && *in != '='; in++) {
		const char *p = strchr(b64chars, *in);
		if (!p)
			return -1;
		v = (v << 6) | (unsigned)(p - b64chars);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= cap)
				return -1;
			out[o++] = (unsigned char)(v >> bits);
		}
	}
	return (int)o;
}

/* Open the channel tty in raw mode. */
static void ch_open(const char *path)
{
	struct termios t;
	ch_fd = open(path, O_RDWR | O_NOCTTY);
	if (ch_fd < 0) {
		perror(path);
		exit(1);
	}
	if (tcgetattr(ch_fd, &t) == 0) {
		cfmakeraw(&t);
		t.c_cc[VMIN] = 1;
		t.c_cc[VTIME] = 0;
		if (tcsetattr(ch_fd, TCSANOW, &t) != 0)
			perror("tcsetattr");
	}
}

/* ---- exec: commands run with `sh -c`, output streamed back as base64 ---- */

struct ch_exec {
	long id;
	pid_t pid;
	int out;  /* read end of the child's stdout+stderr, -1 once drained */
};

static struct ch_exec ch_execs[CH_MAX_EXEC];

static void ch_exec_init(void)
{
	for (int i = 0; i < CH_MAX_EXEC; i++)
		ch_execs[i].pid = 0;
	signal(SIGPIPE, SIG_IGN);
}

static void ch_exec_start(long id, const char *b64cmd)
{
	static unsigned char cmd[CH_LINE_MAX];
	int len = b64_decode(b64cmd, cmd, sizeof cmd - 1);
	int slot = -1, pipefd[2];

	if (len < 0) {
		ch_send("exit %ld bad-command", id);
		return;
	}
	cmd[len] = 0;
	for (int i = 0; i < CH_MAX_EXEC; i++)
		if (ch_execs[i].pid == 0) { slot = i; break; }
	if (slot < 0) {
		ch_send("exit %ld busy", id);
		return;
	}
	if (pipe(pipefd) != 0) {
		ch_send("exit %ld error pipe %d", id, errno);
		return;
	}
	pid_t pid = fork();
	if (pid < 0) {
		ch_send("exit %ld error fork %d", id, errno);
		close(pipefd[0]);
		close(pipefd[1]);
		return;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		close(pipefd[0]);
		close(pipefd[1]);
		close(ch_fd);
		signal(SIGPIPE, SIG_DFL);
		execl("/bin/sh", "sh", "-c", (char *)cmd, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	ch_execs[slot].id = id;
	ch_execs[slot].pid = pid;
	ch_execs[slot].out = pipefd[0];
}

/* Forward output of a running command; when it is drained, reap and report. */
static void ch_exec_pump(int slot)
{
	struct ch_exec *e = &ch_execs[slot];
	unsigned char buf[CH_OUT_CHUNK];
	char enc[CH_OUT_CHUNK * 2];
	ssize_t n = read(e->out, buf, sizeof buf);
	if (n > 0) {
		b64_encode(buf, (size_t)n, enc);
		ch_send("out %ld %s", e->id, enc);
		return;
	}
	if (n < 0 && errno == EINTR)
		return;
	close(e->out);
	e->out = -1;
	int status = 0;
	while (waitpid(e->pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status))
		ch_send("exit %ld %d", e->id, WEXITSTATUS(status));
	else
		ch_send("exit %ld %d", e->id, 128 + WTERMSIG(status));
	e->pid = 0;
}

/* Drops the page cache of every block device (BLKFLSBUF on /dev/NAME for
 * each NAME in /sys/block). Errors are not fatal: a device may be busy. */
static void ch_drop_block_caches(void)
{
	DIR *d = opendir("/sys/block");
	struct dirent *e;
	if (!d)
		return;
	while ((e = readdir(d))) {
		char path[300];
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/dev/%s", e->d_name);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		if (ioctl(fd, BLKFLSBUF, 0) != 0 && errno != ENOTTY && errno != EINVAL)
			ch_send("error resume flush %s %d", e->d_name, errno);
		close(fd);
	}
	closedir(d);
}

/* ---- the common dispatch ---- */

/* Handles the shared verbs; returns 0 when the verb is not a shared one. */
static int ch_handle_common(char *verb, char *args)
{
	if (strcmp(verb, "ping") == 0) {
		ch_send("pong %s", args ? args : "");
		return 1;
	}
	/* Fault injection: the helper stops dead, every thread, as a hung
	 * driver would; only the host's heartbeat notices. */
	if (strcmp(verb, "hang") == 0) {
		raise(SIGSTOP);
		return 1;
	}
	/* Fault injection: a magic SysRq key, written by the helper itself so
	 * the fault comes at once (c: panic, b: reboot, a CPU reset). */
	if (strcmp(verb, "sysrq") == 0) {
		int fd = open("/proc/sysrq-trigger", O_WRONLY);
		if (!args || (strcmp(args, "c") != 0 && strcmp(args, "b") != 0) || fd < 0 || write(fd, args, 1) != 1)
			ch_send("error sysrq %d", fd < 0 ? errno : EINVAL);
		if (fd >= 0)
			close(fd);
		return 1;
	}
	if (strcmp(verb, "clock") == 0) {
		struct timeval tv = { 0, 0 };
		long sec = 0, usec = 0;
		if (!args || sscanf(args, "%ld %ld", &sec, &usec) != 2 || usec < 0 || usec >= 1000000) {
			ch_send("error clock bad-arguments");
			return 1;
		}
		tv.tv_sec = sec;
		tv.tv_usec = usec;
		if (settimeofday(&tv, NULL) != 0)
			ch_send("error clock %d", errno);
		else
			ch_send("clock-ok");
		return 1;
	}
	if (strcmp(verb, "resume") == 0) {
		/* After a snapshot restore: set the clock, and drop every block
		 * device's cached pages, which may be older than the disk. */
		long sec = 0, usec = 0;
		if (!args || sscanf(args, "%ld %ld", &sec, &usec) != 2 || usec < 0 || usec >= 1000000) {
			ch_send("error resume bad-arguments");
			return 1;
		}
		struct timeval tv = { sec, usec };
		if (settimeofday(&tv, NULL) != 0) {
			ch_send("error resume clock %d", errno);
			return 1;
		}
		ch_drop_block_caches();
		ch_send("clock-ok");
		return 1;
	}
	if (strcmp(verb, "exec") == 0) {
		char *id = args ? strtok(args, " ") : NULL;
		char *cmd = id ? strtok(NULL, " ") : NULL;
		if (!id || !cmd) {
			ch_send("error exec bad-arguments");
			return 1;
		}
		ch_exec_start(strtol(id, NULL, 10), cmd);
		return 1;
	}
	return 0;
}

/*
 * The main loop of every helper: read lines from the channel, hand each to
 * `handle` (the helper's own verbs first, then the shared ones), and pump
 * the output of running commands in between.
 */
static void ch_loop(int (*handle)(char *verb, char *args))
{
	static char line[CH_LINE_MAX];
	size_t used = 0;

	ch_exec_init();
	for (;;) {
		struct pollfd fds[1 + CH_MAX_EXEC];
		int map[1 + CH_MAX_EXEC];
		int nfds = 1;
		fds[0].fd = ch_fd;
		fds[0].events = POLLIN;
		for (int i = 0; i < CH_MAX_EXEC; i++) {
			if (ch_execs[i].pid && ch_execs[i].out >= 0) {
				fds[nfds].fd = ch_execs[i].out;
				fds[nfds].events = POLLIN;
				map[nfds++] = i;
			}
		}
		if (poll(fds, (nfds_t)nfds, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("poll");
			exit(2);
		}
		for (int i = 1; i < nfds; i++)
			if (fds[i].revents)
				ch_exec_pump(map[i]);
		if (!(fds[0].revents & POLLIN))
			continue;
		ssize_t n = read(ch_fd, line + used, sizeof line - 1 - used);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			perror("channel read");
			exit(2);
		}
		size_t got = (size_t)n;
		/* Kicks are out of band: strip them before they can split a line. */
		size_t kicks = ch_strip_kicks(line + used, &got);
		used += got;
		char *start = line, *nl;
		while ((nl = memchr(start, '\n', used - (size_t)(start - line)))) {
			*nl = 0;
			if (nl > start && nl[-1] == '\r')
				nl[-1] = 0;
			char *tag = strtok(start, " ");
			char *verb = tag ? strtok(NULL, " ") : NULL;
			char *args = verb ? strtok(NULL, "") : NULL;
			if (tag && verb && strcmp(tag, "BH1") == 0) {
				if (!handle(verb, args) && !ch_handle_common(verb, args))
					ch_send("error unknown-verb %.64s", verb);
			}
			start = nl + 1;
		}
		used -= (size_t)(start - line);
		memmove(line, start, used);
		if (used == sizeof line - 1) {
			ch_send("error line-too-long");
			used = 0;
		}
		/* After the lines, so a command and its doorbell keep their order. */
		if (kicks && ch_on_kick)
			ch_on_kick();
	}
}

#endif
