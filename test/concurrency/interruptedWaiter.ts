/**
 * The scenario every one-permit FIFO limiter must pass: a holder and three waiters; the middle
 * waiter is interrupted; the others are admitted in arrival order, one permit-time apart (times
 * from the scenario's start), and nothing leaks. Shared by the Bulkhead and AdaptiveLimit tests.
 */
import { expect } from "@effect/vitest"
import { Clock, Effect, Exit, Fiber, TestClock } from "effect"

export const interruptedWaiterScenario = (
  withPermit: <A, E>(self: Effect.Effect<A, E>) => Effect.Effect<A, unknown>,
  waiting: Effect.Effect<number>
) =>
  Effect.gen(function* () {
    const admitted: Array<string> = []
    const t0 = yield* Clock.currentTimeMillis
    const start = (name: string) =>
      Effect.fork(withPermit(Effect.zipRight(
        Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.sync(() => admitted.push(`${name}@${t - t0}`))),
        Effect.sleep("1 second")
      )))
    const fibers = []
    for (const name of ["holder", "a", "b", "c"]) {
      fibers.push(yield* start(name))
      yield* TestClock.adjust(0)
    }
    expect(yield* waiting).toBe(3)
    expect(Exit.isInterrupted(yield* Fiber.interrupt(fibers[2]!))).toBe(true)
    expect(yield* waiting).toBe(2)
    yield* TestClock.adjust("3 seconds")
    yield* Fiber.join(Fiber.zip(fibers[0]!, Fiber.zip(fibers[1]!, fibers[3]!)))
    expect(admitted).toEqual(["holder@0", "a@1000", "c@2000"])
    expect(yield* waiting).toBe(0)
  })
