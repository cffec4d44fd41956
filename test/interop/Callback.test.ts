import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Logger, Metric, Option, Schema, TestClock } from "effect"
import * as Callback from "../../src/interop/Callback.js"

class ApiFailed extends Schema.TaggedError<ApiFailed>()("ApiFailed", { reason: Schema.String }) {}
const onError = (error: unknown) => new ApiFailed({ reason: error instanceof Error ? error.message : String(error) })

/** Lets every forked fiber run until it is suspended. */
const settle = TestClock.adjust(0)

/** A Node-style API whose callbacks the test calls by hand. */
const fakeApi = () => {
  const pending: Array<Callback.NodeCallback<string>> = []
  let cancelled = 0
  const api = (input: string, callback: Callback.NodeCallback<string>) => {
    pending.push(callback)
    return { input, cancel: () => cancelled++ }
  }
  return { api, pending, cancelled: () => cancelled }
}

describe("Callback", () => {
  it.effect("fromNode: the callback's value and its error, typed through onError", () =>
    Effect.gen(function*() {
      const { api, pending } = fakeApi()
      const call = Callback.fromNode(api, { onError })
      const ok = yield* Effect.fork(call("a"))
      const ko = yield* Effect.fork(Effect.flip(call("b")))
      yield* settle
      pending[0]!(null, "value of a")
      pending[1]!(new Error("b is broken"))
      expect(yield* Fiber.join(ok)).toBe("value of a")
      const error = yield* Fiber.join(ko)
      expect(error).toBeInstanceOf(ApiFailed)
      expect(error.reason).toBe("b is broken")
    }))

  it.effect("interrupting the Effect aborts the signal and calls the canceler", () =>
    Effect.gen(function*() {
      let signal: AbortSignal | undefined
      let cancelled = 0
      const fiber = yield* Effect.fork(
        Callback.async<string, ApiFailed>((_callback, s) => {
          signal = s
          return () => cancelled++
        }, { onError })
      )
      yield* settle
      expect(signal!.aborted).toBe(false)
      yield* Fiber.interrupt(fiber)
      expect(signal!.aborted).toBe(true)
      expect(cancelled).toBe(1)
    }))

  it.effect("fromNode with `cancel`: interruption cancels what the function returned", () =>
    Effect.gen(function*() {
      const { api, cancelled } = fakeApi()
      const call = Callback.fromNode(api, { onError, cancel: (handle) => handle.cancel() })
      const fiber = yield* Effect.fork(call("a"))
      yield* settle
      yield* Fiber.interrupt(fiber)
      expect(cancelled()).toBe(1)
    }))

  it.effect("a callback called twice is ignored the second time and reported, not a crash", () =>
    Effect.gen(function*() {
      const extras: Array<Callback.ExtraCall> = []
      const value = yield* Callback.async<string, ApiFailed>((callback) => {
        callback(null, "first")
        callback(null, "second")
        callback(new Error("third"))
      }, { name: "flaky-api", onError, onExtraCall: (extra) => Effect.sync(() => extras.push(extra)) })
      expect(value).toBe("first")
      yield* settle
      expect(extras.map(({ call, name, value }) => [name, call, value])).toEqual([["flaky-api", 2, "second"], ["flaky-api", 3, undefined]])
      expect((extras[1]!.error as Error).message).toBe("third")
    }))

  it.effect("by default a second call is a warning in Effect's log and a metric", () =>
    Effect.gen(function*() {
      const logs: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => logs.push(`${logLevel.label}: ${String(message)}`))
      const value = yield* Callback.async<string, ApiFailed>((callback) => {
        callback(null, "first")
        callback(null, "again")
      }, { name: "double-api", onError }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      yield* settle
      expect(value).toBe("first")
      expect(logs).toEqual(["WARN: double-api: callback called again (call 2); ignored"])
      const count = yield* Metric.value(Metric.tagged(Callback.metrics.extraCalls, "api", "double-api"))
      expect(count.count).toBe(1)
    }))

  it.effect("a register that throws fails through onError; an onError that throws is a defect", () =>
    Effect.gen(function*() {
      const thrown = yield* Effect.flip(Callback.async<string, ApiFailed>(() => {
        throw new Error("bad arguments")
      }, { onError }))
      expect(thrown.reason).toBe("bad arguments")
      const exit = yield* Effect.exit(Callback.async<string, ApiFailed>((callback) => callback("x"), {
        onError: () => {
          throw new Error("mapping bug")
        }
      }))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
    }))

  it.effect("fromPromise: interruption aborts the signal; a rejection is typed through onError", () =>
    Effect.gen(function*() {
      let aborted = false
      const hang = Callback.fromPromise(
        (_: string, signal: AbortSignal) =>
          new Promise<string>((_, reject) => {
            signal.addEventListener("abort", () => {
              aborted = true
              reject(new Error("aborted"))
            })
          }),
        { onError }
      )
      const fiber = yield* Effect.fork(hang("x"))
      yield* settle
      yield* Fiber.interrupt(fiber)
      expect(aborted).toBe(true)
      const reject = Callback.fromPromise((reason: string, _signal: AbortSignal) => Promise.reject(new Error(reason)), { onError })
      expect((yield* Effect.flip(reject("refused"))).reason).toBe("refused")
    }))

  it.effect("runner.runPromise: resolves with the value, rejects with the typed error itself", () =>
    Effect.gen(function*() {
      const run = yield* Callback.runner()
      expect(yield* Effect.promise(() => run.runPromise(Effect.succeed(42)))).toBe(42)
      const rejected = yield* Effect.promise(() =>
        run.runPromise(Effect.fail(new ApiFailed({ reason: "no" }))).then(() => undefined, (error: unknown) => error)
      )
      expect(rejected).toBeInstanceOf(ApiFailed)
    }))

  it.effect("runner.runPromise: aborting the signal interrupts the effect, which runs under the caller's TestClock", () =>
    Effect.gen(function*() {
      const run = yield* Callback.runner()
      let interrupted = false
      const controller = new AbortController()
      const promise = run.runPromise(
        Effect.onInterrupt(Effect.sleep("1 hour"), () => Effect.sync(() => (interrupted = true))),
        { signal: controller.signal }
      )
      const outcome = promise.then(() => "resolved", (error: unknown) => Cause.isInterruptedException(error) ? "interrupted" : "other")
      yield* settle
      controller.abort()
      expect(yield* Effect.promise(() => outcome)).toBe("interrupted")
      expect(interrupted).toBe(true)
      // and without the abort, an hour of TestClock time resolves it at once
      const slow = run.runPromise(Effect.as(Effect.sleep("1 hour"), "done"))
      yield* TestClock.adjust("1 hour")
      expect(yield* Effect.promise(() => slow)).toBe("done")
    }))

  it.effect("runner.toNode: the callback is called once, Node-style; the returned function interrupts the run", () =>
    Effect.gen(function*() {
      const run = yield* Callback.runner()
      const double = run.toNode((n: number) => Effect.as(Effect.sleep(10), n * 2))
      const calls: Array<[unknown, unknown]> = []
      double(21, (error, value) => calls.push([error, value]))
      yield* TestClock.adjust(10)
      yield* Effect.yieldNow()
      expect(calls).toEqual([[null, 42]])
      const cancel = double(1, (error) => calls.push([Cause.isInterruptedException(error), undefined]))
      yield* settle
      cancel()
      yield* settle
      expect(calls).toEqual([[null, 42], [true, undefined]])
    }))

  it.effect("fromNode keeps working when the callback comes late after an interruption", () =>
    Effect.gen(function*() {
      const { api, pending } = fakeApi()
      const extras: Array<Callback.ExtraCall> = []
      const call = Callback.fromNode(api, { onError, onExtraCall: (extra) => Effect.sync(() => extras.push(extra)) })
      const fiber = yield* Effect.fork(call("a"))
      yield* settle
      yield* Fiber.interrupt(fiber)
      // the API answers anyway: that first call is not an extra one, and changes nothing
      pending[0]!(null, "too late")
      expect(extras).toEqual([])
      expect(Option.isNone(yield* Fiber.poll(fiber)) ? "running" : "done").toBe("done")
    }))
})
