import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Exit, Fiber, Layer, Option, Stream, TestClock } from "effect"
import * as AgentEvent from "../../src/events/AgentEvent.js"
import * as EventBus from "../../src/events/EventBus.js"
import * as Progress from "../../src/events/Progress.js"
import { SystemError } from "@effect/platform/Error"
import * as Terminal from "@effect/platform/Terminal"
import * as Screen from "../cli/Screen.js"

/** Runs `n` tasks, one finishing every `everyMillis` (the even ones succeed). */
const finishEvery = (progress: Progress.Progress.Service, n: number, everyMillis: number) =>
  Effect.forEach(Array.from({ length: n }, (_, i) => i), (i) =>
    progress.track(Effect.zipRight(Effect.sleep(everyMillis * (i + 1)), i % 2 === 0 ? Effect.void : Effect.fail("no"))).pipe(
      Effect.ignore
    ), { concurrency: "unbounded", discard: true })

/** A Terminal that records each display; its width and TTY-ness as given. */
const recording = (isTTY: boolean, columns = 0) => {
  const writes: Array<string> = []
  const terminal = Progress.outputTerminal({
    display: (text) => Effect.sync(() => void writes.push(text)),
    isTTY,
    columns
  })
  return { writes, layer: Layer.succeed(Terminal.Terminal, terminal) }
}

