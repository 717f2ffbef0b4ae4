// Receive coalescing, as Linux's GRO does, but before the guest: consecutive
// TCP segments of one flow that arrive from the net VM together go into the
// app VM as one large segment with a virtio-net GSO header. The guest's
// stack then pays its per-packet costs (interrupt, buffers, IP and TCP
// receive, an ACK every second segment) once per merged segment instead of
// once per 1460 bytes; in v86 those costs, not the copying, dominate a
// download (docs/benchmarks.md).
//
// Only plain segments merge: IPv4 without options or fragments, TCP without
// options, flags ACK and at most PSH, both checksums right, the same flow,
// TOS, TTL and ACK, each starting where the last ended, none longer than the
// first. Anything else (frames from a broken or hostile net VM included)
// passes through untouched and in order; a merged segment is never longer
// than IPv4 allows.

const ETH = 14;
const IP = 20;
const TCP = 20;
/** Ethernet, IPv4 and TCP headers of a plain segment. */
export const SEGMENT_HEADERS = ETH + IP + TCP;
/** IPv4's 16-bit total length bounds a merged segment. */
export const MAX_COALESCED = ETH + 0xffff;
/**
 * At most this many segments in one merged segment. The guest acknowledges
 * once per merged segment or two, and slirp sends only what its send
 * buffer (512 KiB then, 1 MiB now) holds unacknowledged: merged segments of up to 44 gave one
 * acknowledgment per 64 segments, and the net VM waited for them. 16 was
 * faster than no limit in four interleaved A/Bs (+3 to +13%), 8 and 12 slower
 * (the guest's per-packet work again), 24 and 32 no better
 * (docs/benchmarks.md).
 */
export const MAX_SEGMENTS = 16;

const TCP_ACK = 0x10;
const TCP_PSH = 0x08;

/** Where coalesced frames go. `gsoSize` > 0: a merged segment of that MSS; `checked`: both checksums verified. */
export type CoalescedSink = (frame: Uint8Array, gsoSize: number, checked: boolean) => void;

/** One's-complement sum of big-endian 16-bit words over [start, end), unfolded (an odd last byte is the high half). */
function sum16(b: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start;
  for (; i + 1 < end; i += 2) sum += (b[i]! << 8) | b[i + 1]!;
  if (i < end) sum += b[i]! << 8;
  return sum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

function u16(b: Uint8Array, at: number): number {
  return (b[at]! << 8) | b[at + 1]!;
}

function u32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

function put16(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >>> 8) & 0xff;
  b[at + 1] = v & 0xff;
}

/** The TCP pseudo-header's sum: addresses, protocol, TCP length. */
function pseudoSum(b: Uint8Array, tcpLength: number): number {
  return sum16(b, ETH + 12, ETH + 20) + 6 + tcpLength;
}

/** A plain segment's fields, or undefined when the frame must pass through untouched. */
interface Segment {
  seq: number;
  payload: number;
  /** Unfolded sum of the payload's 16-bit words. */
  payloadSum: number;
  psh: boolean;
}

export function plainSegment(b: Uint8Array): Segment | undefined {
  if (b.length <= SEGMENT_HEADERS || u16(b, 12) !== 0x0800 || b[ETH] !== 0x45) return undefined;
  const total = u16(b, ETH + 2);
  const payload = total - IP - TCP;
  if (payload <= 0 || ETH + total > b.length) return undefined;
  // More fragments or a fragment offset: not a whole segment.
  if ((u16(b, ETH + 6) & 0x3fff) !== 0 || b[ETH + 9] !== 6) return undefined;
  if (fold(sum16(b, ETH, ETH + IP)) !== 0xffff) return undefined;
  const t = ETH + IP;
  // Data offset 5 (no options), no reserved or ECN bits; ACK, perhaps PSH, nothing else.
  if (b[t + 12] !== 0x50 || (b[t + 13]! & ~TCP_PSH) !== TCP_ACK) return undefined;
  const payloadSum = sum16(b, SEGMENT_HEADERS, ETH + total);
  if (fold(pseudoSum(b, TCP + payload) + sum16(b, t, SEGMENT_HEADERS) + payloadSum) !== 0xffff) return undefined;
  return { seq: u32(b, t + 4), payload, payloadSum, psh: (b[t + 13]! & TCP_PSH) !== 0 };
}

