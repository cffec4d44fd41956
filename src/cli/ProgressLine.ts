/**
 * The progress line of `wiz run` on stderr: the library's `Progress` drawn by its renderer, on
 * the terminal `Stdio` gives, until the scope closes. One module for the run with and without a
 * store, so both draw the same line.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Progress from "wiz-effect/events/Progress"
 * import * as ProgressLine from "wiz-effect/cli/ProgressLine"
 *
 * const program = Effect.gen(function* () {
 *   const progress = yield* Progress.make({ total: 10 })
 *   const line = yield* ProgressLine.draw(progress)
 *   yield* line.around(Effect.log("written above the line"))
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as Terminal from "@effect/platform/Terminal"
import { Effect } from "effect"
import * as Progress from "../events/Progress.js"
import { Stdio } from "./Stdio.js"

/**
 * Draw `progress` on stderr for the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const draw = (progress: Progress.Progress.Service) =>
  Effect.flatMap(Stdio, (stdio) =>
    Progress.renderer().pipe(
      Effect.provideService(
        Terminal.Terminal,
        Progress.outputTerminal({ display: stdio.stderr, isTTY: stdio.stderrIsTTY, columns: stdio.stderrColumns })
      ),
      Effect.provideService(Progress.Progress, progress)
    ))
