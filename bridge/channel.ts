// An L4-style IPC channel between two tasks: one ring per direction, each in
// its own SharedArrayBuffer whose header holds the doorbell and the revoked
// flag. The kernel (main thread) creates the channel, posts one descriptor
// to each task's worker, and keeps both so that it can revoke the channel
// when a task dies: after that nothing more crosses it in either direction.

import { Ring, RingError } from "./ring.js";

export const CHANNEL_DESCRIPTOR_VERSION = 1;

/** What a task needs to open its end; structured-cloneable (postMessage, workerData). */
export interface ChannelDescriptor {
  readonly version: typeof CHANNEL_DESCRIPTOR_VERSION;
  readonly side: "a" | "b";
  /** Distinguishes a re-created channel from the one it replaces. */
  readonly generation: number;
  /** The ring this side writes. */
  readonly tx: SharedArrayBuffer;
  /** The ring this side reads. */
  readonly rx: SharedArrayBuffer;
}

export interface ChannelOptions {
  /** Data area of each ring, a power of two; a message carries at most half of it less 4 bytes. */
  bytesPerDirection: number;
  generation?: number;
}

export type ChannelErrorCode = "descriptor" | "corrupt" | "handler";

export class ChannelError extends Error {
  override readonly name = "ChannelError";
  constructor(
    readonly code: ChannelErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface ChannelStats {
  messagesSent: number;
  bytesSent: number;
  messagesReceived: number;
  bytesReceived: number;
  /** Sends refused because the peer's ring was full. */
  fullRefusals: number;
  /** Sends refused because the channel was revoked. */
  refusedAfterRevoke: number;
  /** Exceptions thrown by the message handler (the loop survives them). */
  handlerErrors: number;
}

export type ChannelStopReason = "closed" | "revoked" | "corrupt";

let nextGeneration = 1;

export function createChannel(options: ChannelOptions): { a: ChannelDescriptor; b: ChannelDescriptor } {
  const generation = options.generation ?? nextGeneration++;
  const ab = Ring.create(options.bytesPerDirection, generation).buffer;
  const ba = Ring.create(options.bytesPerDirection, generation).buffer;
  const version = CHANNEL_DESCRIPTOR_VERSION;
  return {
    a: { version, side: "a", generation, tx: ab, rx: ba },
    b: { version, side: "b", generation, tx: ba, rx: ab },
  };
}

/** Revokes the channel for both sides; either side's descriptor will do. */
export function revokeChannel(descriptor: ChannelDescriptor): void {
  new Ring(descriptor.tx).revoke();
  new Ring(descriptor.rx).revoke();
}

// The receive loop hands control back to the event loop after this many
// messages, so that a peer that never stops sending cannot starve it.
const DRAIN_BUDGET = 256;

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class ChannelEndpoint {
  readonly side: "a" | "b";
  readonly generation: number;
  readonly stats: ChannelStats = {
    messagesSent: 0,
    bytesSent: 0,
    messagesReceived: 0,
    bytesReceived: 0,
    fullRefusals: 0,
    refusedAfterRevoke: 0,
    handlerErrors: 0,
  };
  /** The last error reported, kept also when no onError handler is set. */
  lastError: ChannelError | undefined;
  /** Resolves when the receive loop ends (or at close() if it never started). */
  readonly stopped: Promise<ChannelStopReason>;
  private readonly tx: Ring;
  private readonly rx: Ring;
  private handler: ((message: Uint8Array) => void) | undefined;
  private batchEnd: (() => void) | undefined;
  /** Hand the handler views into the ring rather than copies (see onMessage). */
  private borrow = false;
  private errorHandler: ((error: ChannelError) => void) | undefined;
  private closed = false;
  private running = false;
  /** A handler that polls again (it raised an interrupt that ran a slice) must not re-enter drain(). */
  private draining = false;
  private corrupted = false;
  private resolveStopped!: (reason: ChannelStopReason) => void;

  constructor(descriptor: ChannelDescriptor) {
    const d: unknown = descriptor;
    if (!isDescriptor(d)) throw new ChannelError("descriptor", "not a channel descriptor (version 1)");
    this.tx = new Ring(d.tx);
    this.rx = new Ring(d.rx);
    if (this.tx.generation !== d.generation || this.rx.generation !== d.generation) {
      throw new ChannelError(
        "descriptor",
        `descriptor of generation ${d.generation} names rings of generations ${this.tx.generation}/${this.rx.generation}`,
      );
    }
    this.side = d.side;
    this.generation = d.generation;
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve));
  }

  /** Largest payload one message may carry. */
  get maxMessageBytes(): number {
    return this.tx.maxMessageBytes;
  }

  get revoked(): boolean {
    return this.tx.revoked || this.rx.revoked;
  }

  /**
   * Sends `parts` as one message (copied into the ring). Returns false when
   * the peer's ring is full, the channel is revoked or closed, or the ring is
   * corrupt (reported through onError). Throws a RingError "too-large" for a
   * message above maxMessageBytes: that is the caller's bug.
   */
  send(parts: readonly Uint8Array[]): boolean {
    if (this.revoked) {
      this.stats.refusedAfterRevoke++;
      return false;
    }
    if (this.closed) return false;
    let written: boolean;
    try {
      written = this.tx.write(parts);
    } catch (e) {
      if (e instanceof RingError && e.code === "corrupt") {
        this.report(new ChannelError("corrupt", e.message, { cause: e }));
        return false;
      }
      throw e;
    }
    if (!written) {
      // The flag may have been set between the check above and the write.
      if (this.tx.revoked) this.stats.refusedAfterRevoke++;
      else this.stats.fullRefusals++;
      return false;
    }
    let bytes = 0;
    for (const part of parts) bytes += part.byteLength;
    this.stats.messagesSent++;
    this.stats.bytesSent += bytes;
    this.tx.ringDoorbell();
    return true;
  }

