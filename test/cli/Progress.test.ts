import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Ref, TestClock } from "effect"
import * as Progress from "../../src/cli/Progress.js"
import * as Stdio from "../../src/cli/Stdio.js"
import * as Screen from "./Screen.js"
import * as TestStdio from "./TestStdio.js"

const snapshot = (overrides: Partial<Progress.Snapshot> = {}): Progress.Snapshot => ({
  done: 120,
  answeredAhead: 0,
  total: Option.some({ lines: 300, estimated: false }),
  failed: 3,
  retries: 7,
  finished: 120,
  elapsedMillis: 3000,
  ...overrides
})

describe("Progress", () => {
  describe("render (seed bug 13: counts, rate and ETA, not a bare percentage)", () => {
    it("tty: bar, done/total, failed, retries, rate, ETA, redrawn in place", () => {
      expect(Progress.render("tty", snapshot())).toBe(
        "\r[████████░░░░░░░░░░░░] 120/300, 3 failed, 7 retries, 40.0/s, ETA 5s\x1b[K"
      )
    })

    it("plain: one line per report, no bar, no control characters", () => {
      expect(Progress.render("plain", snapshot())).toBe("120/300 done, 3 failed, 7 retries, 40.0/s, ETA 5s\n")
    })

    it("unknown total (stdin): no bar and no ETA", () => {
      expect(Progress.render("tty", snapshot({ total: Option.none() }))).toBe(
        "\r120 done, 3 failed, 7 retries, 40.0/s\x1b[K"
      )
      expect(Progress.render("plain", snapshot({ total: Option.none() }))).toBe(
        "120 done, 3 failed, 7 retries, 40.0/s\n"
      )
    })

    it("before any time has passed the rate and ETA are --, not Infinity or NaN", () => {
      expect(Progress.render("plain", snapshot({ done: 0, failed: 0, retries: 0, finished: 0, elapsedMillis: 0 }))).toBe(
        "0/300 done, 0 failed, 0 retries, --/s, ETA --\n"
      )
      expect(Progress.render("plain", snapshot({ done: 0, finished: 0, elapsedMillis: 2000 }))).toBe(
        "0/300 done, 3 failed, 7 retries, 0.0/s, ETA --\n"
      )
    })

    it("finished: full bar and ETA 0s; lines an earlier run answered count as done", () => {
      expect(Progress.render("tty", snapshot({ done: 300, finished: 150, elapsedMillis: 10_000 }))).toBe(
        "\r[████████████████████] 300/300, 3 failed, 7 retries, 15.0/s, ETA 0s\x1b[K"
      )
    })

    it("issue 7.2: a total estimated from the bytes read so far shows as ~N", () => {
      expect(Progress.render("plain", snapshot({ total: Option.some({ lines: 300, estimated: true }) }))).toBe(
        "120/~300 done, 3 failed, 7 retries, 40.0/s, ETA 5s\n"
      )
      expect(Progress.render("tty", snapshot({ total: Option.some({ lines: 300, estimated: true }) }))).toBe(
        "\r[████████░░░░░░░░░░░░] 120/~300, 3 failed, 7 retries, 40.0/s, ETA 5s\x1b[K"
      )
    })

    it("issue 7.9: on resume the ETA counts neither the skipped lines in the rate nor those still ahead as work", () => {
      // 100 lines, the last 50 answered by an earlier run: 25 run in 5 s, none of the 50 reached yet
      const resumed = snapshot({ done: 25, finished: 25, failed: 0, retries: 0, answeredAhead: 50, elapsedMillis: 5000 })
      expect(Progress.render("plain", resumed)).toBe("25/300 done, 0 failed, 0 retries, 5.0/s, ETA 45s\n")
      expect(Progress.render("plain", { ...resumed, total: Option.some({ lines: 100, estimated: false }) }))
        .toBe("25/100 done, 0 failed, 0 retries, 5.0/s, ETA 5s\n")
      // the 50 reached and skipped in no time: they are done, and the rate is still 5/s, not 15/s
      expect(Progress.render("plain", { ...resumed, done: 75, answeredAhead: 0, total: Option.some({ lines: 100, estimated: false }) }))
        .toBe("75/100 done, 0 failed, 0 retries, 5.0/s, ETA 5s\n")
    })

    it("ETA in minutes and hours", () => {
      expect(Progress.formatEta(59.2)).toBe("1m00s")
      expect(Progress.formatEta(125)).toBe("2m05s")
      expect(Progress.formatEta(3600 + 2 * 60 + 30)).toBe("1h02m")
      expect(Progress.render("plain", snapshot({ done: 10, finished: 10, elapsedMillis: 10_000 }))).toBe(
        "10/300 done, 3 failed, 7 retries, 1.0/s, ETA 4m50s\n"
      )
    })
  })

  describe("start", () => {
    it.effect("tty: drawn at once, redrawn every 100 ms on the Clock, ended with a newline", () =>
      Effect.gen(function*() {
        const stdio = TestStdio.make({ isTTY: true })
        const counts = yield* Ref.make({ done: 0, failed: 0, retries: 0, finished: 0 })
        yield* Effect.gen(function*() {
          yield* Progress.start(Ref.get(counts), { mode: "tty", total: Effect.succeed(Option.some({ lines: 4, estimated: false })) })
          yield* Effect.yieldNow()
          expect(stdio.stderrWrites).toEqual([
            "\r[░░░░░░░░░░░░░░░░░░░░] 0/4, 0 failed, 0 retries, --/s, ETA --\x1b[K"
          ])
          yield* Ref.set(counts, { done: 2, failed: 1, retries: 3, finished: 2 })
          yield* TestClock.adjust("100 millis")
          expect(stdio.stderrWrites.length).toBe(2)
          expect(stdio.stderrWrites[1]).toBe(
            "\r[██████████░░░░░░░░░░] 2/4, 1 failed, 3 retries, 20.0/s, ETA 1s\x1b[K"
          )
          yield* Ref.set(counts, { done: 4, failed: 1, retries: 3, finished: 4 })
          yield* TestClock.adjust("100 millis")
        }).pipe(Effect.scoped, Effect.provide(stdio.layer))
        expect(stdio.stderrWrites.slice(2)).toEqual([
          "\r[████████████████████] 4/4, 1 failed, 3 retries, 20.0/s, ETA 0s\x1b[K",
          "\r[████████████████████] 4/4, 1 failed, 3 retries, 20.0/s, ETA 0s\x1b[K",
          "\n"
        ])
      }))

    it.effect("issue 7.4: above clears the terminal line before a write and draws it again after, so they never share a row", () =>
      Effect.gen(function*() {
        const stdio = TestStdio.make({ isTTY: true, stdoutIsTTY: true })
        const counts = yield* Ref.make({ done: 0, failed: 0, retries: 0, finished: 0 })
        yield* Effect.gen(function*() {
          const line = yield* Progress.start(Ref.get(counts), { mode: "tty", total: Effect.succeed(Option.none()) })
          yield* Effect.yieldNow()
          for (const id of ["a", "b"]) {
            yield* Ref.update(counts, (c) => ({ ...c, done: c.done + 1, finished: c.finished + 1 }))
            yield* line.above(Effect.flatMap(Stdio.Stdio, (io) => io.stdout(`{"id":"${id}"}\n`)))
            yield* TestClock.adjust("50 millis")
          }
        }).pipe(Effect.scoped, Effect.provide(stdio.layer))
        expect(Screen.rows(stdio.terminal())).toEqual([
          '{"id":"a"}',
          '{"id":"b"}',
          "2 done, 0 failed, 0 retries, 20.0/s",
          ""
        ])
        const write = Effect.succeed(1)
        expect(Progress.none.above(write)).toBe(write)
      }))

    it.effect("plain: a line every 5 seconds, the first one after 5 seconds, nothing at the end", () =>
      Effect.gen(function*() {
        const stdio = TestStdio.make({ isTTY: false })
        const counts = yield* Ref.make({ done: 0, failed: 0, retries: 0, finished: 0 })
        yield* Effect.gen(function*() {
          yield* Progress.start(Ref.get(counts), { mode: "plain", total: Effect.succeed(Option.none()) })
          yield* TestClock.adjust("4999 millis")
          expect(stdio.stderrWrites).toEqual([])
          yield* Ref.set(counts, { done: 10, failed: 0, retries: 1, finished: 10 })
          yield* TestClock.adjust("1 millis")
          yield* Ref.set(counts, { done: 25, failed: 2, retries: 4, finished: 25 })
          yield* TestClock.adjust("5 seconds")
        }).pipe(Effect.scoped, Effect.provide(stdio.layer))
        expect(stdio.stderrWrites).toEqual([
          "10 done, 0 failed, 1 retries, 2.0/s\n",
          "25 done, 2 failed, 4 retries, 2.5/s\n"
        ])
      }))
  })

  it("issue 6: while a circuit is open the line says so, and when it will probe", () => {
    const open = snapshot({ circuits: [{ breaker: "embedded", state: "open", probeAtMillis: 13_000 }], nowMillis: 1_000 })
    expect(Progress.render("plain", open)).toBe(
      "120/300 done, 3 failed, 7 retries, 40.0/s, ETA 5s, circuit embedded open (probe in 12s)\n"
    )
    const probing = snapshot({ circuits: [{ breaker: "embedded", state: "half-open" }], nowMillis: 13_000 })
    expect(Progress.render("plain", probing)).toBe(
      "120/300 done, 3 failed, 7 retries, 40.0/s, ETA 5s, circuit embedded half-open (probing)\n"
    )
  })
})
