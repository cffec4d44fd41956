#!/usr/bin/env node
/**
 * The `wiz` executable: the command line of {@link Cli} on Node.js, with the process's
 * file system, terminal and standard streams. Failures are reported by `Cli.report` and mapped
 * to exit codes by `Cli.exitCode`; SIGINT and SIGTERM interrupt the run (which prints its
 * summary so far and how to continue) and exit 130 and 143; `wiz serve` drains what is in
 * flight and exits 0.
 *
 * @since 0.1.0
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Layer } from "effect"
import * as Cli from "./Cli.js"
import * as ServeCommand from "./ServeCommand.js"
import * as Stdio from "./Stdio.js"

// NodeRuntime.runMain interrupts the program on either signal but does not say which one.
let signal: keyof typeof Cli.signals = "SIGINT"
for (const name of ["SIGINT", "SIGTERM"] as const) {
  process.once(name, () => {
    signal = name
  })
}

Cli.run(process.argv).pipe(
  Effect.tapErrorCause(Cli.report),
  Effect.provide(Layer.merge(NodeContext.layer, Stdio.layer)),
  NodeRuntime.runMain({
    disableErrorReporting: true,
    // `wiz serve` stopped by a signal is a clean stop once it drained what was in flight
    teardown: (exit, onExit) => onExit(ServeCommand.stoppedGracefully() ? 0 : Cli.exitCode(exit, signal, process.argv[2]))
  })
)
