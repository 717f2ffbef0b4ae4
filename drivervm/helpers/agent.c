/*
 * agent: the control helper of a VM without a device of its own to serve
 * (for now the application VM and the disk and net VMs). It answers
 * heartbeats, sets the clock after a snapshot restore, and runs commands
 * for `bulkhead run`.
 *
 * usage: agent ROLE [TTY]
 */
#include "channel.h"

static int handle(char *verb, char *args)
{
	(void)verb;
	(void)args;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: agent ROLE [TTY]\n");
		return 1;
	}
	ch_open(argc > 2 ? argv[2] : "/dev/ttyS1");
	ch_send("hello %s", argv[1]);
	ch_loop(handle);
	return 0;
}
