/**
 * An intrusive FIFO of waiters: each waiter carries its own `prev`/`next` links, so joining the
 * tail and leaving from anywhere (an interrupted waiter) are O(1) and allocate nothing beyond
 * the waiter itself. Plain mutable state for callers that touch it inside `Effect.sync` /
 * `Effect.suspend` / `Effect.uninterruptibleMask`.
 *
 * Shared by `Bulkhead`, `AdaptiveLimit` and `TokenBudget`, whose waiters each add the state
 * their limiter needs (permits asked, a cost, how to resume the fiber).
 *
 * @internal
 */
import { Effect } from "effect"

/** @internal */
export interface Linked<T> {
  prev: T | undefined
  next: T | undefined
}

/** @internal */
export class WaitQueue<T extends Linked<T>> {
  head: T | undefined = undefined
  tail: T | undefined = undefined
  size = 0

  /** Adds `node` at the tail. */
  push(node: T): void {
    node.prev = this.tail
    if (this.tail === undefined) this.head = node
    else this.tail.next = node
    this.tail = node
    this.size++
  }

  /** Removes `node`, which must be in this queue, wherever it is. */
  unlink(node: T): void {
    if (node.prev === undefined) this.head = node.next
    else node.prev.next = node.next
    if (node.next === undefined) this.tail = node.prev
    else node.next.prev = node.prev
    node.prev = node.next = undefined
    this.size--
  }
}

/**
 * A caller waiting for `permits` of a permit limiter (`Bulkhead`, `AdaptiveLimit`): a node of
 * the queue, granted once by whoever hands it the permits.
 *
 * @internal
 */
export class PermitWaiter {
  prev: PermitWaiter | undefined = undefined
  next: PermitWaiter | undefined = undefined
  /** Set when the permits were handed over (and the waiter unlinked). */
  granted = false
  resume: ((effect: Effect.Effect<void>) => void) | undefined = undefined
  constructor(readonly permits: number) {}

  /** Hands the permits over: resumes the waiting fiber, or lets it pass when it gets there. */
  grant(): void {
    this.granted = true
    this.resume?.(Effect.void)
  }

  /** Waits until granted: one `Effect.async`, resumed exactly once. */
  readonly await: Effect.Effect<void> = Effect.async<void>((resume) => {
    if (this.granted) resume(Effect.void)
    else this.resume = resume
  })
}
