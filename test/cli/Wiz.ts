/**
 * `wiz <args>` run in a test as `main.ts` runs it — a failure reported on the given stdio —
 * with the real file system, returning the exit code.
 */
import { NodeContext } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import * as Cli from "../../src/cli/Cli.js"
import type * as TestStdio from "./TestStdio.js"

export const exitCode = (stdio: TestStdio.TestStdio, ...args: ReadonlyArray<string>) =>
  Cli.run(["node", "wiz", ...args]).pipe(
    Effect.tapErrorCause(Cli.report),
    Effect.exit,
    Effect.map(Cli.exitCode),
    Effect.provide(Layer.merge(NodeContext.layer, stdio.layer))
  )
