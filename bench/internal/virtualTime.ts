/**
 * Virtual time for whole-run benchmarks: a `Clock` whose sleeps wait on a timer heap, a
 * `Scheduler` that queues fiber steps until the driver flushes them, and a driver that jumps
 * to the next timer only when nothing else can run. Exact (every timer fires at its instant,
 * in order) and fast: a 60-second run of thousands of calls takes a fraction of a second.
 *
 * Why not `TestClock`: it is exact, but before each sleeper wakes it waits for every fiber
 * of the test to be suspended (two real `setTimeout(0)`s and a walk over the fibers), which
 * measured 25 s for 4,000 sleeps among 200 fibers. The unit tests use `TestClock`; the
 * benchmarks, which run hundreds of thousands of sleeps, use this.
 *
 * Promise code (cockatiel, p-limit) runs in the same virtual time: while a run is driven, a
 * `setTimeout` with a delay goes on the same heap (`setTimeout(0)` and microtasks stay real),
 * and the driver lets microtasks settle before it moves the clock.
 */
import { Clock, Duration, Effect, Exit, Fiber, Scheduler } from "effect"

interface Timer {
  readonly at: number
  readonly seq: number
  fire: (() => void) | undefined
}

class TimerHeap {
  private readonly items: Array<Timer> = []
  private seq = 0
  get size(): number {
    return this.items.length
  }
  push(at: number, fire: () => void): Timer {
    const timer: Timer = { at, seq: this.seq++, fire }
    const items = this.items
    items.push(timer)
    let i = items.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!before(items[i]!, items[parent]!)) break
      ;[items[i], items[parent]] = [items[parent]!, items[i]!]
      i = parent
    }
    return timer
  }
  pop(): Timer | undefined {
    const items = this.items
    if (items.length === 0) return undefined
    const top = items[0]!
    const last = items.pop()!
    if (items.length > 0) {
      items[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < items.length && before(items[l]!, items[m]!)) m = l
        if (r < items.length && before(items[r]!, items[m]!)) m = r
        if (m === i) break
        ;[items[i], items[m]] = [items[m]!, items[i]!]
        i = m
      }
    }
    return top
  }
}

const before = (a: Timer, b: Timer): boolean => a.at < b.at || (a.at === b.at && a.seq < b.seq)

class QueueScheduler implements Scheduler.Scheduler {
  tasks: Array<Scheduler.Task> = []
  scheduleTask(task: Scheduler.Task): void {
    this.tasks.push(task)
  }
  shouldYield(fiber: Fiber.RuntimeFiber<unknown, unknown>): number | false {
    return fiber.currentOpCount > 2048 ? 0 : false
  }
  /** Runs queued steps (and those they queue) until none is left; false if there were none. */
  flush(): boolean {
    if (this.tasks.length === 0) return false
    while (this.tasks.length > 0) {
      const tasks = this.tasks
      this.tasks = []
      for (const task of tasks) task()
    }
    return true
  }
}

/** A virtual world: its clock, and `run` to drive a program in it to the end. */
export interface VirtualTime {
  /** Virtual milliseconds since the world was made. */
  readonly now: () => number
  /** Runs `effect` to its end in virtual time; rejects on a failure or a deadlock. */
  readonly run: <A, E>(effect: Effect.Effect<A, E>, options?: { readonly promises?: boolean }) => Promise<A>
}

const realSetTimeout = globalThis.setTimeout
const realClearTimeout = globalThis.clearTimeout
const macrotask = () => new Promise<void>((resolve) => setImmediate(resolve))

export const make = (): VirtualTime => {
  let now = 0
  const heap = new TimerHeap()
  const scheduler = new QueueScheduler()
  const clock: Clock.Clock = {
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: () => now,
    currentTimeMillis: Effect.sync(() => now),
    unsafeCurrentTimeNanos: () => BigInt(Math.round(now * 1e6)),
    currentTimeNanos: Effect.sync(() => BigInt(Math.round(now * 1e6))),
    sleep: (duration) =>
      Effect.async<void>((resume) => {
        const millis = Duration.toMillis(duration)
        const timer = heap.push(now + Math.max(0, millis), () => resume(Effect.void))
        return Effect.sync(() => {
          timer.fire = undefined
        })
      })
  }

  const run = async <A, E>(effect: Effect.Effect<A, E>, options: { readonly promises?: boolean } = {}): Promise<A> => {
    const promises = options.promises ?? false
    if (promises) {
      // timers with a delay join the heap; real zero-delay timers keep microtask interop working
      globalThis.setTimeout = ((handler: () => void, delay?: number, ...args: Array<unknown>) => {
        if (!(delay !== undefined && delay > 0)) return realSetTimeout(() => handler(...(args as [])), delay)
        const timer = heap.push(now + delay, () => handler(...(args as [])))
        return { unref: () => timer, ref: () => timer, [Symbol.toPrimitive]: () => timer.seq, timer }
      }) as unknown as typeof setTimeout
      globalThis.clearTimeout = ((handle: unknown) => {
        if (handle !== null && typeof handle === "object" && "timer" in handle) (handle as { timer: Timer }).timer.fire = undefined
        else realClearTimeout(handle as Parameters<typeof clearTimeout>[0])
      }) as typeof clearTimeout
    }
    try {
      const fiber = Effect.runFork(Effect.withClock(effect, clock), { scheduler })
      for (;;) {
        scheduler.flush()
        if (promises) {
          await macrotask()
          if (scheduler.tasks.length > 0) continue
        }
        const exit = fiber.unsafePoll()
        if (exit !== null) {
          if (Exit.isSuccess(exit)) return exit.value
          throw new Error(`virtual run failed: ${String(exit.cause)}`)
        }
        const timer = heap.pop()
        if (timer === undefined) throw new Error("virtual run deadlocked: no timer left and the program has not ended")
        if (timer.fire === undefined) continue
        now = Math.max(now, timer.at)
        const fire = timer.fire
        timer.fire = undefined
        fire()
      }
    } finally {
      globalThis.setTimeout = realSetTimeout
      globalThis.clearTimeout = realClearTimeout
    }
  }

  return { now: () => now, run }
}

