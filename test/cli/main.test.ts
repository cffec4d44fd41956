/**
 * The `wiz` executable end to end: a child process on real files, pipes, terminals and
 * signals (issue 7, "the CLI must never lose or corrupt data").
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Process from "./Process.js"

const withTempDir = <A, E, R>(f: (dir: string, fs: FileSystem.FileSystem) => Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    return yield* f(yield* fs.makeTempDirectoryScoped(), fs)
  }).pipe(Effect.scoped, Effect.provide(NodeContext.layer))

describe("wiz (the executable)", () => {
  it.live("issue 7.10: --help on a pipe prints no ANSI escapes and the usage line $ wiz run", () =>
    withTempDir((dir) =>
      Effect.gen(function*() {
        const help = yield* Process.wiz(["run", "--help"], { cwd: dir })
        expect(help.code).toBe(0)
        expect(help.stdout).toContain("\n$ wiz run [(-o, --output FILE)]")
        expect(help.stdout).not.toContain("\x1b")
      })
    ))
})
