/**
 * `wiz run --model openai-compatible` end to end: the CLI against the loopback FakeProvider,
 * the key read from the environment variable `--api-key-env` names.
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fake from "../support/FakeProvider.js"
import * as TestStdio from "./TestStdio.js"
import * as Wiz from "./Wiz.js"

/** Run `wiz <args>` as main.ts does (report on failure), returning the exit code. */
const wiz = Wiz.exitCode

const tasks = ["a", "b", "c"].map((id) => `{"id":"${id}","prompt":"Summarise: task ${id} is about typed errors."}`).join("\n") + "\n"
const key = "sk-wiz-cli-test-0123456789abcdef"

describe("wiz run --model openai-compatible", () => {
  it.scoped("runs the tasks against the API, with the key from the environment variable --api-key-env names", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make()
      process.env["WIZ_TEST_API_KEY"] = key
      yield* Effect.addFinalizer(() => Effect.sync(() => delete process.env["WIZ_TEST_API_KEY"]))
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      yield* fs.writeFileString(`${dir}/tasks.jsonl`, tasks)
      const stdio = TestStdio.make()
      const code = yield* wiz(
        stdio,
        "run",
        `${dir}/tasks.jsonl`,
        "--model",
        "openai-compatible",
        "--base-url",
        fake.url,
        "--model-name",
        "fake-model",
        "--api-key-env",
        "WIZ_TEST_API_KEY",
        "--no-progress"
      )
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
})
