import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Layer, Option, Random, TestClock } from "effect"
import * as AgentEvent from "../../src/events/AgentEvent.js"
import * as Cli from "../../src/cli/Cli.js"
import * as Screen from "./Screen.js"
import * as TestStdio from "./TestStdio.js"
import { Redis } from "ioredis"
import * as SharedStore from "../../src/store/SharedStore.js"
import * as Services from "../support/services.js"
import * as Wiz from "./Wiz.js"

const redis = await Services.redis()

/** Run `wiz <args>` with the given stdio and the real file system. */
const wiz = (stdio: TestStdio.TestStdio, ...args: ReadonlyArray<string>) =>
  Cli.run(["node", "wiz", ...args]).pipe(Effect.provide(Layer.merge(NodeContext.layer, stdio.layer)))

/** The embedded model answering at once, and no progress line. */
const instant = ["--time-to-first-token", "0 millis", "--per-token", "0 millis", "--no-progress"]

const parseRecords = (text: string): Array<Record<string, unknown>> =>
  text.split("\n").filter((line) => line.length > 0).map((line) => JSON.parse(line) as Record<string, unknown>)

const task = (id: string, extra = "") => `{"id":"${id}","prompt":"Summarise: ${id} is a task about retries and timeouts."${extra}}`

const mixed = [
  task("a"), //                                   1
  '{"id":"b","prompt":"unterminated', //          2  bad JSON
  "", //                                          3  blank: skipped
  task("c", ',"maxTokens":"ten"'), //              4  wrong-typed field
  '{"id":"d"}', //                                5  missing field
  task("a"), //                                   6  duplicate id
  task("e"), //                                   7
  task("f", ',"maxTokens":8') //                  8
].join("\n") + "\n"

const withTempDir = <A, E, R>(f: (dir: string, fs: FileSystem.FileSystem) => Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    return yield* f(yield* fs.makeTempDirectoryScoped(), fs)
  }).pipe(Effect.scoped, Effect.provide(NodeContext.layer))

