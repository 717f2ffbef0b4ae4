/*
 * badvirtio: plays a broken virtio-blk driver in the application VM, for
 * the tests. With the stock virtio_blk driver unbound from the device, it
 * sets the device up itself (virtio 1.x over the PCI I/O capabilities),
 * posts one request at a time on queue 0 and prints what came back:
 *
 *   case NAME used N len L status S data D   (S: the status byte, 255 if
 *       the device left it alone; D: whether the data buffer was written)
 *   case NAME no-reply                   (nothing in 2 s)
 *
 * Cases: a good read, then a sector past the end, a length that is not a
 * multiple of 512, an unknown request type, a data buffer outside the
 * guest's RAM, and a descriptor chain that loops. The device is reset
 * before exit, so the stock driver can be bound again.
 *
 * It asks for no interrupts (avail flags) and polls the used ring: with no
 * driver bound, an interrupt would have no handler.
 *
 * usage: badvirtio PCI-ADDRESS      (e.g. 0000:00:0d.0)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define QSIZE 8
#define PAGES 8
#define F_NEXT 1
#define F_WRITE 2
/* virtio_pci_common_cfg offsets */
#define C_DFSELECT 0
#define C_DF 4
#define C_GFSELECT 8
#define C_GF 12
#define C_STATUS 20
#define C_QSELECT 22
#define C_QSIZE 24
#define C_QENABLE 28
#define C_QNOTIFYOFF 30
#define C_QDESC 32
#define C_QDRIVER 40
#define C_QDEVICE 48
#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};
struct avail {
	uint16_t flags, idx, ring[QSIZE], used_event;
};
struct used {
	uint16_t flags, idx;
	struct {
		uint32_t id, len;
	} ring[QSIZE];
};
struct req_header {
	uint32_t type, reserved;
	uint64_t sector;
};

static unsigned common, notify, device; /* I/O ports of the capabilities */
static unsigned notify_mult;              /* notify_off_multiplier */
static unsigned char *mem;                /* PAGES locked pages */
static uint64_t phys[PAGES];
static struct desc *desc;
static volatile struct avail *avail;
static volatile struct used *used;

