/**
 * `wiz serve`: its security refusal, and, as a real process, an answer through it, one log line
 * per request without the prompt, and SIGTERM draining a stream in flight before exiting 0.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { tmpdir } from "node:os"
import OpenAI from "openai"
import * as ServeCommand from "../../src/cli/ServeCommand.js"
import * as Fake from "../support/FakeProvider.js"
import * as Process from "./Process.js"
import * as TestStdio from "./TestStdio.js"
import * as Wiz from "./Wiz.js"

describe("wiz serve", () => {
  it.effect("bound anywhere but loopback, it refuses to start without client keys (a usage error, exit 2)", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make()
      expect(yield* Wiz.exitCode(stdio, "serve", "--host", "0.0.0.0", "--port", "0")).toBe(2)
      expect(stdio.stderr()).toMatch(/--host 0\.0\.0\.0 is reachable from other machines: give client keys with --client-keys-env VAR/)
      const unset = TestStdio.make()
      expect(yield* Wiz.exitCode(unset, "serve", "--host", "0.0.0.0", "--client-keys-env", "WIZ_TEST_NO_SUCH_VARIABLE")).toBe(2)
      expect(unset.stderr()).toContain("--client-keys-env WIZ_TEST_NO_SUCH_VARIABLE: that environment variable is not set")
    }))

  it("loopback addresses are told apart from the others", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "localhost", "::1"]) expect(ServeCommand.isLoopback(host)).toBe(true)
    for (const host of ["0.0.0.0", "::", "192.168.1.2", "example.com"]) expect(ServeCommand.isLoopback(host)).toBe(false)
  })

  it.scopedLive("as a process: answers through the gateway, logs one JSON line per request without the prompt, and SIGTERM drains a stream then exits 0", () =>
    Effect.gen(function*() {
      const keys = JSON.stringify([{ key: "serve-test-key-0123456789", name: "tester" }])
      const wiz = yield* Process.startWiz(
        ["serve", "--port", "0", "--client-keys-env", "WIZ_TEST_CLIENT_KEYS", "--seed", "1", "--time-to-first-token", "0", "--per-token", "40ms", "--failure-rate", "0"],
        { cwd: tmpdir(), env: { WIZ_TEST_CLIENT_KEYS: keys } }
      )
      yield* wiz.until((_, err) => err.includes("listening on"), 60)
      const url = /listening on (\S+)/.exec(wiz.stderr())![1]!
      const client = new OpenAI({ apiKey: "serve-test-key-0123456789", baseURL: url, maxRetries: 0 })
      const secret = "Summarise the secret plan"
      const whole = yield* Effect.promise(() =>
        client.chat.completions.create({ model: "embedded", messages: [{ role: "user", content: secret }], max_tokens: 8 })
      )
      expect(whole.choices[0]!.message.content!.length).toBeGreaterThan(0)
      // a stream of ~30 tokens at 40 ms each is in flight when SIGTERM comes
      const streaming = yield* Effect.fork(Effect.promise(async () => {
        let text = ""
        let finish: string | null = null
        const stream = await client.chat.completions.create({
          model: "embedded",
          messages: [{ role: "user", content: "Tell a long story" }],
          max_tokens: 30,
          stream: true
        })
        for await (const chunk of stream) {
          text += chunk.choices[0]?.delta.content ?? ""
          finish = chunk.choices[0]?.finish_reason ?? finish
        }
        return { text, finish }
      }))
      yield* wiz.until((_, err) => err.split("\n").filter((l) => l.includes("gateway request")).length >= 1, 30)
      yield* Effect.sleep("300 millis")
      wiz.child.kill("SIGTERM")
      const streamed = yield* Fiber.join(streaming)
      expect(streamed.finish).not.toBeNull()
      expect(streamed.text.length).toBeGreaterThan(0)
      const exited = yield* wiz.exited(30)
      expect(exited.code).toBe(0)
      const lines = exited.stderr.split("\n").filter((l) => l.includes("gateway request")).map((l) => JSON.parse(l))
      expect(lines).toHaveLength(2)
      // the JSON line on stderr is the only one: runMain's pretty logger would write each again to stdout
      expect(exited.stdout).not.toContain("gateway request")
      expect(lines[0]).toMatchObject({ message: "gateway request", annotations: { route: "chat", status: 200, client: "tester", model: "embedded" } })
      expect(exited.stderr).not.toContain(secret)
      expect(exited.stderr).not.toContain("serve-test-key")
    }))

  it.scopedLive("as a process on an OpenAI-compatible upstream (its undici client): whole and streamed answers are the upstream's own", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make()
      const wiz = yield* Process.startWiz(
        ["serve", "--port", "0", "--model", "openai-compatible", "--base-url", fake.url, "--model-name", "fake"],
        { cwd: tmpdir() }
      )
      yield* wiz.until((_, err) => err.includes("listening on"), 60)
      const url = /listening on (\S+)/.exec(wiz.stderr())![1]!
      const through = new OpenAI({ apiKey: "unused", baseURL: url, maxRetries: 0 })
      const direct = new OpenAI({ apiKey: "unused", baseURL: fake.url, maxRetries: 0 })
      const ask = { model: "fake", messages: [{ role: "user" as const, content: "Summarise: Effect is a TypeScript library." }], max_tokens: 16 }
      const [viaGateway, upstream] = yield* Effect.promise(() =>
        Promise.all([through.chat.completions.create(ask), direct.chat.completions.create(ask)])
      )
      expect(viaGateway.choices[0]!.message.content).toBe(upstream.choices[0]!.message.content)
      expect(viaGateway.choices[0]!.finish_reason).toBe(upstream.choices[0]!.finish_reason)
      const read = (client: OpenAI) =>
        Effect.promise(async () => {
          let text = ""
          let finish: string | null = null
          for await (const chunk of await client.chat.completions.create({ ...ask, stream: true })) {
            text += chunk.choices[0]?.delta.content ?? ""
            finish = chunk.choices[0]?.finish_reason ?? finish
          }
          return { text, finish }
        })
      const [streamedThrough, streamedDirect] = yield* Effect.all([read(through), read(direct)])
      expect(streamedThrough.text.length).toBeGreaterThan(0)
      expect(streamedThrough).toEqual(streamedDirect)
      wiz.child.kill("SIGTERM")
      expect((yield* wiz.exited(30)).code).toBe(0)
    }))

  it.scopedLive("as a process with a fallback chain: a failing upstream's request falls through the tiers in order, and no tier's key reaches the client", () =>
    Effect.gen(function*() {
      const [primary, first, second] = yield* Effect.all([Fake.make(), Fake.make(), Fake.make()])
      const failing = (key: string) =>
        Fake.raw(500, JSON.stringify({ error: { message: `upstream broke with key ${key}`, type: "server_error", param: null, code: null } }), {
          headers: { "content-type": "application/json" }
        })
      yield* primary.script(failing("sk-primary-secret-0123"))
      yield* first.script(failing("sk-first-secret-0123"))
      yield* second.script(Fake.answer({ text: "answered by the second tier" }))
      const wiz = yield* Process.startWiz(
        [
          "serve",
          "--port",
          "0",
          "--retries",
          "0",
          "--model",
          "openai-compatible",
          "--base-url",
          primary.url,
          "--model-name",
          "big",
          "--api-key-env",
          "WIZ_TEST_PRIMARY_KEY",
          "--fallback-model-name",
          "medium",
          "--fallback-base-url",
          first.url,
          "--fallback-api-key-env",
          "WIZ_TEST_FIRST_KEY",
          "--fallback-model-name",
          "small",
          "--fallback-base-url",
          second.url,
          "--fallback-api-key-env",
          "WIZ_TEST_SECOND_KEY"
        ],
        { cwd: tmpdir(), env: { WIZ_TEST_PRIMARY_KEY: "sk-primary-secret-0123", WIZ_TEST_FIRST_KEY: "sk-first-secret-0123", WIZ_TEST_SECOND_KEY: "sk-second-secret-0123" } }
      )
      yield* wiz.until((_, err) => err.includes("listening on"), 60)
      const url = /listening on (\S+)/.exec(wiz.stderr())![1]!
      const client = new OpenAI({ apiKey: "unused", baseURL: url, maxRetries: 0 })
      const answer = yield* Effect.promise(() =>
        client.chat.completions.create({ model: "big", messages: [{ role: "user", content: "Where are you?" }], max_tokens: 8 })
      )
      expect(answer.choices[0]!.message.content).toBe("answered by the second tier")
      const asked = (requests: ReadonlyArray<Fake.Received>) =>
        requests.map((request) => [(request.body as { model: string }).model, request.headers["authorization"]])
      expect(asked(yield* primary.requests)).toEqual([["big", "Bearer sk-primary-secret-0123"]])
      expect(asked(yield* first.requests)).toEqual([["medium", "Bearer sk-first-secret-0123"]])
      expect(asked(yield* second.requests)).toEqual([["small", "Bearer sk-second-secret-0123"]])
      // every tier failing: the client's error names no key, whichever tier's error it is
      yield* primary.script(failing("sk-primary-secret-0123"))
      yield* first.script(failing("sk-first-secret-0123"))
      yield* second.script(failing("sk-second-secret-0123"))
      const failed = yield* Effect.promise(() =>
        fetch(`${url}/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "big", messages: [{ role: "user", content: "Again?" }], max_tokens: 8 })
        }).then(async (response) => ({ status: response.status, text: await response.text() }))
      )
      expect(failed.status).toBeGreaterThanOrEqual(500)
      // the last tier's own message is passed on (so its key's absence means something), the key redacted
      expect(failed.text).toContain("small (fallback 2)")
      expect(failed.text).toContain("upstream broke with key")
      expect(failed.text).not.toMatch(/sk-(primary|first|second)-secret/)
      wiz.child.kill("SIGTERM")
      expect((yield* wiz.exited(30)).code).toBe(0)
    }))
})
