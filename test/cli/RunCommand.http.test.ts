/**
 * `wiz run --model openai-compatible` end to end: the CLI against the loopback FakeProvider,
 * the key read from the environment variable `--api-key-env` names.
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as Fake from "../support/FakeProvider.js"
import * as TestStdio from "./TestStdio.js"
import * as Wiz from "./Wiz.js"

/** Run `wiz <args>` as main.ts does (report on failure), returning the exit code. */
const wiz = Wiz.exitCode

const tasks = ["a", "b", "c"].map((id) => `{"id":"${id}","prompt":"Summarise: task ${id} is about typed errors."}`).join("\n") + "\n"
const key = "sk-wiz-cli-test-0123456789abcdef"

/** The options of a run against the fake API at `url`, the key in WIZ_TEST_API_KEY. */
const api = (url: string) =>
  ["--model", "openai-compatible", "--base-url", url, "--model-name", "fake-model", "--api-key-env", "WIZ_TEST_API_KEY"]

/** The fake API, its key in WIZ_TEST_API_KEY for the scope, and a directory holding tasks.jsonl. */
const withApi = Effect.gen(function*() {
  const fake = yield* Fake.make()
  process.env["WIZ_TEST_API_KEY"] = key
  yield* Effect.addFinalizer(() => Effect.sync(() => delete process.env["WIZ_TEST_API_KEY"]))
  const fs = yield* FileSystem.FileSystem
  const dir = yield* fs.makeTempDirectoryScoped()
  yield* fs.writeFileString(`${dir}/tasks.jsonl`, tasks)
  return { fake, fs, dir }
})

describe("wiz run --model openai-compatible", () => {
  it.scoped("runs the tasks against the API, with the key from the environment variable --api-key-env names", () =>
    Effect.gen(function*() {
      const { dir, fake } = yield* withApi
      const stdio = TestStdio.make()
      const code = yield* wiz(stdio, "run", `${dir}/tasks.jsonl`, ...api(fake.url), "--no-progress")
      expect(code).toBe(0)
      const records = stdio.stdout().split("\n").filter((line) => line !== "").map((line) => JSON.parse(line))
      expect(records.map((r) => [r.id, r.status, r.model]).sort()).toStrictEqual([
        ["a", "succeeded", "fake-model"],
        ["b", "succeeded", "fake-model"],
        ["c", "succeeded", "fake-model"]
      ])
      expect(records.every((r) => typeof r.output === "string" && r.output.includes("typed errors"))).toBe(true)
      const received = yield* fake.requests
      expect(received.length).toBe(3)
      expect(received.every((r) => r.headers["authorization"] === `Bearer ${key}` && (r.body as any).model === "fake-model")).toBe(true)
      expect(stdio.stdout() + stdio.stderr()).not.toContain(key)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.effect("an --api-key-env naming an unset variable is a usage error (exit 2), and the key is never a flag", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({ stdin: "" })
      const code = yield* wiz(
        stdio,
        "run",
        "--model",
        "openai-compatible",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--model-name",
        "m",
        "--api-key-env",
        "WIZ_TEST_SURELY_UNSET_VARIABLE",
        "-"
      )
      expect(code).toBe(2)
      expect(stdio.stderr()).toBe("wiz: --api-key-env WIZ_TEST_SURELY_UNSET_VARIABLE: that environment variable is not set\n")
      const flag = yield* wiz(TestStdio.make({ stdin: "" }), "run", "--api-key", "sk-x", "-")
      expect(flag).toBe(2)
    }))

  it.effect("--model-name with the embedded model, or an invalid --base-url, is a usage error", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({ stdin: "" })
      expect(yield* wiz(stdio, "run", "--model-name", "gpt", "-")).toBe(2)
      expect(stdio.stderr()).toBe("wiz: --model-name applies only to --model openai-compatible\n")
      const bad = TestStdio.make({ stdin: "" })
      expect(yield* wiz(bad, "run", "--model", "openai-compatible", "--base-url", "localhost:11434", "--model-name", "m", "-")).toBe(2)
      expect(bad.stderr()).toMatch(/^wiz: --model openai-compatible: .*baseUrl/)
    }))

  it.scoped("issue 18.7: a refused key stops the batch after 3 tasks; the rest get BatchStopped records, and --resume runs them once the key works", () =>
    Effect.gen(function*() {
      const { dir, fake, fs } = yield* withApi
      const many = Array.from({ length: 30 }, (_, i) => `{"id":"t${i}","prompt":"Summarise: task ${i} is about keys."}`).join("\n") + "\n"
      yield* fs.writeFileString(`${dir}/many.jsonl`, many)
      const refused = Fake.error(401, { message: "Incorrect API key provided", type: "invalid_request_error", code: "invalid_api_key" })
      yield* fake.script(refused, refused, refused)
      const out = `${dir}/out.jsonl`
      const args = ["run", `${dir}/many.jsonl`, ...api(fake.url), "--concurrency", "1", "--no-progress", "--output", out]
      expect(yield* wiz(TestStdio.make(), ...args)).toBe(0)
      const first = (yield* fs.readFileString(out)).trim().split("\n").map((line) => JSON.parse(line))
      expect(first).toHaveLength(30)
      expect(first.filter((r) => r.error?._tag === "AuthenticationFailed")).toHaveLength(3)
      expect(first.filter((r) => r.error?._tag === "BatchStopped" && r.attempts === 0)).toHaveLength(27)
      expect((yield* fake.requests).length).toBe(3)
      // the key works again: --resume runs the 27 never run, and only those
      expect(yield* wiz(TestStdio.make(), ...args, "--resume")).toBe(0)
      const after = (yield* fs.readFileString(out)).trim().split("\n").map((line) => JSON.parse(line))
      expect(after).toHaveLength(30)
      expect(new Set(after.map((r) => r.id)).size).toBe(30)
      expect(after.filter((r) => r.status === "succeeded")).toHaveLength(27)
      expect(after.filter((r) => r.error?._tag === "AuthenticationFailed")).toHaveLength(3)
      expect((yield* fake.requests).length).toBe(30)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("issue 17.2: after an interruption, the command to continue is the whole command as given: the key's variable, never the key", () =>
    Effect.gen(function*() {
      const { dir, fake, fs } = yield* withApi
      yield* fake.script(Fake.answer(), Fake.answer(), Fake.stall())
      const stdio = TestStdio.make()
      const args = ["run", `${dir}/tasks.jsonl`, "-o", `${dir}/out.jsonl`, ...api(fake.url), "--concurrency", "1", "--no-progress"]
      const running = yield* Effect.fork(wiz(stdio, ...args))
      yield* fake.received(3) // two answered, the third stalls
      yield* Fiber.interrupt(running)
      expect(stdio.stderr()).toContain(
        `wiz: interrupted; what is done is in ${dir}/out.jsonl. To continue, run:\n  wiz ${args.join(" ")} --resume\n`
      )
      expect(stdio.stdout() + stdio.stderr()).not.toContain(key)
      // pasted, it continues with the same model: every record from the API
      expect(yield* wiz(TestStdio.make(), ...args, "--resume")).toBe(0)
      const records = (yield* fs.readFileString(`${dir}/out.jsonl`)).trim().split("\n").map((line) => JSON.parse(line))
      expect(records.map((r) => [r.id, r.model]).sort()).toEqual([["a", "fake-model"], ["b", "fake-model"], ["c", "fake-model"]])
    }).pipe(Effect.provide(NodeContext.layer)))
})
