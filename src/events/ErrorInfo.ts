/**
 * An error as data: its tag and a sentence. Task records (`AgentTask`) and agent events
 * (`AgentEvent`) carry errors in this shape, so they encode to JSON with one schema and a
 * reader can switch on `_tag` without the error's class. It sits below both, so neither
 * module depends on the other for it.
 *
 * @example
 * ```ts
 * import { AiModel, ErrorInfo } from "wiz-effect"
 *
 * ErrorInfo.fromError(new AiModel.Overloaded({ model: "gpt" }))
 * // { _tag: "Overloaded", message: "gpt: overloaded" }
 * ```
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * The tag and message of an error.
 *
 * @since 0.1.0
 * @category models
 */
export const ErrorInfo = Schema.Struct({
  _tag: Schema.String,
  message: Schema.String
})

/**
 * @since 0.1.0
 * @category models
 */
export type ErrorInfo = typeof ErrorInfo.Type

/**
 * The tag and message of any tagged error.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromError = (error: { readonly _tag: string; readonly message: string }): ErrorInfo => ({
  _tag: error._tag,
  message: error.message
})