  /**
   * Resolves true once a message of `length` payload bytes fits in the
   * peer's ring, false if the channel is revoked or closed first.
   */
  whenWritable(length: number): Promise<boolean> {
    return this.tx.whenFits(length, () => this.closed || this.rx.revoked);
  }

  /**
   * Starts the receive loop. Each message is a copy the handler owns; with
   * `borrow`, a view into the ring that is valid only until the handler
   * returns (no copy, no garbage: for bulk data the handler copies straight
   * to where it goes, and copies what it keeps). While the loop runs it
   * keeps the thread alive, like an open socket; close() or revocation ends
   * it. `onBatchEnd` runs after each run of messages that were waiting
   * together (a handler that merges messages hands on what it holds).
   */
  onMessage(handler: (message: Uint8Array) => void, options: { borrow?: boolean; onBatchEnd?: () => void } = {}): void {
    this.handler = handler;
    this.batchEnd = options.onBatchEnd;
    this.borrow = options.borrow ?? false;
    if (this.running || this.closed) return;
    this.running = true;
    void this.receiveLoop();
  }

  /** Handler errors and ring corruption are reported here, never thrown. */
  onError(handler: (error: ChannelError) => void): void {
    this.errorHandler = handler;
  }

  /** Stops the receive loop and refuses further sends. Does not revoke. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.tx.wakeWriter();
    if (this.running) this.rx.ringDoorbell(true); // wakes our own waiter
    else this.resolveStopped("closed");
  }

  /**
   * For an owner that runs its own loop (a v86 worker between slices of
   * guest time): while awake, the peer skips the doorbell's wake-up and the
   * owner must call poll() often; asleep, the receive loop is woken as
   * usual. Going to sleep polls once more, for messages that skipped it.
   */
  setAwake(awake: boolean): void {
    this.rx.setReaderAwake(awake);
    if (!awake) this.poll();
  }

  /** Hands the messages waiting in the ring to the handler now. */
  poll(): void {
    if (!this.running || this.draining || this.closed || this.revoked) return;
    // A corrupt ring ends the receive loop: wake it to see that. (Past the
    // budget, the rest waits for the next poll or the loop's next turn.)
    if (this.drain() === "corrupt") {
      this.corrupted = true;
      this.rx.ringDoorbell(true);
    }
  }

  private async receiveLoop(): Promise<void> {
    // A pending Atomics.waitAsync does not keep a worker alive; this does.
    const keepAlive = setInterval(() => {}, 1 << 30);
    let reason: ChannelStopReason = "closed";
    try {
      // Handlers run from the event loop, never inside onMessage() itself.
      await null;
      for (;;) {
        if (this.closed) break;
        if (this.revoked) {
          reason = "revoked";
          break;
        }
        const seen = this.rx.doorbell();
        const drained = this.corrupted ? "corrupt" : this.drain();
        if (drained === "corrupt") {
          reason = "corrupt";
          break;
        }
        if (drained === "budget") {
          await yieldToEventLoop();
          continue;
        }
        const wait = this.rx.waitDoorbell(seen);
        // The doorbell moved while we drained: go round, but let the event loop run first.
        await (wait ?? yieldToEventLoop());
      }
    } finally {
      clearInterval(keepAlive);
      this.running = false;
      this.resolveStopped(reason);
    }
  }

  private drain(): "empty" | "budget" | "corrupt" {
    let count = 0;
    this.draining = true;
    try {
      for (;;) {
        if (this.closed) return "empty";
        if (count === DRAIN_BUDGET) return "budget";
        const took = this.borrow ? this.rx.readBorrowed(this.deliver) : this.deliverCopy();
        if (!took) return "empty";
        count++;
      }
    } catch (e) {
      if (!(e instanceof RingError)) throw e;
      this.report(new ChannelError("corrupt", e.message, { cause: e }));
      return "corrupt";
    } finally {
      if (count > 0 && this.batchEnd) this.guarded(this.batchEnd);
      this.draining = false;
    }
  }

  /** Gives one message to the handler; a handler that throws is counted and reported. */
  private readonly deliver = (message: Uint8Array): void => {
    this.stats.messagesReceived++;
    this.stats.bytesReceived += message.byteLength;
    if (this.handler) this.guarded(this.handler, message);
  };

  private guarded<A extends unknown[]>(f: (...args: A) => void, ...args: A): void {
    try {
      f(...args);
    } catch (e) {
      this.stats.handlerErrors++;
      this.report(new ChannelError("handler", `message handler threw: ${String(e)}`, { cause: e }));
    }
  }

  private deliverCopy(): boolean {
    const message = this.rx.read();
    if (message === undefined) return false;
    this.deliver(message);
    return true;
  }

  private report(error: ChannelError): void {
    this.lastError = error;
    try {
      this.errorHandler?.(error);
    } catch {
      // An error handler that throws must not end the loop either.
    }
  }
}

function isDescriptor(d: unknown): d is ChannelDescriptor {
  if (typeof d !== "object" || d === null) return false;
  const r = d as Record<string, unknown>;
  return (
    r.version === CHANNEL_DESCRIPTOR_VERSION &&
    (r.side === "a" || r.side === "b") &&
    typeof r.generation === "number" &&
    Number.isInteger(r.generation) &&
    r.tx instanceof SharedArrayBuffer &&
    r.rx instanceof SharedArrayBuffer &&
    r.tx !== r.rx
  );
}
