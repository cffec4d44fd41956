/**
 * The tasks `AgentService.processAll` works on at once. A task is *awake* while it is doing
 * something (waiting for a call slot, on the wire, deciding) and *asleep* while it waits on
 * time: a backoff before a retry, or an open circuit. At most `awake` tasks are awake when a
 * new one is admitted, so a sleeping task holds nothing that new work needs; a task that
 * wakes up goes on at once (it never queues behind new tasks, so its deadline is not spent
 * behind work that arrived after it). How many tasks are held at all — awake, asleep, or
 * waiting to be admitted — is bounded by the caller (`processAll` pulls at most `maxTasks`
 * from its input at a time).
 *
 * Admission is strict FIFO, one `Effect.async` per waiting task resumed exactly once, like
 * `Bulkhead` (Effect's `Semaphore` wakes every waiter on each release).
 *
 * @internal
 */
import { Effect } from "effect"

/** A task waiting to be admitted: a node of the FIFO queue. */
class Waiter {
  next: Waiter | undefined = undefined
  prev: Waiter | undefined = undefined
  admitted = false
  resume: ((effect: Effect.Effect<void>) => void) | undefined = undefined
}

/** @internal */
export class TaskWindow {
  private awakeNow = 0
  private head: Waiter | undefined = undefined
  private tail: Waiter | undefined = undefined

  /** `awake`: how many may be awake, a number or read at each admission (a limit that moves). */
  constructor(awake: number | (() => number)) {
    this.awake = typeof awake === "number" ? () => awake : awake
  }

  private readonly awake: () => number

  /** Tasks awake right now (it may exceed `awake` while woken tasks catch up). */
  get awakeCount(): number {
    return this.awakeNow
  }

  /** Runs `task` once fewer than `awake` tasks are awake, counting it awake until it ends. */
  admit<A, E, R>(task: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    return Effect.uninterruptibleMask((restore) => {
      if (this.head === undefined && this.awakeNow < this.awake()) {
        this.awakeNow++
        return Effect.ensuring(restore(task), this.leave)
      }
      const waiter = this.enqueue()
      const admitted = Effect.async<void>((resume) => {
        if (waiter.admitted) resume(Effect.void)
        else waiter.resume = resume
      })
      return Effect.matchCauseEffect(restore(admitted), {
        onFailure: (cause) => {
          // interrupted while waiting: leave the queue, or give back the place just granted
          if (waiter.admitted) this.release()
          else this.unlink(waiter)
          return Effect.failCause(cause)
        },
        onSuccess: () => Effect.ensuring(restore(task), this.leave)
      })
    })
  }

  /**
   * Runs `wait` with the current task counted asleep, so another task may be admitted; when
   * it ends, the task is awake again at once, even if that makes more than `awake` awake.
   * (A function property, so it can be handed on as a callback: `Coalesce`'s `whileJoined`.)
   */
  readonly asleep = <A, E, R>(wait: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.uninterruptibleMask((restore) => {
      this.release()
      return Effect.ensuring(restore(wait), this.wake)
    })

  private readonly leave = Effect.sync(() => this.release())

  private readonly wake = Effect.sync(() => {
    this.awakeNow++
  })

  /** One task fewer awake: admit the head of the queue if there is room. */
  private release(): void {
    this.awakeNow--
    while (this.head !== undefined && this.awakeNow < this.awake()) {
      const waiter = this.head
      this.unlink(waiter)
      this.awakeNow++
      waiter.admitted = true
      waiter.resume?.(Effect.void)
    }
  }

  private enqueue(): Waiter {
    const waiter = new Waiter()
    waiter.prev = this.tail
    if (this.tail === undefined) this.head = waiter
    else this.tail.next = waiter
    this.tail = waiter
    return waiter
  }

  private unlink(waiter: Waiter): void {
    if (waiter.prev === undefined) this.head = waiter.next
    else waiter.prev.next = waiter.next
    if (waiter.next === undefined) this.tail = waiter.prev
    else waiter.next.prev = waiter.prev
    waiter.prev = waiter.next = undefined
  }
}