export class Coalescer {
  /** Merged frames, and the segments in them (a frame out of one segment counts in neither). */
  readonly stats = { merged: 0, segments: 0 };
  private readonly buf = new Uint8Array(MAX_COALESCED);
  /** Bytes held in buf; 0: nothing held. */
  private len = 0;
  private count = 0;
  private mss = 0;
  private nextSeq = 0;
  private payloadSum = 0;
  private psh = false;
  /** A short or PSH segment ends a run: nothing may follow it. */
  private ended = false;

  constructor(private readonly sink: CoalescedSink) {}

  /** A frame from the net VM; it may be a view that is only valid during the call. */
  push(frame: Uint8Array): void {
    const seg = frame.length <= MAX_COALESCED ? plainSegment(frame) : undefined;
    if (!seg) {
      this.flush();
      this.sink(frame, 0, false);
      return;
    }
    if (this.len > 0 && this.continues(frame, seg)) {
      this.append(frame, seg);
      return;
    }
    this.flush();
    this.buf.set(frame);
    this.len = frame.length;
    this.count = 1;
    this.mss = seg.payload;
    this.nextSeq = (seg.seq + seg.payload) >>> 0;
    this.payloadSum = seg.payloadSum;
    this.psh = seg.psh;
    this.ended = seg.psh;
  }

  /** Hands on what is held (the end of a batch of frames from the net VM). */
  flush(): void {
    if (this.len === 0) return;
    const b = this.buf;
    if (this.count === 1) {
      this.sink(b.subarray(0, this.len), 0, true);
    } else {
      const t = ETH + IP;
      const total = this.len - ETH;
      put16(b, ETH + 2, total);
      put16(b, ETH + 10, 0);
      put16(b, ETH + 10, ~fold(sum16(b, ETH, ETH + IP)) & 0xffff);
      if (this.psh) b[t + 13] = b[t + 13]! | TCP_PSH;
      put16(b, t + 16, 0);
      const sum = pseudoSum(b, total - IP) + sum16(b, t, SEGMENT_HEADERS) + this.payloadSum;
      put16(b, t + 16, ~fold(sum) & 0xffff);
      this.stats.merged++;
      this.stats.segments += this.count;
      this.sink(b.subarray(0, this.len), this.mss, true);
    }
    this.len = 0;
  }

  private continues(b: Uint8Array, seg: Segment): boolean {
    if (this.ended || this.count >= MAX_SEGMENTS || seg.seq !== this.nextSeq || seg.payload > this.mss) return false;
    const held = this.count === 1 ? ETH + u16(this.buf, ETH + 2) : this.len;
    if (held + seg.payload > MAX_COALESCED) return false;
    const h = this.buf;
    // TOS, then TTL; addresses and ports; the acknowledgment number.
    if (b[ETH + 1] !== h[ETH + 1] || b[ETH + 8] !== h[ETH + 8]) return false;
    for (let i = ETH + 12; i < ETH + IP + 4; i++) if (b[i] !== h[i]) return false;
    for (let i = ETH + IP + 8; i < ETH + IP + 12; i++) if (b[i] !== h[i]) return false;
    return true;
  }

  private append(b: Uint8Array, seg: Segment): void {
    // The first frame may carry Ethernet padding past its IP datagram: drop it.
    if (this.count === 1) this.len = ETH + u16(this.buf, ETH + 2);
    const at = this.len;
    this.buf.set(b.subarray(SEGMENT_HEADERS, SEGMENT_HEADERS + seg.payload), at);
    // A payload that starts at an odd offset of the merged one adds its words byte-swapped.
    const odd = (at - SEGMENT_HEADERS) & 1;
    const s = fold(seg.payloadSum);
    this.payloadSum += odd ? ((s & 0xff) << 8) | (s >>> 8) : s;
    this.len += seg.payload;
    this.count++;
    this.nextSeq = (seg.seq + seg.payload) >>> 0;
    // The latest window is the one that counts.
    this.buf[ETH + IP + 14] = b[ETH + IP + 14]!;
    this.buf[ETH + IP + 15] = b[ETH + IP + 15]!;
    if (seg.psh) this.psh = true;
    this.ended = seg.psh || seg.payload < this.mss;
  }
}