describe("wiz run", () => {
  it.effect("every non-blank input line gets exactly one record: succeeded, or invalid with its line and what was wrong", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/tasks.jsonl`, mixed)
        const stdio = TestStdio.make()
        yield* wiz(stdio, "run", `${dir}/tasks.jsonl`, "--output", `${dir}/out.jsonl`, "--seed", "1", ...instant)
        const records = parseRecords(yield* fs.readFileString(`${dir}/out.jsonl`))
        expect(records.length).toBe(7)
        const invalid = records.filter((r) => r.status === "invalid").sort((x, y) => Number(x.line) - Number(y.line))
        expect(invalid.map((r) => [r.line, (r.error as { _tag: string })._tag])).toEqual([
          [2, "InvalidTask"],
          [4, "InvalidTask"],
          [5, "InvalidTask"],
          [6, "InvalidTask"]
        ])
        const messages = invalid.map((r) => (r.error as { message: string }).message)
        expect(messages[0]).toMatch(/^line 2: not valid JSON \(/)
        expect(messages.slice(1)).toEqual([
          expect.stringMatching(/^line 4: maxTokens: Expected number, actual "ten"/),
          "line 5: prompt: is missing",
          "line 6: duplicate id \"a\" (first on line 1)"
        ])
        const answered = records.filter((r) => r.status === "succeeded")
        expect(answered.map((r) => r.id).sort()).toEqual(["a", "e", "f"])
        expect(answered.every((r) => r.attempts === 1 && r.model === "embedded" && r.degraded === false)).toBe(true)
        expect(stdio.stdout()).toBe("")
        expect(stdio.stderr()).toContain("succeeded   3\nfailed      0\ninvalid     4\nskipped     0 (already in the output)\nattempts    3 (0 retries)\n")
      })
    ))

  it.effect("issue 7.3: --resume after a crash cuts the torn last record off; every task ends with exactly one record", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        const ids = Array.from({ length: 10 }, (_, i) => `t${i + 1}`)
        const lines = [...ids.slice(0, 5).map((id) => task(id)), "{oops", ...ids.slice(5).map((id) => task(id))]
        yield* fs.writeFileString(`${dir}/tasks.jsonl`, lines.join("\n") + "\n")
        const done = (id: string) =>
          `{"id":"${id}","status":"succeeded","output":"x","attempts":1,"model":"embedded","degraded":false,"durationMs":3}`
        const before = [
          done("t2"),
          '{"line":6,"status":"invalid","error":{"_tag":"InvalidTask","message":"line 6: not valid JSON"}}',
          done("t7"),
          `{"id":"t9","status":"failed","error":{"_tag":"Overloaded","message":"embedded: overloaded"},"attempts":4,"durationMs":8}`
        ]
        const cut = done("t4").slice(0, 25)
        yield* fs.writeFileString(`${dir}/out.jsonl`, before.join("\n") + "\n" + cut)
        const stdio = TestStdio.make()
        yield* wiz(stdio, "run", `${dir}/tasks.jsonl`, "--output", `${dir}/out.jsonl`, "--resume", "--seed", "1", ...instant)

        const text = yield* fs.readFileString(`${dir}/out.jsonl`)
        const written = text.split("\n")
        expect(written.slice(0, 4)).toEqual(before)
        // every line is a record (jq would read it), and each task and invalid line has exactly one
        const all = parseRecords(text)
        expect(all.map((r) => r.id ?? `line ${r.line}`).sort()).toEqual([...ids, "line 6"].sort())
        expect(parseRecords(written.slice(4).join("\n")).map((r) => [r.id, r.status]).sort()).toEqual(
          ["t1", "t10", "t3", "t4", "t5", "t6", "t8"].map((id) => [id, "succeeded"])
        )
        expect(text.endsWith("\n")).toBe(true)
        expect(stdio.stderr()).toContain(
          `wiz: the last line of "${dir}/out.jsonl" (line 5, 25 bytes) is a record cut short by a crash; it is cut off and its task runs again\n`
        )
        expect(stdio.stderr()).toContain("succeeded   7\nfailed      0\ninvalid     0\nskipped     4 (already in the output)\n")

        // a second resume finds nothing left to do and writes nothing
        const again = TestStdio.make()
        yield* wiz(again, "run", `${dir}/tasks.jsonl`, "--output", `${dir}/out.jsonl`, "--resume", ...instant)
        expect(yield* fs.readFileString(`${dir}/out.jsonl`)).toBe(text)
        expect(again.stderr()).toContain("succeeded   0\nfailed      0\ninvalid     0\nskipped     11 (already in the output)\n")
      })
    ))

  it.effect("issue 7.3: --resume refuses an output with a bad line that is not the last, touching nothing", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/tasks.jsonl`, [task("a"), task("b")].join("\n") + "\n")
        const before = `{"id":"a","status":"succ\n{"id":"x","status":"failed","error":{"_tag":"E","message":"m"},"attempts":1,"durationMs":1}\n`
        yield* fs.writeFileString(`${dir}/out.jsonl`, before)
        const stdio = TestStdio.make()
        const exit = yield* Effect.exit(
          wiz(stdio, "run", `${dir}/tasks.jsonl`, "--output", `${dir}/out.jsonl`, "--resume", ...instant)
        )
        expect(Exit.isFailure(exit) && Cli.exitCode(exit)).toBe(1)
        yield* Cli.report(Exit.isFailure(exit) ? exit.cause : Cause.empty).pipe(Effect.provide(stdio.layer))
        expect(stdio.stderr()).toContain(`wiz: output "${dir}/out.jsonl" line 1 is not a record (not valid JSON)`)
        expect(yield* fs.readFileString(`${dir}/out.jsonl`)).toBe(before)
      })
    ))

  it.effect("issue 7.8: lines that are not UTF-8 get invalid records saying so, not a \"duplicate id\"", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        const bytes = (text: string) => [...new TextEncoder().encode(text)]
        yield* fs.writeFile(
          `${dir}/tasks.jsonl`,
          Uint8Array.from([
            ...bytes('{"id":"a'), 0xff, ...bytes('","prompt":"one"}\n'),
            ...bytes('{"id":"a'), 0xfe, ...bytes('","prompt":"two"}\n'),
            ...bytes(task("b") + "\n")
          ])
        )
        yield* wiz(TestStdio.make(), "run", `${dir}/tasks.jsonl`, "-o", `${dir}/out.jsonl`, ...instant)
        const records = parseRecords(yield* fs.readFileString(`${dir}/out.jsonl`))
        expect(records.filter((r) => r.status === "invalid").map((r) => (r.error as { message: string }).message).sort()).toEqual([
          "line 1: not valid UTF-8 (byte 0xff at offset 8)",
          "line 2: not valid UTF-8 (byte 0xfe at offset 8)"
        ])
        expect(records.filter((r) => r.status === "succeeded").map((r) => r.id)).toEqual(["b"])
      })
    ))

  it.effect("issue 7.4: on a terminal with no -o, records and the progress line never share a row", () =>
    Effect.gen(function*() {
      const ids = Array.from({ length: 12 }, (_, i) => `s${i + 1}`)
      const stdio = TestStdio.make({ stdin: ids.map((id) => task(id)).join("\n"), isTTY: true, stdoutIsTTY: true })
      const fiber = yield* Effect.fork(
        wiz(stdio, "run", "--concurrency", "3", "--time-to-first-token", "250ms", "--per-token", "0", "--seed", "1", "-")
      )
      while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust("50 millis")
      const rows = Screen.rows(stdio.terminal())
      const recordRows = rows.filter((row) => row.includes('{"id"'))
      expect(recordRows.length).toBe(12)
      for (const row of recordRows) expect(JSON.parse(row)).toMatchObject({ status: "succeeded" })
      // the progress line was drawn between records, and ends as the last row before the summary
      expect(stdio.stderrWrites.filter((text) => text.includes(" retries, ")).length).toBeGreaterThan(12)
      expect(rows[12]).toMatch(/^\[█{20}\] 12\/12, 0 failed, 0 retries, 0 calling, 0 waiting, [\d.]+\/s, ETA 0s$/)
      expect(rows[13]).toBe("succeeded   12")
    }))

  it.effect("issue 7.9: the ETA of a resumed run leaves out the tasks it skips, in the rate and in the work left", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        const ids = Array.from({ length: 20 }, (_, i) => `r${i + 1}`)
        yield* fs.writeFileString(`${dir}/tasks.jsonl`, ids.map((id) => task(id)).join("\n") + "\n")
        // an earlier run answered the last ten
        const done = (id: string) =>
          `{"id":"${id}","status":"succeeded","output":"x","attempts":1,"model":"embedded","degraded":false,"durationMs":3}`
        yield* fs.writeFileString(`${dir}/out.jsonl`, ids.slice(10).map(done).join("\n") + "\n")
        const stdio = TestStdio.make()
        const fiber = yield* Effect.fork(
          wiz(stdio, "run", `${dir}/tasks.jsonl`, "-o", `${dir}/out.jsonl`, "--resume", "--concurrency", "1",
            "--time-to-first-token", "900ms", "--per-token", "0", "--seed", "1")
        )
        while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust("100 millis")
        // the first plain line, 5 s in: some tasks run at about 1/s (done also counts the skipped
        // lines already read), and ten minus those are left to run; counting the skipped lines not
        // reached yet as work left would say ten seconds more
        const [, shown, rate, eta] = (/^(\d+)\/20 done(?: \(10 resumed\))?, 0 failed, 0 retries, \d+ calling, \d+ waiting, ([\d.]+)\/s, ETA (\d+)s\n$/.exec(stdio.stderrWrites[0]!) ?? [])
          .map(Number)
        const ran = Math.round(rate! * 5)
        expect(ran).toBeGreaterThanOrEqual(1)
        expect(shown).toBeGreaterThanOrEqual(ran)
        expect(Math.abs(eta! - (10 - ran) / rate!)).toBeLessThanOrEqual(1)
        expect(stdio.stderr()).toContain("succeeded   10\nfailed      0\ninvalid     0\nskipped     10 (already in the output)\n")
      })
    ))

  it.effect("without --resume an existing output file is truncated", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/tasks.jsonl`, task("only") + "\n")
        yield* fs.writeFileString(`${dir}/out.jsonl`, "old content\nmore old content\n")
        yield* wiz(TestStdio.make(), "run", `${dir}/tasks.jsonl`, "-o", `${dir}/out.jsonl`, ...instant)
        expect(parseRecords(yield* fs.readFileString(`${dir}/out.jsonl`)).map((r) => r.id)).toEqual(["only"])
      })
    ))

  it.effect("stdin in, stdout out; faults are retried under TestClock and the summary counts every retry", () =>
    Effect.gen(function*() {
      const ids = Array.from({ length: 40 }, (_, i) => `q${i + 1}`)
      const stdio = TestStdio.make({ stdin: ids.map((id) => task(id)).join("\n") })
      const fiber = yield* Effect.fork(
        wiz(stdio, "run", "--failure-rate", "0.1", "--seed", "7", "--timeout", "1 second", "--retries", "5", ...instant, "-")
      )
      while (Option.isNone(yield* Fiber.poll(fiber))) {
        yield* TestClock.adjust("250 millis")
      }
      expect(Exit.isSuccess(yield* Fiber.await(fiber))).toBe(true)
      const records = parseRecords(stdio.stdout())
      expect(records.map((r) => r.id).sort()).toEqual([...ids].sort())
      expect(records.every((r) => r.status === "succeeded")).toBe(true)
      const attempts = records.reduce((sum, r) => sum + Number(r.attempts), 0)
      // with the breaker closed throughout, every retry scheduled is one more attempt made
      const retries = attempts - records.length
      expect(retries).toBeGreaterThan(0)
      expect(stdio.stderr()).toContain(
        `succeeded   40\nfailed      0\ninvalid     0\nskipped     0 (already in the output)\n` +
          `attempts    ${attempts} (${retries} retries)\nbreaker     0 transitions\n`
      )
    }))

  it.effect("--outage-after/--outage-for trip the breaker (--breaker-open): it opens, half-opens and closes, and every task still succeeds", () =>
    Effect.gen(function*() {
      const ids = Array.from({ length: 30 }, (_, i) => `o${i + 1}`)
      const stdio = TestStdio.make({ stdin: ids.map((id) => task(id)).join("\n") })
      const fiber = yield* Effect.fork(
        wiz(
          stdio,
          "run",
          "--concurrency", "5",
          "--outage-after", "0 millis",
          "--outage-for", "1 second",
          "--breaker-open", "1 second",
          "--seed", "1",
          ...instant,
          "-"
        ).pipe(Effect.withRandom(Random.make(1)))
      )
      while (Option.isNone(yield* Fiber.poll(fiber))) {
        yield* TestClock.adjust("100 millis")
      }
      expect(Exit.isSuccess(yield* Fiber.await(fiber))).toBe(true)
      const records = parseRecords(stdio.stdout())
      expect(records.map((r) => r.id).sort()).toEqual([...ids].sort())
      expect(records.every((r) => r.status === "succeeded")).toBe(true)
      // The outage refuses the first calls at once; each refused task sleeps in its backoff and
      // lets the next one in, so 20 failures (the rate policy's minimum) trip the breaker at 0
      // (with up to 4 more calls already on the wire). The tasks after that wait on the open
      // circuit without spending an attempt, and are answered once it half-opens 1 s later
      // (--breaker-open) and its probe succeeds.
      const attempts = records.map((r) => Number(r.attempts))
      const refusedByOutage = attempts.filter((n) => n === 2).length
      expect(refusedByOutage).toBeGreaterThanOrEqual(20)
      expect(refusedByOutage).toBeLessThanOrEqual(24)
      expect(attempts.filter((n) => n === 1)).toHaveLength(30 - refusedByOutage)
      expect(Math.max(...records.map((r) => Number(r.durationMs)))).toBeLessThan(2000)
      expect(stdio.stderr()).toContain(
        "succeeded   30\nfailed      0\ninvalid     0\nskipped     0 (already in the output)\n" +
          `attempts    ${30 + refusedByOutage} (${refusedByOutage} retries)\nbreaker     3 transitions\n`
      )
    }))

  it.effect("--events writes every event of the run as JSON Lines that decode with the events' schema, one TaskFinished per task", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        const ids = Array.from({ length: 12 }, (_, i) => `e${i + 1}`)
        yield* fs.writeFileString(`${dir}/tasks.jsonl`, [...ids.map((id) => task(id)), "{broken"].join("\n") + "\n")
        yield* fs.writeFileString(`${dir}/events.jsonl`, "old events\n")
        const stdio = TestStdio.make()
        const fiber = yield* Effect.fork(
          wiz(stdio, "run", `${dir}/tasks.jsonl`, "-o", `${dir}/out.jsonl`, "--events", `${dir}/events.jsonl`,
            "--failure-rate", "0.3", "--seed", "3", "--retries", "5", ...instant)
        )
        while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust("250 millis")
        expect(Exit.isSuccess(yield* Fiber.await(fiber))).toBe(true)
        const text = yield* fs.readFileString(`${dir}/events.jsonl`)
        expect(text.endsWith("\n")).toBe(true)
        // truncated first: every line is an event of this run
        const events = yield* Effect.forEach(text.trimEnd().split("\n"), AgentEvent.fromJson)
        const finished = events.filter(AgentEvent.is("TaskFinished"))
        expect(finished.map((event) => event.taskId).sort()).toEqual([...ids].sort())
        expect(events.filter(AgentEvent.is("TaskStarted")).map((event) => event.taskId).sort()).toEqual([...ids].sort())
        // each event line is exactly what the schema encodes (no other field, nothing lost)
        expect(yield* Effect.forEach(events, AgentEvent.toJson)).toEqual(text.trimEnd().split("\n"))
        // the retries in the events file are the ones the summary counts, and the records' attempts
        const records = parseRecords(yield* fs.readFileString(`${dir}/out.jsonl`)).filter((r) => r.status !== "invalid")
        const retries = events.filter(AgentEvent.is("RetryScheduled")).length
        expect(retries).toBeGreaterThan(0)
        expect(retries).toBe(records.reduce((sum, r) => sum + Number(r.attempts), 0) - records.length)
        expect(stdio.stderr()).toContain(`(${retries} retries)`)
      })
    ))

  it.effect("--events is never the input or the output (by name or by link): a usage error before anything is opened", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/tasks.jsonl`, task("a") + "\n")
        yield* fs.writeFileString(`${dir}/out.jsonl`, "kept\n")
        yield* fs.symlink(`${dir}/out.jsonl`, `${dir}/link.jsonl`)
        const refused = (...args: ReadonlyArray<string>) =>
          Effect.gen(function*() {
            const stdio = TestStdio.make()
            const exit = yield* Effect.exit(wiz(stdio, "run", `${dir}/tasks.jsonl`, ...args, ...instant))
            expect(Exit.isFailure(exit) && Cli.exitCode(exit)).toBe(2)
            return Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
          })
        expect(String(yield* refused("--events", `${dir}/tasks.jsonl`, "-o", `${dir}/x.jsonl`))).toContain(
          `the events file "${dir}/tasks.jsonl" is the input "${dir}/tasks.jsonl", one file`
        )
        expect(String(yield* refused("--events", `${dir}/./link.jsonl`, "-o", `${dir}/out.jsonl`))).toContain(
          `the events file "${dir}/./link.jsonl" is the output "${dir}/out.jsonl", one file`
        )
        expect(String(yield* refused("--events", `${dir}/new.jsonl`, "-o", `${dir}/sub/../new.jsonl`))).toContain("is the output")
        expect(String(yield* refused("--events", "-"))).toContain("--events needs a FILE of its own")
        // nothing was opened: the output is as it was and no events file was created
        expect(yield* fs.readFileString(`${dir}/out.jsonl`)).toBe("kept\n")
        expect(yield* fs.exists(`${dir}/new.jsonl`)).toBe(false)
        expect(yield* fs.exists(`${dir}/x.jsonl`)).toBe(false)
      })
    ))

  it.effect("--coalesce: identical tasks in flight share one call, each gets its own record, and the summary counts the calls once", () =>
    Effect.gen(function*() {
      // three prompts, each asked by three tasks at once (and one asked alone)
      const lines = ["x", "y", "z"].flatMap((p) =>
        [1, 2, 3].map((n) => `{"id":"${p}${n}","prompt":"Summarise: ${p} is a shared prompt about retries."}`)
      )
      lines.push(task("alone"))
      const stdio = TestStdio.make({ stdin: lines.join("\n") })
      const fiber = yield* Effect.fork(
        wiz(stdio, "run", "--coalesce", "--concurrency", "10", "--time-to-first-token", "200ms", "--per-token", "0", "--seed", "1",
          "--no-progress", "-")
      )
      while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust("50 millis")
      const records = parseRecords(stdio.stdout())
      expect(records.map((r) => r.id).sort()).toEqual([...lines.map((line) => JSON.parse(line).id as string)].sort())
      const roles = (prefix: string) =>
        records.filter((r) => String(r.id).startsWith(prefix)).map((r) => (r.coalesced as { role: string }).role).sort()
      for (const prefix of ["x", "y", "z"]) expect(roles(prefix)).toEqual(["joined", "joined", "led"])
      // every task of one prompt got the same answer
      for (const prefix of ["x", "y", "z"]) {
        expect(new Set(records.filter((r) => String(r.id).startsWith(prefix)).map((r) => r.output)).size).toBe(1)
      }
      const joined = records.filter((r) => (r.coalesced as { role: string } | undefined)?.role === "joined").length
      const calls = records.filter((r) => (r.coalesced as { role: string } | undefined)?.role !== "joined")
        .reduce((sum, r) => sum + Number(r.attempts), 0)
      expect([joined, calls]).toEqual([6, 4])
      expect(stdio.stderr()).toContain(`succeeded   10\n`)
      expect(stdio.stderr()).toContain(`attempts    ${calls} (0 retries)\nshared      ${joined} joined a call, 0 from the memo\n`)
    }))

  it.effect("--memo-ttl answers a task asked again within the TTL from the memo, with no call; after the TTL it calls again", () =>
    Effect.gen(function*() {
      const again = (id: string) => `{"id":"${id}","prompt":"Summarise: one prompt, asked again."}`
      // one task at a time, 400 ms each: m1 is answered at 0.4 s, m2 and m3 (at 0.4 s and 0.8 s)
      // are within the TTL of 1 s, m4 (at 1.6 s) is not
      const lines = [again("m1"), again("m2"), task("o1"), again("m3"), task("o2"), task("o3"), again("m4")]
      const stdio = TestStdio.make({ stdin: lines.join("\n") })
      const fiber = yield* Effect.fork(
        wiz(stdio, "run", "--memo-ttl", "1s", "--concurrency", "1", "--time-to-first-token", "400ms", "--per-token", "0",
          "--seed", "1", "--no-progress", "-")
      )
      while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust("50 millis")
      const records = parseRecords(stdio.stdout())
      const byId = new Map(records.map((r) => [r.id, r]))
      expect([...byId.keys()].sort()).toEqual(["m1", "m2", "m3", "m4", "o1", "o2", "o3"])
      for (const id of ["m1", "m4"]) expect([id, byId.get(id)!.memoized, byId.get(id)!.attempts]).toEqual([id, undefined, 1])
      for (const id of ["m2", "m3"]) expect(byId.get(id)).toMatchObject({ memoized: true, attempts: 0, output: byId.get("m1")!.output })
      expect(stdio.stderr()).toContain("attempts    5 (0 retries)\nshared      0 joined a call, 2 from the memo\n")
    }))

  it.effect("issue 17.2: --resume refuses to add answers from another model to an output, naming both; --allow-model-change lets it", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/tasks.jsonl`, ["a", "b", "c", "d"].map((id) => task(id)).join("\n") + "\n")
        const answered = (id: string, model: string, degraded = false) =>
          JSON.stringify({ id, status: "succeeded", output: "x", attempts: 1, model, degraded, durationMs: 3 })
        // what an openai-compatible run left: two real answers, a failure (failed records name no model)
        const before = [
          answered("a", "gpt-4o-mini"),
          answered("b", "gpt-4o-mini"),
          JSON.stringify({ id: "c", status: "failed", error: { _tag: "Overloaded", message: "gpt-4o-mini: overloaded" }, attempts: 4, durationMs: 9 })
        ].join("\n") + "\n"
        yield* fs.writeFileString(`${dir}/out.jsonl`, before)
        for (const again of ["--resume", "--retry-failed"]) {
          const refused = TestStdio.make()
          expect(yield* Wiz.exitCode(refused, "run", `${dir}/tasks.jsonl`, "-o", `${dir}/out.jsonl`, again, ...instant)).toBe(2)
          expect(refused.stderr()).toBe(
            `wiz: ${again}: "${dir}/out.jsonl" holds answers from another model (2 from gpt-4o-mini) and this run would answer ` +
              "with embedded; give the options of the run that wrote it (--model ...), or --allow-model-change to mix the two in one file\n"
          )
          expect(yield* fs.readFileString(`${dir}/out.jsonl`)).toBe(before)
        }
        const allowed = TestStdio.make()
        expect(yield* Wiz.exitCode(allowed, "run", `${dir}/tasks.jsonl`, "-o", `${dir}/out.jsonl`, "--resume", "--allow-model-change", ...instant))
          .toBe(0)
        const after = parseRecords(yield* fs.readFileString(`${dir}/out.jsonl`))
        expect(after.map((r) => [r.id, r.model]).sort()).toEqual([["a", "gpt-4o-mini"], ["b", "gpt-4o-mini"], ["c", undefined], ["d", "embedded"]])
        // the same model, and answers a fallback gave, are no change of model
        yield* fs.writeFileString(`${dir}/same.jsonl`, answered("a", "embedded") + "\n" + answered("b", "backup", true) + "\n")
        expect(yield* Wiz.exitCode(TestStdio.make(), "run", `${dir}/tasks.jsonl`, "-o", `${dir}/same.jsonl`, "--resume", ...instant)).toBe(0)
        expect(parseRecords(yield* fs.readFileString(`${dir}/same.jsonl`)).length).toBe(4)
      })
    ))
})

describe("wiz run, flow control (issue 11)", () => {
  const batch = (n: number) => Array.from({ length: n }, (_, i) => task(`f${i + 1}`)).join("\n")

  it.effect("--provider-tpm with our --tpm: no 429 reaches a task, later tasks wait for the budget and the summary says so", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({ stdin: batch(60) })
      // each call reserves ~270 tokens (prompt + maxTokens 256) and uses ~65: 60 need ~4k, at 2k/min
      const fiber = yield* Effect.fork(
        wiz(stdio, "run", "--provider-tpm", "2000", "--tpm", "2000", "--concurrency", "16", "--seed", "3", ...instant, "-")
      )
      while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust("1 second")
      expect(Exit.isSuccess(yield* Fiber.await(fiber))).toBe(true)
      const records = parseRecords(stdio.stdout())
      expect(records).toHaveLength(60)
      expect(records.every((r) => r.status === "succeeded" && r.attempts === 1)).toBe(true)
      const waited = records.filter((r) => typeof r.budgetWaitMs === "number" && r.budgetWaitMs > 0)
      expect(waited.length).toBeGreaterThan(0)
      expect(stdio.stderr()).toContain("attempts    60 (0 retries)\n")
      expect(stdio.stderr()).toMatch(new RegExp(`budget      ${waited.length} tasks waited for the token budget, `))
    }))

  it.effect("--concurrency adaptive against --provider-capacity: every task answered; a fixed 64 overloads the same provider", () =>
    Effect.gen(function*() {
      const runWith = (concurrency: string) =>
        Effect.gen(function*() {
          const stdio = TestStdio.make({ stdin: batch(200) })
          const fiber = yield* Effect.fork(
            wiz(stdio, "run", "--provider-capacity", "8", "--concurrency", concurrency, "--seed", "3",
              "--time-to-first-token", "100 millis", "--per-token", "1 millis", "--no-progress", "-")
          )
          while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust("500 millis")
          return parseRecords(stdio.stdout())
        })
      const adaptive = yield* runWith("adaptive")
      expect(adaptive.filter((r) => r.status === "succeeded")).toHaveLength(200)
      const fixed = yield* runWith("64")
      expect(fixed.filter((r) => r.status === "failed").length).toBeGreaterThan(0)
    }))
})

describe.skipIf(!redis.available)("wiz run --redis (on a real Redis)", () => {
  // the embedded model's shared keys under the default prefix: deleted after the test
  const embeddedKeys = `${SharedStore.identity("wiz", { baseUrl: "embedded" }, "")}*`
  afterAll(async () => {
    const admin = new Redis(redis.url)
    const keys = await admin.keys(embeddedKeys)
    if (keys.length > 0) await admin.del(...keys)
    await admin.quit()
  })

  it.live("issue 19: --redis shares the budget through Redis, and the summary says by how many processes", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({ stdin: [task("a"), task("b"), task("c")].join("\n") + "\n" })
      yield* wiz(stdio, "run", "--redis", redis.url, "--tpm", "100000", ...instant, "-")
      const records = parseRecords(stdio.stdout())
      expect(records.map((r) => r.status)).toEqual(["succeeded", "succeeded", "succeeded"])
      expect(stdio.stderr()).toContain("budget      shared through redis by 1 process\n")
    }))

  it.live("issue 19: --redis on a Redis that does not answer: every task still succeeds, on the process's own budget", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({ stdin: [task("a"), task("b")].join("\n") + "\n" })
      yield* wiz(stdio, "run", "--redis", "redis://127.0.0.1:1", "--tpm", "100000", ...instant, "-")
      expect(parseRecords(stdio.stdout()).map((r) => r.status)).toEqual(["succeeded", "succeeded"])
      expect(stdio.stderr()).toContain("(redis unavailable at the end: local)")
    }))
})
