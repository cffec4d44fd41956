import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as Cli from "../../src/cli/Cli.js"
import { usage, UsageError } from "../../src/cli/UsageError.js"

describe("UsageError", () => {
  it("its message is the reason, as wiz prints it", () => {
    const error = usage("--resume needs --output FILE")
    expect(error).toBeInstanceOf(UsageError)
    expect([error._tag, error.reason, error.message]).toEqual(["UsageError", "--resume needs --output FILE", "--resume needs --output FILE"])
  })

  it.effect("a run that fails with it exits 2; any other failure exits 1", () =>
    Effect.gen(function*() {
      expect(Cli.exitCode(yield* Effect.exit(Effect.fail(usage("no"))))).toBe(2)
      expect(Cli.exitCode(yield* Effect.exit(Effect.fail(new Error("no"))))).toBe(1)
      expect(Cli.exitCode(Exit.succeed(undefined))).toBe(0)
    }))
})
