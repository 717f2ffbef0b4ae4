// The frame rings shared with the net VM's netback helper, in its pinned
// window. The layout is mirrored in drivervm/net/netback.c. Indices are
// free-running u32; a slot is index % SLOTS. Ring A carries frames from the
// host to netback (which sends them on the NIC through a packet socket), ring
// B frames that the NIC received, to the host.

/** netback rings the host with `outb` to this port; 0x6f0 is blkback's. */
export const NET_DOORBELL_PORT = 0x6f1;

export const NET_RING = {
  MAGIC: 0x3152544e, // "NTR1"
  OFF_MAGIC: 0,
  OFF_TO_GUEST_PROD: 4, // host writes
  OFF_TO_GUEST_CONS: 8, // netback writes
  OFF_TO_HOST_PROD: 12, // netback writes
  OFF_TO_HOST_CONS: 16, // host writes
  OFF_TO_HOST_DROPPED: 20, // netback: frames the NIC received that its socket's receive ring had no room for
  OFF_TO_GUEST_INVALID: 24, // netback: ring A slots it skipped for a bad length
  SLOTS: 64,
  SLOT_BYTES: 2048,
  /** A slot: u32 length, then the frame. */
  SLOT_HEADER: 4,
  TO_GUEST_BASE: 4096,
  TO_HOST_BASE: 4096 + 64 * 2048,
  WINDOW_BYTES: 4096 + 128 * 2048,
  WINDOW_PAGES: (4096 + 128 * 2048) / 4096,
} as const;

export function toGuestSlot(index: number): number {
  return NET_RING.TO_GUEST_BASE + (index % NET_RING.SLOTS) * NET_RING.SLOT_BYTES;
}

export function toHostSlot(index: number): number {
  return NET_RING.TO_HOST_BASE + (index % NET_RING.SLOTS) * NET_RING.SLOT_BYTES;
}
