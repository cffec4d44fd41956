import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Effect, Exit, Fiber, Layer, Option, TestClock } from "effect"
import * as AskCommand from "../../src/cli/AskCommand.js"
import * as Cli from "../../src/cli/Cli.js"
import * as TestStdio from "./TestStdio.js"

/** Run `wiz <args>` under TestClock to its end, as main.ts does: the exit and its code. */
const wiz = (stdio: TestStdio.TestStdio, ...args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const fiber = yield* Cli.run(["node", "wiz", ...args]).pipe(
      Effect.tapErrorCause(Cli.report),
      Effect.exit,
      Effect.provide(Layer.merge(NodeContext.layer, stdio.layer)),
      Effect.fork
    )
    while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust("100 millis")
    const exit = yield* Fiber.join(fiber)
    return { exit, code: Cli.exitCode(exit) }
  })

const prompt = "Summarise: Effect is a TypeScript library for typed, composable and testable programs."
const instant = ["--time-to-first-token", "0 millis", "--per-token", "0 millis"]

describe("wiz ask", () => {
  it.effect("streams the answer to stdout as it arrives, chunk by chunk, and ends it with a newline", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make()
      const fiber = yield* Cli.run(["node", "wiz", "ask", prompt, "--time-to-first-token", "500ms", "--per-token", "100ms", "--seed", "1"]).pipe(
        Effect.provide(Layer.merge(NodeContext.layer, stdio.layer)),
        Effect.fork
      )
      // before the first token: nothing; then the answer grows while the stream goes on
      yield* TestClock.adjust("400 millis")
      expect(stdio.stdout()).toBe("")
      const seen: Array<string> = []
      while (Option.isNone(yield* Fiber.poll(fiber))) {
        yield* TestClock.adjust("100 millis")
        if (seen.at(-1) !== stdio.stdout()) seen.push(stdio.stdout())
      }
      expect(Exit.isSuccess(yield* Fiber.await(fiber))).toBe(true)
      const answer = stdio.stdout()
      // printed in several steps, each a prefix of the whole answer
      expect(seen.length).toBeGreaterThan(3)
      for (const text of seen) expect(answer.startsWith(text)).toBe(true)
      expect(answer.length).toBeGreaterThan(20)
      expect(answer.endsWith("\n")).toBe(true)
      expect(stdio.stderr()).toBe("")
    }))

  it.effect("a stream that breaks mid-answer: the part printed ends its line, exit 1 with AskFailed saying how much and that --continue helps", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make()
      const { code, exit } = yield* wiz(stdio, "ask", prompt, "--mid-stream-failure-rate", "1", "--seed", "1", ...instant)
      expect(code).toBe(1)
      const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      expect(error).toBeInstanceOf(AskCommand.AskFailed)
      const failed = error as AskCommand.AskFailed
      const printed = stdio.stdout()
      expect(printed.endsWith("\n")).toBe(true)
      expect(failed.printedChars).toBeGreaterThan(0)
      // what was printed is what the error says (and the newline ending the line)
      expect(printed.length).toBe(failed.printedChars + 1)
      expect([failed.couldContinue, failed.error._tag]).toEqual([true, "Unavailable"])
      expect(stdio.stderr()).toContain(
        `wiz: the answer broke off after ${failed.printedChars} characters (printed above): Unavailable: `
      )
      expect(stdio.stderr()).toContain("--continue asks the model to go on from there")
    }))

  it.effect("issue 18.2: --deadline bounds the whole answer: a stream trickling a token a second (never silent long enough to time out) ends at it", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make()
      const started = yield* Clock.currentTimeMillis
      const { code, exit } = yield* wiz(stdio, "ask", prompt, "--seed", "1", "--time-to-first-token", "0 millis", "--per-token", "1 second", "--deadline", "5 seconds")
      expect(code).toBe(1)
      // the loop above moves the clock 100 ms at a time: it ends in the step that holds the deadline
      expect((yield* Clock.currentTimeMillis) - started).toBeLessThanOrEqual(5100)
      const failed = Exit.isFailure(exit) ? Cause.squash(exit.cause) as AskCommand.AskFailed : undefined
      expect(failed?.error._tag).toBe("DeadlineExceeded")
      expect(failed?.error.message).toMatch(/^no result within 5s \(1 attempts\); waiting for the rest of the answer \(\d+ characters delivered\)$/)
      expect(failed!.printedChars).toBeGreaterThan(0)
      expect(stdio.stdout().length).toBe(failed!.printedChars + 1)
      // the same answer, given time, is whole: the deadline cut it
      const whole = TestStdio.make()
      expect((yield* wiz(whole, "ask", prompt, "--seed", "1", ...instant)).code).toBe(0)
      expect(whole.stdout().startsWith(stdio.stdout().slice(0, -1))).toBe(true)
      expect(whole.stdout().length).toBeGreaterThan(stdio.stdout().length)
    }))

  it.effect("--continue: a stream that breaks is continued from the text printed; the answer is the unbroken one, no word repeated", () =>
    Effect.gen(function*() {
      const whole = TestStdio.make()
      expect((yield* wiz(whole, "ask", prompt, "--seed", "2", ...instant)).code).toBe(0)
      const broken = TestStdio.make()
      const { code } = yield* wiz(broken, "ask", prompt, "--continue", "--mid-stream-failure-rate", "0.5", "--seed", "2", ...instant)
      expect(code).toBe(0)
      expect(broken.stdout()).toBe(whole.stdout())
      // what the policies did is said on stderr, after the answer
      expect(broken.stderr()).toMatch(/^wiz: the stream broke after \d+ characters \(Unavailable\) and embedded continued it\n$/)

      // a stream that breaks every time: continued up to 3 times, then AskFailed; what was
      // printed is still the start of the answer, with nothing repeated
      const always = TestStdio.make()
      const failed = yield* wiz(always, "ask", prompt, "--continue", "--mid-stream-failure-rate", "1", "--seed", "2", ...instant)
      expect(failed.code).toBe(1)
      expect(always.stderr().match(/and embedded continued it/g)).toHaveLength(3)
      const printed = always.stdout().slice(0, -1)
      expect(printed.length).toBeGreaterThan(0)
      expect(whole.stdout().startsWith(printed)).toBe(true)
      expect(always.stderr()).toContain(`wiz: the answer broke off after ${printed.length} characters (printed above): Unavailable: `)
      expect(always.stderr()).not.toContain("--continue asks")
    }))

  it.effect("a model that never answers: retried before the first chunk, then exit 1 with no answer, and the retries said", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make()
      const { code } = yield* wiz(stdio, "ask", prompt, "--failure-rate", "1", "--retries", "2", "--timeout", "1s", "--seed", "2", ...instant)
      expect(code).toBe(1)
      expect(stdio.stdout()).toBe("")
      expect(stdio.stderr()).toMatch(/^wiz: 2 retries before the answer started\nwiz: no answer: /)
    }))

  it.effect("shares wiz run's model options and their checks; an empty prompt or a closed stdout is refused before any call", () =>
    Effect.gen(function*() {
      const embeddedUrl = TestStdio.make()
      expect((yield* wiz(embeddedUrl, "ask", prompt, "--base-url", "http://localhost:8080/v1")).code).toBe(2)
      expect(embeddedUrl.stderr()).toBe("wiz: --base-url and --api-key-env apply only to --model openai-compatible\n")
      const noName = TestStdio.make()
      expect((yield* wiz(noName, "ask", prompt, "--model", "openai-compatible", "--base-url", "http://localhost:8080/v1")).code).toBe(2)
      expect(noName.stderr()).toMatch(/^wiz: --model openai-compatible needs --base-url URL and --model-name NAME/)
      const empty = TestStdio.make()
      expect((yield* wiz(empty, "ask", "  ")).code).toBe(2)
      expect(empty.stderr()).toBe("wiz: the prompt is empty: wiz ask \"what to ask\"\n")
      const closed = TestStdio.make({ stdoutClosed: true })
      expect((yield* wiz(closed, "ask", prompt, ...instant)).code).toBe(1)
      expect(closed.stderr()).toContain("standard output is closed, so the answer would be lost")
    }))
})
