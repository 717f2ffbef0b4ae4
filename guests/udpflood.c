/*
 * udpflood: a flood from the app VM, for the network path's tests. It sends
 * COUNT UDP datagrams of SIZE bytes to IP:PORT as fast as the guest's stack
 * takes them (a full socket buffer is waited for, briefly), then prints
 *   sent=N refused=N
 * where refused counts sends the guest's own stack turned away (ENOBUFS, an
 * ICMP error from an earlier datagram, or a buffer still full after 100 ms).
 * Nothing is expected back: the port may be closed.
 *
 *   udpflood IP PORT SIZE COUNT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: udpflood IP PORT SIZE COUNT\n");
		return 1;
	}
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2])) };
	long size = atol(argv[3]), count = atol(argv[4]);
	if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1 || size < 1 || size > 1472 || count < 1) {
		fprintf(stderr, "udpflood: bad arguments\n");
		return 1;
	}
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		perror("udpflood: socket");
		return 1;
	}
	static char payload[1472];
	memset(payload, 'x', sizeof payload);
	long sent = 0, refused = 0;
	for (long i = 0; i < count; i++) {
		int waited = 0;
	again:
		if (sendto(fd, payload, (size_t)size, 0, (struct sockaddr *)&to, sizeof to) >= 0) {
			sent++;
		} else if (errno == EAGAIN && !waited) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			poll(&p, 1, 100);
			waited = 1;
			goto again;
		} else if (errno == ENOBUFS || errno == EAGAIN || errno == ECONNREFUSED) {
			refused++;
		} else {
			perror("udpflood: sendto");
			return 1;
		}
	}
	printf("sent=%ld refused=%ld\n", sent, refused);
	return 0;
}
