import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, FiberId, Layer, Option, TestClock } from "effect"
import * as Cli from "../../src/cli/Cli.js"
import * as TestStdio from "./TestStdio.js"

/** Run `wiz <args>` as main.ts does (report on failure), returning the exit code. */
const wiz = (stdio: TestStdio.TestStdio, ...args: ReadonlyArray<string>) =>
  Cli.run(["node", "wiz", ...args]).pipe(
    Effect.tapErrorCause(Cli.report),
    Effect.exit,
    Effect.map(Cli.exitCode),
    Effect.provide(Layer.merge(NodeContext.layer, stdio.layer))
  )

const instant = ["--time-to-first-token", "0 millis", "--per-token", "0 millis", "--no-progress"]

describe("Cli", () => {
  it.effect("an unreadable input exits 1 with a message naming the path, and writes no record", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make()
      expect(yield* wiz(stdio, "run", "/no/such/tasks.jsonl", ...instant)).toBe(1)
      expect(stdio.stderr()).toBe(
        "wiz: cannot read input \"/no/such/tasks.jsonl\": NotFound: ENOENT: no such file or directory, stat '/no/such/tasks.jsonl'\n"
      )
      expect(stdio.stdout()).toBe("")
    }))

  it.effect("--model openai-compatible without --model-name is a usage error (exit 2) saying what it needs", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({ stdin: "" })
      expect(yield* wiz(stdio, "run", "--model", "openai-compatible", "--base-url", "http://localhost:8080/v1", "-")).toBe(2)
      expect(stdio.stderr()).toBe(
        "wiz: --model openai-compatible needs --base-url URL and --model-name NAME (and --api-key-env VAR if the API wants a key)\n"
      )
    }))

  it.effect("--resume without --output is a usage error (exit 2)", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({ stdin: "" })
      expect(yield* wiz(stdio, "run", "--resume", "-")).toBe(2)
      expect(stdio.stderr()).toBe("wiz: --resume needs --output FILE: it skips the tasks that file already records\n")
    }))

  it.effect("--base-url with the embedded model is a usage error, not silently ignored", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({ stdin: "" })
      expect(yield* wiz(stdio, "run", "--base-url", "http://localhost:8080/v1", "-")).toBe(2)
      expect(stdio.stderr()).toBe("wiz: --base-url and --api-key-env apply only to --model openai-compatible\n")
    }))

  it.effect("--outage-after without --outage-for, or the other way round, is a usage error (exit 2)", () =>
    Effect.gen(function*() {
      for (const args of [["--outage-after", "3 seconds"], ["--outage-for", "1 second"]]) {
        const stdio = TestStdio.make({ stdin: "" })
        expect(yield* wiz(stdio, "run", ...args, "-")).toBe(2)
        expect(stdio.stderr()).toBe(
          "wiz: --outage-after and --outage-for go together: when the simulated outage starts and how long it lasts\n"
        )
      }
    }))

  it.effect("a bad option value is a usage error (exit 2) printed by the parser, not reported twice", () =>
    Effect.gen(function*() {
      for (const args of [
        ["--timeout", "soon"], ["--timeout", "0 millis"], ["--concurrency", "0"], ["--failure-rate", "1.5"], ["--retries", "-1"],
        ["--outage-after", "soon"], ["--outage-for", "0 millis"], ["--breaker-open", "0 millis"]
      ]) {
        const stdio = TestStdio.make({ stdin: "" })
        expect(yield* wiz(stdio, "run", ...args, "-")).toBe(2)
        expect(stdio.stderr()).toBe("")
      }
    }))

  it.effect("exit 0 when every task was processed, even when some failed", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({
        stdin: Array.from({ length: 20 }, (_, i) => `{"id":"t${i}","prompt":"Reply to ticket ${i}."}`).join("\n")
      })
      const fiber = yield* Effect.fork(
        wiz(stdio, "run", "--failure-rate", "0.5", "--retries", "0", "--seed", "3", "--timeout", "1 second", ...instant, "-")
      )
      while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(fiber)).toBe(0)
      const records = stdio.stdout().trim().split("\n").map((line) => JSON.parse(line) as { status: string })
      expect(records.length).toBe(20)
      expect(records.some((r) => r.status === "failed")).toBe(true)
    }))

  it("exit codes: 0 success, 2 usage, 1 other failures, 130 interrupted; a defect is reported whole", () => {
    expect(Cli.exitCode(Exit.void)).toBe(0)
    expect(Cli.exitCode(Exit.interrupt(FiberId.none))).toBe(130)
    expect(Cli.exitCode(Exit.fail(new Error("boom")))).toBe(1)
    expect(Cli.exitCode(Exit.die(new Error("bug")))).toBe(1)
  })

  it.effect("report: a defect prints its cause; an interruption prints nothing", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make()
      yield* Cli.report(Cause.die(new Error("bug"))).pipe(Effect.provide(stdio.layer))
      expect(stdio.stderr()).toMatch(/^wiz: Error: bug\n/)
      const quiet = TestStdio.make()
      yield* Cli.report(Cause.interrupt(FiberId.none)).pipe(Effect.provide(quiet.layer))
      expect(quiet.stderr()).toBe("")
    }))
})
