import { FileSystem } from "@effect/platform"
import { SystemError } from "@effect/platform/Error"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Cause, ConfigProvider, Effect, Exit, Fiber, FiberId, Option, TestClock } from "effect"
import * as Cli from "../../src/cli/Cli.js"
import * as TestStdio from "./TestStdio.js"
import * as Wiz from "./Wiz.js"

/** Run `wiz <args>` as main.ts does (report on failure), returning the exit code. */
const wiz = Wiz.exitCode

const instant = ["--time-to-first-token", "0 millis", "--per-token", "0 millis", "--no-progress"]

const task = (id: string) => `{"id":"${id}","prompt":"Summarise ticket ${id}."}`

/** Run to the end under TestClock. */
const wizToEnd = (stdio: TestStdio.TestStdio, ...args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(wiz(stdio, ...args))
    while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust("1 second")
    return yield* Fiber.join(fiber)
  })

const withNoColor = (value: string) => Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["NO_COLOR", value]])))

const ESC = "\x1b"

describe("Cli", () => {
  it.effect("an unreadable input exits 1 with a message naming the path, and writes no record", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make()
      expect(yield* wiz(stdio, "run", "/no/such/tasks.jsonl", ...instant)).toBe(1)
      expect(stdio.stderr()).toBe(
        "wiz: cannot read input \"/no/such/tasks.jsonl\": ENOENT: no such file or directory, open '/no/such/tasks.jsonl'\n"
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

  it.effect("a bad option value is a usage error (exit 2) that names the option, printed once", () =>
    Effect.gen(function*() {
      for (const [args, message] of [
        [["--timeout", "soon"], '--timeout: "soon" is not a duration (write e.g. "30s", "500ms", "2m" or "10 seconds")'],
        [["--timeout", "0 millis"], "--timeout must be longer than 0"],
        [["--concurrency", "0"], "--concurrency must be at least 1 (got 0)"],
        [["--failure-rate", "1.5"], "--failure-rate must be between 0 and 1 (got 1.5)"],
        [["--failure-rate", "half"], '--failure-rate: "half" is not a number'],
        [["--retries", "-1"], "--retries must be at least 0 (got -1)"],
        [["--seed", "x"], '--seed: "x" is not a whole number'],
        [["--outage-after", "soon"], '--outage-after: "soon" is not a duration (write e.g. "30s", "500ms", "2m" or "10 seconds")'],
        [["--outage-for", "0 millis"], "--outage-for must be longer than 0"],
        [["--breaker-open", "0"], "--breaker-open must be longer than 0"],
        [["--concurrency", "fast"], '--concurrency: "fast" is neither a whole number nor adaptive'],
        [["--tpm", "0"], "--tpm must be at least 1 (got 0)"],
        [["--provider-capacity", "many"], '--provider-capacity: "many" is not a whole number']
      ] as const) {
        const stdio = TestStdio.make({ stdin: "" })
        expect(yield* wiz(stdio, "run", ...args, "-")).toBe(2)
        expect(stdio.stderr()).toBe(`wiz: ${message}\n`)
      }
      // options that parse but do not go together: a usage error of its own
      const http = TestStdio.make({ stdin: "" })
      expect(yield* wiz(http, "run", "--model", "openai-compatible", "--base-url", "http://127.0.0.1:9/v1", "--model-name", "m", "--provider-tpm", "10", "-"))
        .toBe(2)
      expect(http.stderr()).toBe(
        "wiz: --provider-rpm, --provider-tpm and --provider-capacity simulate the embedded model's limits: --model embedded only\n"
      )
    }))

  it.effect("issue 7.10: --concurrency 1.5 names the option, not \"'1.5' is not a integer\"", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({ stdin: "" })
      expect(yield* wiz(stdio, "run", "--concurrency", "1.5", "-")).toBe(2)
      expect(stdio.stderr()).toBe('wiz: --concurrency: "1.5" is neither a whole number nor adaptive\n')
    }))

  it.effect("issue 7.10: durations are accepted as the help prints them (30s, 500ms, 2m) as well as 30 seconds", () =>
    Effect.gen(function*() {
      for (const timeout of ["30s", "500ms", "2m", "1m 30s", "30 seconds"]) {
        const stdio = TestStdio.make({ stdin: task("a") })
        expect(yield* wizToEnd(stdio, "run", "--timeout", timeout, "--time-to-first-token", "20ms", "--per-token", "0", "--no-progress")).toBe(0)
        expect(JSON.parse(stdio.stdout())).toMatchObject({ id: "a", status: "succeeded" })
      }
      const help = TestStdio.make()
      yield* wiz(help, "run", "--help")
      expect(help.stdout()).toContain("(default 30s)")
    }))

  it.effect("issue 7.10: help on a pipe has no ANSI escapes, and its usage line reads wiz run", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make()
      expect(yield* wiz(stdio, "run", "--help")).toBe(0)
      expect(stdio.stdout()).toContain("\nUsage: wiz run [options] [<input>]\n")
      expect(stdio.stdout()).not.toContain(ESC)
      // the same with the options before --help, and -h
      const short = TestStdio.make()
      expect(yield* wiz(short, "run", "-o", "x.jsonl", "-h")).toBe(0)
      expect(short.stdout()).toBe(stdio.stdout())
    }))

  it.effect("issue 7.10: help on a terminal is coloured, unless NO_COLOR is set (and not empty)", () =>
    Effect.gen(function*() {
      const tty = TestStdio.make({ stdoutIsTTY: true })
      yield* wiz(tty, "run", "--help").pipe(withNoColor(""))
      expect(tty.stdout()).toContain(ESC)
      const noColor = TestStdio.make({ stdoutIsTTY: true })
      yield* wiz(noColor, "run", "--help").pipe(withNoColor("1"))
      expect(noColor.stdout()).not.toContain(ESC)
      expect(noColor.stdout()).toContain("Usage: wiz run [options]")
    }))

  it.effect("issue 7.10: wiz run - -o FILE reads stdin: options may come after -", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const stdio = TestStdio.make({ stdin: `${task("a")}\n${task("b")}\n` })
      expect(yield* wizToEnd(stdio, "run", "-", "-o", `${dir}/out.jsonl`, ...instant)).toBe(0)
      const ids = (yield* fs.readFileString(`${dir}/out.jsonl`)).trim().split("\n").map((line) => JSON.parse(line).id)
      expect(ids.sort()).toEqual(["a", "b"])
    }).pipe(Effect.scoped, Effect.provide(NodeContext.layer)))

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

  it.effect("issue 7.5: a write error ends the run with exit 1 and a clear message; the summary counts only what was written", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({
        stdin: Array.from({ length: 10 }, (_, i) => task(`t${i}`)).join("\n"),
        failStdout: {
          after: 3,
          error: new SystemError({ module: "Stream", method: "stdout", reason: "Unknown", description: "write EPIPE" })
        }
      })
      expect(yield* wizToEnd(stdio, "run", "--concurrency", "1", ...instant, "-")).toBe(1)
      expect(stdio.stdout().trim().split("\n").length).toBe(3)
      expect(stdio.stderr()).toMatch(/^succeeded {3}3\nfailed {6}0\n/)
      expect(stdio.stderr()).toMatch(/\nwiz: cannot write output on stdout: Unknown: write EPIPE\n$/)
    }))

  it("exit codes: 0 success, 2 usage, 1 other failures, 130 on SIGINT and 143 on SIGTERM; a defect is reported whole", () => {
    expect(Cli.exitCode(Exit.void)).toBe(0)
    expect(Cli.exitCode(Exit.interrupt(FiberId.none))).toBe(130)
    expect(Cli.exitCode(Exit.interrupt(FiberId.none), "SIGINT")).toBe(130)
    expect(Cli.exitCode(Exit.interrupt(FiberId.none), "SIGTERM")).toBe(143)
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
