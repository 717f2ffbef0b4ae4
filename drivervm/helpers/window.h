/*
 * window.h: a helper's shared window. The window is a pinned, locked
 * anonymous mapping in the helper's own memory; the helper reports its page
 * frames once over the channel and the host then reads and writes those
 * frames directly (the host side is drivervm/window.ts):
 *
 *   guest: BH1 window-pfns FIRST_PAGE PFNHEX+COUNT,...   (one or more)
 *          BH1 window-end TOTAL_PAGES DEVICE_BYTES
 *          BH1 error <what> ERRNO                         (then exit 1)
 *
 * The helper maps the window once at startup (win_map), fills in its
 * header, and reports it (win_report) then and whenever the host asks
 * again with the `window` verb.
 */
#ifndef BULKHEAD_WINDOW_H
#define BULKHEAD_WINDOW_H

#include <stdint.h>
#include <sys/mman.h>
#include "channel.h"

#define WIN_PAGE 4096u
#define WIN_RUNS_LINE_MAX 2900 /* keeps each window-pfns line under ~3000 chars */

/* Startup errors are fatal: the host sees the line, then the helper exit. */
__attribute__((noreturn)) static void fail(const char *what, int err)
{
	ch_send("error %s %d", what, err);
	exit(1);
}

#define WIN_PFN(entry) ((entry) & ((1ull << 55) - 1))

/* The pagemap entries of `pages` pages from w (calloc'd: the caller frees). */
static uint64_t *win_pagemap(const unsigned char *w, unsigned pages)
{
	uint64_t *entries = calloc(pages, sizeof *entries);

	if (!entries)
		fail("pagemap-read", ENOMEM);
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		fail("pagemap-open", errno);
	off_t at = (off_t)((uintptr_t)w / WIN_PAGE) * 8;
	ssize_t n = pread(fd, entries, pages * sizeof *entries, at);
	if (n < 0)
		fail("pagemap-read", errno);
	if ((size_t)n != pages * sizeof *entries)
		fail("pagemap-read", EIO);
	close(fd);
	return entries;
}

static const uint64_t *win_sort_keys;

static int win_by_frame(const void *a, const void *b)
{
	uint64_t x = WIN_PFN(win_sort_keys[*(const unsigned *)a]);
	uint64_t y = WIN_PFN(win_sort_keys[*(const unsigned *)b]);
	return x < y ? -1 : x > y;
}

/*
 * Lays the window's pages out in the order of their frames. Linux hands a
 * fresh mapping its frames mostly in descending order, so each 4 KiB page
 * of a buffer is a frame apart from the next: a 64 KiB request in the window
 * is 16 DMA segments for the guest's driver and 16 copies for the host.
 * mremap moves a page without changing its frame, so moving each page to
 * its place in ascending frame order makes the window one or a few runs.
 * The frame that lands at page 1 (where data starts) is the first one on
 * a 64 KiB boundary, the most an ATA DMA segment may span. Returns the
 * window's new address; the old range is left unmapped.
 */
static unsigned char *win_sort_frames(unsigned char *w, size_t bytes)
{
	unsigned pages = (unsigned)(bytes / WIN_PAGE);
	uint64_t *entries = win_pagemap(w, pages);
	unsigned *order = calloc(pages, sizeof *order);

	if (!order)
		fail("window-sort", ENOMEM);
	for (unsigned i = 0; i < pages; i++) {
		/* Without CAP_SYS_ADMIN pagemap shows no frames: nothing to sort by. */
		if (WIN_PFN(entries[i]) == 0) {
			free(order);
			free(entries);
			return w;
		}
		order[i] = i;
	}
	win_sort_keys = entries;
	qsort(order, pages, sizeof *order, win_by_frame);
	unsigned first = 0;
	while (first < pages && WIN_PFN(entries[order[first]]) % 16)
		first++;
	if (first == pages)
		first = 0;
	void *to = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (to == MAP_FAILED)
		fail("window-sort", errno);
	for (unsigned v = 0; v < pages; v++) {
		unsigned from = order[(first + pages - 1 + v) % pages];
		if (mremap(w + (size_t)from * WIN_PAGE, WIN_PAGE, WIN_PAGE, MREMAP_MAYMOVE | MREMAP_FIXED,
			   (unsigned char *)to + (size_t)v * WIN_PAGE) == MAP_FAILED)
			fail("window-sort", errno);
	}
	free(order);
	free(entries);
	return to;
}

/*
 * The window must keep its page frames for the helper's lifetime, since the
 * host writes to them directly: locked (no swap), populated, not compacted,
 * not collapsed into huge pages, and not shared copy-on-write with the
 * children that `exec` forks (a write after fork would move the page).
 */
static unsigned char *win_map(size_t bytes)
{
	int fd = open("/proc/sys/vm/compact_unevictable_allowed", O_WRONLY);
	if (fd < 0) {
		if (errno != ENOENT)
			fail("compact-unevictable", errno);
	} else {
		if (write(fd, "0", 1) != 1)
			fail("compact-unevictable", errno);
		close(fd);
	}
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | MAP_LOCKED, -1, 0);
	if (p == MAP_FAILED)
		fail("mmap", errno);
	unsigned char *w = p;
	if (mlock(w, bytes) != 0)
		fail("mlock", errno);
	if (madvise(w, bytes, MADV_DONTFORK) != 0)
		fail("madvise-dontfork", errno);
	/* EINVAL: a kernel without transparent huge pages, nothing to prevent. */
	if (madvise(w, bytes, MADV_NOHUGEPAGE) != 0 && errno != EINVAL)
		fail("madvise-nohugepage", errno);
	for (size_t i = 0; i < bytes; i += WIN_PAGE)
		((volatile unsigned char *)w)[i] = 0;
	return win_sort_frames(w, bytes);
}

/*
 * Reads the frames of the window's `pages` pages from pagemap and reports
 * them as runs, then `window-end`. device_bytes rides along on window-end
 * for a helper that has a device size to tell (blkback); others send 0.
 */
static void win_report(const unsigned char *w, unsigned pages, unsigned long long device_bytes)
{
	static char runs[WIN_RUNS_LINE_MAX + 64];
	size_t used = 0;
	unsigned line_first = 0;
	uint64_t *entries = win_pagemap(w, pages);

	for (unsigned i = 0; i < pages;) {
		uint64_t pfn = WIN_PFN(entries[i]);
		/* Not present, or a zero frame (what pagemap shows without
		 * CAP_SYS_ADMIN). The number reported is the window page index. */
		if (!(entries[i] >> 63) || pfn == 0)
			fail("window-page-absent", (int)i);
		unsigned count = 1;
		while (i + count < pages && (entries[i + count] >> 63) &&
		       WIN_PFN(entries[i + count]) == pfn + count)
			count++;
		char run[48];
		int len = snprintf(run, sizeof run, "%llx+%u", (unsigned long long)pfn, count);
		if (used && used + 1 + (size_t)len > WIN_RUNS_LINE_MAX) {
			ch_send("window-pfns %u %s", line_first, runs);
			used = 0;
		}
		if (!used)
			line_first = i;
		used += (size_t)snprintf(runs + used, sizeof runs - used, "%s%s", used ? "," : "", run);
		i += count;
	}
	free(entries);
	if (used)
		ch_send("window-pfns %u %s", line_first, runs);
	ch_send("window-end %u %llu", pages, device_bytes);
}

#endif
