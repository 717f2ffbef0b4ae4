/*
 * pciback: the PCI VM's helper. The PCI VM runs the Linux PCI bus driver
 * over the machine's PCI functions; pciback reports what that driver
 * enumerated, read from sysfs, so the hypervisor's device manager knows the
 * machine's inventory. (Config-cycle forwarding for the disk and net VMs
 * comes later, on the same channel.)
 *
 *   host:  BH1 inventory
 *   guest: BH1 pci BDF VENDOR:DEVICE CLASS IRQ BAR0,BAR1,...,BAR5   (one per function)
 *          BH1 inventory-end COUNT   |   BH1 error inventory ERRNO
 *
 * usage: pciback [TTY]
 */
#include <dirent.h>
#include "../helpers/channel.h"

#define SYSFS_PCI "/sys/bus/pci/devices"

/* Reads the first line of DIR/NAME into out; returns 0 on success. */
static int read_attr(const char *dir, const char *name, char *out, size_t cap)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s/%s", SYSFS_PCI, dir, name);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	if (!fgets(out, (int)cap, f)) {
		fclose(f);
		return -1;
	}
	fclose(f);
	out[strcspn(out, "\n")] = 0;
	return 0;
}

/* BARs from the `resource` file: "start end flags" per line; six BARs first. */
static void read_bars(const char *dir, char *out, size_t cap)
{
	char path[512], line[128];
	size_t used = 0;
	snprintf(path, sizeof path, "%s/%s/resource", SYSFS_PCI, dir);
	FILE *f = fopen(path, "r");
	out[0] = 0;
	if (!f) {
		snprintf(out, cap, "-");
		return;
	}
	for (int bar = 0; bar < 6 && fgets(line, sizeof line, f); bar++) {
		unsigned long long start = 0, end = 0, flags = 0;
		if (sscanf(line, "%llx %llx %llx", &start, &end, &flags) != 3)
			break;
		const char *kind = (flags & 0x100) ? "io" : (flags & 0x200) ? "mem" : "none";
		int n = snprintf(out + used, cap - used, "%s%s:0x%llx+0x%llx", bar ? "," : "", kind,
				 start, (start || end) ? end - start + 1 : 0);
		if (n < 0 || (size_t)n >= cap - used)
			break;
		used += (size_t)n;
	}
	fclose(f);
}

static void inventory(void)
{
	DIR *d = opendir(SYSFS_PCI);
	struct dirent *e;
	int count = 0;
	if (!d) {
		ch_send("error inventory %d", errno);
		return;
	}
	while ((e = readdir(d))) {
		char vendor[32], device[32], class[32], irq[32], bars[400];
		if (e->d_name[0] == '.')
			continue;
		if (read_attr(e->d_name, "vendor", vendor, sizeof vendor) ||
		    read_attr(e->d_name, "device", device, sizeof device) ||
		    read_attr(e->d_name, "class", class, sizeof class))
			continue;
		if (read_attr(e->d_name, "irq", irq, sizeof irq))
			snprintf(irq, sizeof irq, "0");
		read_bars(e->d_name, bars, sizeof bars);
		ch_send("pci %s %s:%s %s %s %s", e->d_name, vendor + (vendor[1] == 'x' ? 2 : 0),
			device + (device[1] == 'x' ? 2 : 0), class, irq, bars);
		count++;
	}
	closedir(d);
	ch_send("inventory-end %d", count);
}

static int handle(char *verb, char *args)
{
	(void)args;
	if (strcmp(verb, "inventory") == 0) {
		inventory();
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	ch_open(argc > 1 ? argv[1] : "/dev/ttyS1");
	ch_send("hello pci");
	ch_loop(handle);
	return 0;
}