static void die(const char *what)
{
	fprintf(stderr, "badvirtio: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t pa(void *p)
{
	size_t off = (unsigned char *)p - mem;
	return phys[off / 4096] + off % 4096;
}

/* The I/O port of each virtio capability, from config space and the BARs. */
static void find_ports(const char *addr)
{
	char path[128];
	unsigned char cfg[256];
	unsigned long long bar[6] = { 0 }, end, flags;
	snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/config", addr);
	int fd = open(path, O_RDONLY);
	if (fd < 0 || read(fd, cfg, sizeof cfg) != sizeof cfg)
		die(path);
	close(fd);
	snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/resource", addr);
	FILE *f = fopen(path, "r");
	if (!f)
		die(path);
	for (int i = 0; i < 6 && fscanf(f, "%llx %llx %llx", &bar[i], &end, &flags) == 3; i++)
		if (!(flags & 0x100)) /* not an I/O BAR */
			bar[i] = 0;
	fclose(f);
	for (unsigned p = cfg[0x34]; p && p < 0xf0; p = cfg[p + 1]) {
		if (cfg[p] != 0x09) /* vendor-specific: a virtio capability */
			continue;
		unsigned type = cfg[p + 3], b = cfg[p + 4], off;
		memcpy(&off, cfg + p + 8, 4);
		if (b > 5 || !bar[b])
			continue;
		unsigned port = (unsigned)bar[b] + off;
		if (type == 1)
			common = port;
		else if (type == 2)
			notify = port, memcpy(&notify_mult, cfg + p + 16, 4);
		else if (type == 4)
			device = port;
	}
	if (!common || !notify || !device) {
		fprintf(stderr, "badvirtio: %s has no common/notify/device capability in I/O space\n", addr);
		exit(1);
	}
}

static void setup(void)
{
	mem = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED | MAP_POPULATE, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	memset(mem, 0, PAGES * 4096);
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		die("/proc/self/pagemap");
	for (int i = 0; i < PAGES; i++) {
		uint64_t e;
		if (pread(fd, &e, 8, (off_t)((uintptr_t)(mem + i * 4096) / 4096) * 8) != 8 || !(e >> 63))
			die("pagemap");
		phys[i] = (e & ((1ull << 55) - 1)) * 4096;
	}
	close(fd);
	desc = (struct desc *)mem;
	avail = (struct avail *)(mem + 256);
	used = (struct used *)(mem + 512);
	avail->flags = 1; /* VIRTQ_AVAIL_F_NO_INTERRUPT */

	outb(0, common + C_STATUS); /* reset */
	outb(S_ACK | S_DRIVER, common + C_STATUS);
	outl(1, common + C_DFSELECT);
	if (!(inl(common + C_DF) & 1)) {
		fprintf(stderr, "badvirtio: device does not offer VIRTIO_F_VERSION_1\n");
		exit(1);
	}
	outl(0, common + C_GFSELECT);
	outl(0, common + C_GF);
	outl(1, common + C_GFSELECT);
	outl(1, common + C_GF); /* VERSION_1 only */
	outb(S_ACK | S_DRIVER | S_FEATURES_OK, common + C_STATUS);
	if (!(inb(common + C_STATUS) & S_FEATURES_OK)) {
		fprintf(stderr, "badvirtio: device refused our features\n");
		exit(1);
	}
	outw(0, common + C_QSELECT);
	outw(QSIZE, common + C_QSIZE);
	outl((uint32_t)pa(desc), common + C_QDESC);
	outl(0, common + C_QDESC + 4);
	outl((uint32_t)pa((void *)avail), common + C_QDRIVER);
	outl(0, common + C_QDRIVER + 4);
	outl((uint32_t)pa((void *)used), common + C_QDEVICE);
	outl(0, common + C_QDEVICE + 4);
	notify += inw(common + C_QNOTIFYOFF) * notify_mult;
	outw(1, common + C_QENABLE);
	outb(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK, common + C_STATUS);
}

/* The page requests read into: filled with a pattern before each one, to see whether the device wrote it. */
#define DATA_PAGE 2
static int data_intact(void)
{
	for (int i = 0; i < 4096; i++)
		if (mem[DATA_PAGE * 4096 + i] != 0xa5)
			return 0;
	return 1;
}

/* Posts the chain starting at descriptor `head`, waits for its reply, prints it. */
static void post(const char *name, unsigned head, volatile unsigned char *status)
{
	uint16_t before = used->idx;
	avail->ring[avail->idx % QSIZE] = (uint16_t)head;
	__sync_synchronize();
	avail->idx++;
	__sync_synchronize();
	outw(0, notify);
	for (int i = 0; i < 2000 && used->idx == before; i++)
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
	if (used->idx == before) {
		printf("case %s no-reply\n", name);
		return;
	}
	unsigned slot = before % QSIZE;
	printf("case %s used %u len %u status %u data %s\n", name, used->ring[slot].id, used->ring[slot].len, *status,
	       data_intact() ? "untouched" : "written");
}

/* A request: header (descriptor 0), data (1, `len` bytes at `data`), status (2). */
static void request(const char *name, uint32_t type, uint64_t sector, uint64_t data, uint32_t len)
{
	struct req_header *h = (struct req_header *)(mem + 4096);
	volatile unsigned char *status = mem + 4096 + 64;
	*h = (struct req_header){ .type = type, .sector = sector };
	*status = 0xff;
	memset(mem + DATA_PAGE * 4096, 0xa5, 4096);
	desc[0] = (struct desc){ pa(h), sizeof *h, F_NEXT, 1 };
	desc[1] = (struct desc){ data, len, F_NEXT | F_WRITE, 2 };
	desc[2] = (struct desc){ pa((void *)status), 1, F_WRITE, 0 };
	post(name, 0, status);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: badvirtio PCI-ADDRESS\n");
		return 1;
	}
	find_ports(argv[1]);
	if (iopl(3) != 0)
		die("iopl");
	setup();
	uint64_t capacity = inl(device) | (uint64_t)inl(device + 4) << 32;
	uint64_t buf = pa(mem + DATA_PAGE * 4096);

	request("good-read", 0, 0, buf, 512);
	request("past-the-end", 0, capacity, buf, 512);
	request("unaligned-length", 0, 0, buf, 100);
	request("unknown-type", 99, 0, buf, 512);
	request("outside-ram", 0, 0, 0xf0000000u, 512);

	/* A loop: descriptor 3 and 4 point at each other. */
	volatile unsigned char *status = mem + 4096 + 64;
	*status = 0xff;
	memset(mem + DATA_PAGE * 4096, 0xa5, 4096);
	desc[3] = (struct desc){ pa(mem + 4096), 16, F_NEXT, 4 };
	desc[4] = (struct desc){ buf, 512, F_NEXT | F_WRITE, 3 };
	post("looping-chain", 3, status);

	outb(0, common + C_STATUS); /* reset: the stock driver can bind again */
	return 0;
}