describe("Progress", () => {
  describe("counts, rate and ETA (seed bug 13: processWithProgress reported a bare percentage)", () => {
    it.effect("a scripted run under TestClock: rate and ETA exact at every step", () =>
      Effect.gen(function*() {
        const progress = yield* Progress.make({ total: 10 })
        const run = yield* Effect.fork(finishEvery(progress, 8, 500))
        yield* Effect.repeatN(Effect.yieldNow(), 10)
        const at0 = yield* progress.snapshot
        expect([at0.inFlight, at0.done, at0.perSecond, at0.etaMillis]).toEqual([8, 0, Option.none(), Option.none()])
        yield* TestClock.adjust("2 seconds")
        // four finished in 2 s: 2 per second, 6 left → 3 s
        const at2 = yield* progress.snapshot
        expect(at2).toMatchObject({ done: 4, succeeded: 2, failed: 2, inFlight: 4, elapsedMillis: 2000 })
        expect([at2.perSecond, at2.etaMillis]).toEqual([Option.some(2), Option.some(3000)])
        yield* TestClock.adjust("2 seconds")
        yield* Fiber.join(run)
        const at4 = yield* progress.snapshot
        expect([at4.done, at4.inFlight, at4.perSecond, at4.etaMillis]).toEqual([8, 0, Option.some(2), Option.some(1000)])
        yield* progress.invalid
        yield* progress.invalid
        expect((yield* progress.snapshot).etaMillis).toEqual(Option.some(0))
      }))

    it.effect("issue 7 #9: resuming, skipped lines are done but not in the rate, so the ETA is right", () =>
      Effect.gen(function*() {
        const progress = yield* Progress.make({ total: 100 })
        yield* progress.skipped(60)
        const run = yield* Effect.fork(finishEvery(progress, 10, 1000))
        yield* TestClock.adjust("10 seconds")
        yield* Fiber.join(run)
        const snapshot = yield* progress.snapshot
        // 10 finished in 10 s: 1 per second (not 7); 30 left → 30 s (not 4.3 s)
        expect([snapshot.done, snapshot.skipped, snapshot.perSecond, snapshot.etaMillis]).toEqual([
          70,
          60,
          Option.some(1),
          Option.some(30_000)
        ])
        expect(Progress.format("plain", snapshot)).toBe(
          "70/100 done (60 resumed), 5 failed, 0 retries, 0 running, 1.0/s, ETA 30s"
        )
      }))

    it.effect("an unknown total has a rate but no ETA; setTotal makes it known", () =>
      Effect.gen(function*() {
        const progress = yield* Progress.make()
        yield* TestClock.adjust("1 second")
        yield* progress.succeeded
        const unknown = yield* progress.snapshot
        expect([unknown.total, unknown.perSecond, unknown.etaMillis]).toEqual([Option.none(), Option.some(1), Option.none()])
        yield* progress.setTotal(5)
        expect((yield* progress.snapshot).etaMillis).toEqual(Option.some(4000))
      }))

    it.effect("track: an interrupted task leaves the tasks in flight without counting as failed", () =>
      Effect.gen(function*() {
        const progress = yield* Progress.make()
        const fiber = yield* Effect.fork(progress.track(Effect.never))
        yield* Effect.yieldNow()
        expect((yield* progress.snapshot).inFlight).toBe(1)
        yield* Fiber.interrupt(fiber)
        expect(yield* progress.snapshot).toMatchObject({ inFlight: 0, failed: 0, succeeded: 0 })
      }))

    it.scoped("record counts from the agent's events on the bus", () =>
      Effect.gen(function*() {
        const bus = yield* EventBus.make()
        const progress = yield* Progress.make({ total: 2 })
        yield* bus.on(["TaskStarted", "TaskFinished", "RetryScheduled"], progress.record, { strategy: "suspend" })
        const error = { _tag: "Overloaded", message: "m: overloaded" }
        yield* bus.publish(new AgentEvent.TaskStarted({ taskId: "a" }))
        yield* bus.publish(new AgentEvent.TaskStarted({ taskId: "b" }))
        yield* bus.publish(new AgentEvent.RetryScheduled({ taskId: "a", model: "m", attempt: 2, delayMillis: 1, error }))
        yield* bus.emitAndAwait(new AgentEvent.TaskFinished({ taskId: "a", status: "succeeded", attempts: 2, durationMs: 3 }))
        expect(yield* progress.snapshot).toMatchObject({ succeeded: 1, failed: 0, retries: 1, inFlight: 1, done: 1 })
        yield* bus.emitAndAwait(new AgentEvent.TaskFinished({ taskId: "b", status: "failed", attempts: 1, durationMs: 3 }))
        expect(yield* progress.snapshot).toMatchObject({ failed: 1, inFlight: 0, done: 2 })
      }))

    it.effect("changes: the snapshot now, then one per change, timed by the Clock", () =>
      Effect.gen(function*() {
        const progress = yield* Progress.make({ total: 3 })
        const seen = yield* Effect.fork(Stream.runCollect(Stream.take(progress.changes, 3)))
        yield* Effect.yieldNow()
        yield* TestClock.adjust("1 second")
        yield* progress.succeeded
        yield* TestClock.adjust("1 second")
        yield* progress.failed
        const snapshots = Chunk.toReadonlyArray(yield* Fiber.join(seen))
        expect(snapshots.map((s) => [s.done, s.elapsedMillis, s.etaMillis])).toEqual([
          [0, 0, Option.none()],
          [1, 1000, Option.some(2000)],
          [2, 2000, Option.some(1000)]
        ])
        expect(Progress.toEvent(snapshots[2]!)).toStrictEqual(
          new AgentEvent.ProgressReported({
            total: 3, done: 2, succeeded: 1, failed: 1, invalid: 0, skipped: 0, retries: 0, inFlight: 0,
            elapsedMillis: 2000, perSecond: 1, etaMillis: 1000
          })
        )
      }))

    it.effect("issue 7 #9: inputs not reached yet that an earlier run answered are no work left; each skip counts one off", () =>
      Effect.gen(function*() {
        // 20 inputs, the last 10 answered by an earlier run: 5 finished in 5 s
        const progress = yield* Progress.make({ total: 20 })
        yield* progress.setAnsweredAhead(10)
        const run = yield* Effect.fork(finishEvery(progress, 5, 1000))
        yield* TestClock.adjust("5 seconds")
        yield* Fiber.join(run)
        const before = yield* progress.snapshot
        // 1 per second, 20 - 5 done - 10 answered ahead = 5 left: 5 s (not 15 s)
        expect([before.done, before.answeredAhead, before.etaMillis]).toEqual([5, 10, Option.some(5000)])
        // the ten are reached and skipped in no time: done, not in the rate, and no longer ahead
        yield* progress.skipped(10)
        const after = yield* progress.snapshot
        expect([after.done, after.answeredAhead, after.perSecond, after.etaMillis]).toEqual([
          15,
          0,
          Option.some(1),
          Option.some(5000)
        ])
        // more skips than were announced never make it negative
        yield* progress.skipped(3)
        expect((yield* progress.snapshot).answeredAhead).toBe(0)
        expect(Exit.isFailure(yield* Effect.exit(progress.setAnsweredAhead(-1)))).toBe(true)
      }))

    it.effect("issue 7 #2: a total estimated while the input is read shows as ~N, until the real one is set", () =>
      Effect.gen(function*() {
        const progress = yield* Progress.make()
        yield* TestClock.adjust("2 seconds")
        for (let i = 0; i < 4; i++) yield* progress.succeeded
        yield* progress.setTotal(300, { estimated: true })
        const estimated = yield* progress.snapshot
        expect([estimated.total, estimated.estimated, estimated.etaMillis]).toEqual([Option.some(300), true, Option.some(148_000)])
        expect(Progress.format("plain", estimated)).toBe("4/~300 done, 0 failed, 0 retries, 0 running, 2.0/s, ETA 2m28s")
        expect(Progress.format("tty", estimated)).toBe(
          "[░░░░░░░░░░░░░░░░░░░░] 4/~300, 0 failed, 0 retries, 0 running, 2.0/s, ETA 2m28s"
        )
        yield* progress.setTotal(10)
        expect(Progress.format("plain", yield* progress.snapshot)).toBe(
          "4/10 done, 0 failed, 0 retries, 0 running, 2.0/s, ETA 3s"
        )
      }))

    it.effect("setTotal with the total it already has publishes no change", () =>
      Effect.gen(function*() {
        const progress = yield* Progress.make()
        const seen = yield* Effect.fork(Stream.runCollect(Stream.take(progress.changes, 4)))
        yield* Effect.repeatN(Effect.yieldNow(), 10)
        yield* progress.setTotal(5, { estimated: true })
        yield* progress.setTotal(5, { estimated: true })
        yield* progress.setTotal(5)
        yield* progress.setTotal(5)
        yield* progress.setTotal(6)
        const totals = Chunk.toReadonlyArray(yield* Fiber.join(seen)).map((s) => [s.total, s.estimated])
        expect(totals).toEqual([[Option.none(), false], [Option.some(5), true], [Option.some(5), false], [Option.some(6), false]])
      }))

    it.effect("issue 6: breaker transitions keep the circuits that are not closed, with when an open one probes", () =>
      Effect.gen(function*() {
        const progress = yield* Progress.make({ total: 300 })
        const transition = (breaker: string, from: string, to: string, atMillis: number, untilMillis?: number) =>
          progress.record(
            new AgentEvent.BreakerTransition({ breaker, from, to, atMillis, ...(untilMillis === undefined ? {} : { untilMillis }) })
          )
        yield* TestClock.adjust("1 second")
        yield* transition("embedded", "Closed", "Open", 1_000, 13_000)
        yield* transition("backup", "Closed", "Isolated", 1_000)
        const open = yield* progress.snapshot
        expect(open.circuits).toEqual([
          { breaker: "embedded", state: "open", probeAtMillis: Option.some(13_000) },
          { breaker: "backup", state: "isolated", probeAtMillis: Option.none() }
        ])
        expect(Progress.format("plain", open)).toBe(
          "0/300 done, 0 failed, 0 retries, 0 running, 0.0/s, ETA --, circuit embedded open (probe in 12s), circuit backup isolated"
        )
        // its open time over but no transition seen yet: it is about to probe
        yield* TestClock.adjust("12 seconds")
        expect(Progress.formatCircuit(open.circuits[0]!, (yield* progress.snapshot).nowMillis)).toBe("circuit embedded open (probing)")
        yield* transition("embedded", "Open", "HalfOpen", 13_000)
        yield* transition("backup", "Isolated", "Closed", 13_000)
        const probing = yield* progress.snapshot
        expect(probing.circuits).toEqual([{ breaker: "embedded", state: "half-open", probeAtMillis: Option.none() }])
        expect(Progress.format("plain", probing)).toBe(
          "0/300 done, 0 failed, 0 retries, 0 running, 0.0/s, ETA --, circuit embedded half-open (probing)"
        )
        yield* transition("embedded", "HalfOpen", "Closed", 13_200)
        expect((yield* progress.snapshot).circuits).toEqual([])
      }))

    it.effect("a total that is not a non-negative integer is a defect", () =>
      Effect.gen(function*() {
        expect(Exit.isFailure(yield* Effect.exit(Progress.make({ total: -1 })))).toBe(true)
        const progress = yield* Progress.make()
        expect(Exit.isFailure(yield* Effect.exit(progress.setTotal(1.5)))).toBe(true)
      }))
  })

  describe("format", () => {
    const snapshot = (counts: Partial<Progress.Counts>, elapsedMillis: number) =>
      Progress.snapshotOf(
        { total: Option.some(300), succeeded: 0, failed: 0, invalid: 0, skipped: 0, retries: 0, inFlight: 0, ...counts },
        elapsedMillis
      )

    it("tty: bar, done/total, failed, retries, running, rate, ETA", () => {
      expect(Progress.format("tty", snapshot({ succeeded: 117, failed: 3, retries: 7, inFlight: 8 }, 3000))).toBe(
        "[████████░░░░░░░░░░░░] 120/300, 3 failed, 7 retries, 8 running, 40.0/s, ETA 5s"
      )
    })

    it.effect("fed outcomes only (the tasks ran in other processes): no retries and no tasks running, not a 0 nobody counted", () =>
      Effect.gen(function*() {
        const progress = yield* Progress.make({ total: 300, outcomesOnly: true })
        yield* TestClock.adjust("3 seconds")
        for (let i = 0; i < 117; i++) yield* progress.succeeded
        for (let i = 0; i < 3; i++) yield* progress.failed
        const snapshot = yield* progress.snapshot
        expect(snapshot.outcomesOnly).toBe(true)
        expect(Progress.format("plain", snapshot)).toBe("120/300 done, 3 failed, 40.0/s, ETA 5s")
        expect(Progress.format("tty", snapshot)).toBe("[████████░░░░░░░░░░░░] 120/300, 3 failed, 40.0/s, ETA 5s")
      }))

    it("plain: no bar; invalid and resumed only when there are some; unknown total: no ETA", () => {
      expect(Progress.format("plain", snapshot({ succeeded: 10, invalid: 2, skipped: 5 }, 10_000))).toBe(
        "17/300 done (5 resumed), 0 failed, 2 invalid, 0 retries, 0 running, 1.0/s, ETA 4m43s"
      )
      expect(Progress.format("plain", { ...snapshot({ succeeded: 4 }, 2000), total: Option.none() })).toBe(
        "4 done, 0 failed, 0 retries, 0 running, 2.0/s"
      )
    })

    it("before any time has passed, or with nothing finished, the rate and ETA are --, never Infinity or NaN", () => {
      expect(Progress.format("plain", snapshot({}, 0))).toBe("0/300 done, 0 failed, 0 retries, 0 running, --/s, ETA --")
      expect(Progress.format("plain", snapshot({ skipped: 10 }, 2000))).toBe(
        "10/300 done (10 resumed), 0 failed, 0 retries, 0 running, 0.0/s, ETA --"
      )
    })

    it("ETA in minutes and hours, rounded up", () => {
      expect(Progress.formatEta(59_200)).toBe("1m00s")
      expect(Progress.formatEta(125_000)).toBe("2m05s")
      expect(Progress.formatEta((3600 + 2 * 60 + 30) * 1000)).toBe("1h02m")
    })
  })

  describe("renderer", () => {
    it.effect("tty: drawn at once, redrawn at most every 100 ms and only when the text changed, ended with a newline", () =>
      Effect.gen(function*() {
        const screen = recording(true)
        const progress = yield* Progress.make({ total: 4 })
        yield* Effect.gen(function*() {
          yield* Progress.renderer()
          yield* Effect.yieldNow()
          expect(screen.writes).toEqual(["\r[░░░░░░░░░░░░░░░░░░░░] 0/4, 0 failed, 0 retries, 0 running, --/s, ETA --\x1b[K"])
          // a hundred changes within 100 ms: one redraw
          for (let i = 0; i < 100; i++) yield* progress.retried
          yield* TestClock.adjust("99 millis")
          expect(screen.writes.length).toBe(1)
          yield* TestClock.adjust("1 millis")
          expect(screen.writes.length).toBe(2)
          // a second with one change: the rate moves every tick, so exactly ten redraws, never more
          yield* progress.succeeded
          for (let i = 0; i < 10; i++) yield* TestClock.adjust("100 millis")
          expect(screen.writes.length).toBe(12)
        }).pipe(Effect.scoped, Effect.provide(screen.layer), Effect.provideService(Progress.Progress, progress))
        expect(screen.writes.slice(-2)).toEqual([
          "\r[█████░░░░░░░░░░░░░░░] 1/4, 0 failed, 100 retries, 0 running, 0.9/s, ETA 4s\x1b[K",
          "\n"
        ])
      }))

    it.effect("issue 7 #4: around clears the line, writes, and redraws, so a record never lands inside the progress line", () =>
      Effect.gen(function*() {
        const screen = recording(true)
        const progress = yield* Progress.make({ total: 2 })
        yield* Effect.gen(function*() {
          const renderer = yield* Progress.renderer()
          yield* Effect.yieldNow()
          yield* renderer.around(Effect.sync(() => void screen.writes.push("{\"id\":\"a\"}\n")))
          yield* renderer.log("resumed")
        }).pipe(Effect.scoped, Effect.provide(screen.layer), Effect.provideService(Progress.Progress, progress))
        const line = "\r[░░░░░░░░░░░░░░░░░░░░] 0/2, 0 failed, 0 retries, 0 running, --/s, ETA --\x1b[K"
        expect(screen.writes).toEqual([line, "\r\x1b[K", "{\"id\":\"a\"}\n", line, "\r\x1b[K", "resumed\n", line, line, "\n"])
      }))

    it.effect("tty: a line wider than the terminal is cut to fit, so it can be redrawn in place", () =>
      Effect.gen(function*() {
        const screen = recording(true, 30)
        yield* Effect.gen(function*() {
          yield* Progress.renderer()
          yield* Effect.yieldNow()
        }).pipe(Effect.scoped, Effect.provide(screen.layer), Effect.provide(Progress.layer({ total: 4 })))
        // 27 characters: three columns are left free, so neither the cursor nor an echoed ^C wraps
        expect(screen.writes[0]).toBe("\r[░░░░░░░░░░░░░░░░░░░░] 0/4,\x1b[K")
      }))

    it.effect("outputTerminal: columns given as an effect are read at each draw (a resized terminal)", () =>
      Effect.gen(function*() {
        const writes: Array<string> = []
        let columns = 30
        const terminal = Progress.outputTerminal({
          display: (text) => Effect.sync(() => void writes.push(text)),
          isTTY: true,
          columns: Effect.sync(() => columns)
        })
        const progress = yield* Progress.make({ total: 4 })
        yield* Effect.gen(function*() {
          yield* Progress.renderer()
          yield* Effect.yieldNow()
          columns = 40
          yield* progress.retried
          yield* TestClock.adjust("100 millis")
        }).pipe(Effect.scoped, Effect.provideService(Terminal.Terminal, terminal), Effect.provideService(Progress.Progress, progress))
        expect(writes.slice(0, 2).map((text) => text.length - "\r\x1b[K".length)).toEqual([27, 37])
      }))

    it.effect("plain: a line every 5 seconds, the first after 5 seconds, the last state at the end", () =>
      Effect.gen(function*() {
        const screen = recording(false)
        const progress = yield* Progress.make()
        yield* Effect.gen(function*() {
          yield* Progress.renderer()
          yield* TestClock.adjust("4999 millis")
          expect(screen.writes).toEqual([])
          for (let i = 0; i < 10; i++) yield* progress.succeeded
          yield* TestClock.adjust("1 millis")
          for (let i = 0; i < 15; i++) yield* progress.succeeded
          yield* TestClock.adjust("5 seconds")
          yield* progress.failed
        }).pipe(Effect.scoped, Effect.provide(screen.layer), Effect.provideService(Progress.Progress, progress))
        expect(screen.writes).toEqual([
          "10 done, 0 failed, 0 retries, 0 running, 2.0/s\n",
          "25 done, 0 failed, 0 retries, 0 running, 2.5/s\n",
          "26 done, 1 failed, 0 retries, 0 running, 2.6/s\n"
        ])
      }))

    it.effect("a terminal that fails stops the drawing, and the run goes on", () =>
      Effect.gen(function*() {
        let attempts = 0
        const broken = Progress.outputTerminal({
          display: () =>
            Effect.suspend(() => {
              attempts++
              return Effect.fail(new SystemError({ module: "Stream", method: "display", reason: "Unknown", description: "closed" }))
            }),
          isTTY: true
        })
        const exit = yield* Effect.gen(function*() {
          yield* Progress.renderer()
          yield* TestClock.adjust("1 second")
        }).pipe(Effect.scoped, Effect.provideService(Terminal.Terminal, broken), Effect.provide(Progress.layer()), Effect.exit)
        expect(Exit.isSuccess(exit)).toBe(true)
        // the first draw failed and nothing was drawn again, apart from the last draw at the end
        expect(attempts).toBe(2)
      }))
  })

  it.effect("issue 11: the flow control on the line: the adaptive limit, the budget left and who waits for it; forgotten when unset", () =>
    Effect.gen(function*() {
      const progress = yield* Progress.make({ total: 10 })
      yield* progress.setFlow({ limit: 24, budgetLeft: 0.456, budgetWaiting: 3 })
      expect(Progress.format("plain", yield* progress.snapshot)).toBe(
        "0/10 done, 0 failed, 0 retries, 0 running, --/s, ETA --, limit 24, budget 46% left (3 waiting)"
      )
      yield* progress.setFlow({ budgetLeft: 1, budgetWaiting: 0 })
      expect(Progress.format("plain", yield* progress.snapshot)).toBe("0/10 done, 0 failed, 0 retries, 0 running, --/s, ETA --, budget 100% left")
      yield* progress.setFlow(undefined)
      expect((yield* progress.snapshot).flow).toBeUndefined()
    }))

  it.effect("issue 19: a budget shared through a store says by how many processes, or that it went local", () =>
    Effect.gen(function*() {
      const progress = yield* Progress.make({ total: 10 })
      yield* progress.setFlow({ budgetLeft: 0.5, budgetWaiting: 0, budgetShared: { store: "redis", processes: 4, mode: "shared" } })
      expect(Progress.format("plain", yield* progress.snapshot)).toBe(
        "0/10 done, 0 failed, 0 retries, 0 running, --/s, ETA --, budget 50% left, budget shared by 4 processes (redis)"
      )
      yield* progress.setFlow({ budgetLeft: 0.5, budgetWaiting: 0, budgetShared: { store: "redis", processes: 4, mode: "local" } })
      expect(Progress.format("plain", yield* progress.snapshot)).toBe(
        "0/10 done, 0 failed, 0 retries, 0 running, --/s, ETA --, budget 50% left, budget local (redis unavailable)"
      )
    }))

  describe("issue 17.7: what the line says near the end of a run", () => {
    const started = (taskId: string) => new AgentEvent.TaskStarted({ taskId })
    const finished = (taskId: string, durationMs: number) =>
      new AgentEvent.TaskFinished({ taskId, status: "succeeded", attempts: 1, durationMs })
    const eta = (progress: Progress.Progress.Service) =>
      Effect.map(progress.snapshot, (snapshot) => Option.getOrThrow(snapshot.etaMillis))

    it.effect("issue 17.7: stragglers waiting on a 30 s timeout are not \"1s\" away: the ETA counts the tasks in flight", () =>
      Effect.gen(function*() {
        const progress = yield* Progress.make({ total: 100 })
        // two tasks hang on a 30 s timeout (then answer on a retry) while 95 answer in 200 ms each
        yield* progress.record(started("h1"))
        yield* progress.record(started("h2"))
        for (let i = 0; i < 95; i++) {
          yield* progress.record(started(`t${i}`))
          yield* TestClock.adjust("200 millis")
          yield* progress.record(finished(`t${i}`, 200))
        }
        yield* TestClock.adjust("11 seconds") // t = 30 s
        for (const id of ["s1", "s2", "s3"]) yield* progress.record(started(id)) // the last three hang too
        yield* TestClock.adjust("200 millis")
        yield* progress.record(finished("h1", 30_200))
        yield* progress.record(finished("h2", 30_200))
        yield* TestClock.adjust("4800 millis") // t = 35 s: 97 of 100 done at 2.8 tasks/s
        const atRate = ((100 - 97) / (97 / 35)) * 1000
        expect(atRate).toBeLessThan(1100) // what the rate alone says: "2s"
        // the tasks that ran 5 s went on to 30.2 s: 25.2 s left
        expect(yield* eta(progress)).toBeCloseTo(25_200, -3)
        yield* TestClock.adjust("10 seconds")
        expect(yield* eta(progress)).toBeCloseTo(15_200, -3) // counting down
        for (const id of ["s1", "s2", "s3"]) yield* progress.record(finished(id, 30_200))
        expect(yield* eta(progress)).toBe(0)
      }))

    it.effect("issue 17.7: a task in flight longer than any that finished is expected to take as long again, never about to end", () =>
      Effect.gen(function*() {
        const progress = yield* Progress.make({ total: 10 })
        yield* progress.record(started("slow"))
        for (let i = 0; i < 8; i++) {
          yield* progress.record(started(`t${i}`))
          yield* TestClock.adjust("100 millis")
          yield* progress.record(finished(`t${i}`, 100))
        }
        yield* progress.record(started("last"))
        yield* TestClock.adjust("9200 millis") // t = 10 s: "slow" has run 10 s, "last" 9.2 s, nothing finished after 100 ms
        expect(yield* eta(progress)).toBe(10_000)
        // the same through track (no task ids)
        const tracked = yield* Progress.make({ total: 5 })
        const quick = yield* Effect.fork(Effect.all(Array.from({ length: 4 }, () => tracked.track(Effect.sleep("1 second"))), {
          concurrency: "unbounded"
        }))
        const hanging = yield* Effect.fork(tracked.track(Effect.never))
        yield* TestClock.adjust("3 seconds")
        yield* Fiber.join(quick)
        expect(yield* eta(tracked)).toBe(3000) // the rate alone: 1 left at 4 in 3 s, 750 ms
        yield* Fiber.interrupt(hanging)
        expect((yield* tracked.snapshot).inFlight).toBe(0)
      }))

    it("issue 17.7: tasks held and calls on the wire are told apart: 32 calling, 968 waiting at --concurrency 32", () => {
      const snapshot = Progress.snapshotOf(
        { total: Option.some(2000), succeeded: 500, failed: 0, invalid: 0, skipped: 0, retries: 40, inFlight: 1000, flow: { calls: 32 } },
        10_000
      )
      expect(Progress.format("plain", snapshot)).toBe("500/2000 done, 0 failed, 40 retries, 32 calling, 968 waiting, 50.0/s, ETA 30s")
      expect(Progress.format("plain", { ...snapshot, flow: {} })).toBe(
        "500/2000 done, 0 failed, 40 retries, 1000 running, 50.0/s, ETA 30s"
      )
    })

    it.effect("issue 17.7: Ctrl-C's ^C, echoed after a line as wide as the terminal, is drawn over by the last draw", () =>
      Effect.gen(function*() {
        const screen = recording(true, 40)
        const progress = yield* Progress.make({ total: 300 })
        yield* Effect.gen(function*() {
          yield* Progress.renderer()
          yield* Effect.yieldNow()
          screen.writes.push("^C") // what the terminal echoes when Ctrl-C is pressed
        }).pipe(Effect.scoped, Effect.provide(screen.layer), Effect.provideService(Progress.Progress, progress))
        const rows = Screen.rows(screen.writes.join(""), 40)
        expect(rows.filter((row) => row.includes("^") || row.includes("C"))).toEqual([])
        expect(rows).toEqual(["[░░░░░░░░░░░░░░░░░░░░] 0/300, 0 faile", ""])
      }))
  })
})
