/**
 * wiz-effect: the async patterns an AI agent system needs, as Effect combinators and services.
 *
 * @since 0.1.0
 */
export * from "./model/AiModel.js"
