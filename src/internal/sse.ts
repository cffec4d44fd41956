/**
 * An incremental decoder of `text/event-stream` bodies (the WHATWG Server-Sent Events format):
 * bytes in, in chunks cut anywhere (mid-line, mid-UTF-8 character, between a CR and its LF),
 * events out. Lines end with LF, CRLF or CR; `field: value` lines build an event and a blank
 * line dispatches it; `data` lines join with "\n"; comments (`:`), `id` and `retry` are ignored;
 * a byte-order mark at the start is dropped. A line longer than `maxLineLength` characters is
 * refused, so a server cannot make us buffer without bound.
 *
 * Plain mutable state, no Effect: it runs once per body chunk on the streaming hot path.
 *
 * @internal
 */

/** One dispatched event: its `event` field (`"message"` when absent) and its data. */
export interface Event {
  readonly event: string
  readonly data: string
}

/** @internal */
export class Decoder {
  private readonly text = new TextDecoder("utf-8")
  /** The current line so far: text after the last line end. */
  private pending = ""
  /** The last chunk ended with CR: an LF opening the next one belongs to it. */
  private afterCR = false
  private started = false
  /** The event's `data` lines so far, joined with "\n"; `undefined` before the first. */
  private data: string | undefined = undefined
  private event = ""

  constructor(private readonly maxLineLength: number) {}

  /**
   * Decodes `bytes`, appending each event it completes to `out`. Returns an error message when
   * a line grows past `maxLineLength`, `undefined` otherwise.
   */
  push(bytes: Uint8Array, out: Array<Event>): string | undefined {
    let chunk = this.text.decode(bytes, { stream: true })
    if (!this.started && chunk.length > 0) {
      this.started = true
      if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1)
    }
    return this.feed(chunk, out)
  }

  /**
   * The body ended: completes a last line without its line end, and dispatches an event whose
   * blank line never came (the standard drops it; servers that forget the last blank line are
   * common enough to forgive).
   */
  end(out: Array<Event>): string | undefined {
    const rest = this.text.decode()
    const error = rest === "" ? undefined : this.feed(rest, out)
    if (error !== undefined) return error
    if (this.pending !== "") {
      this.line(this.pending, out)
      this.pending = ""
    }
    this.line("", out)
    return undefined
  }

  private feed(chunk: string, out: Array<Event>): string | undefined {
    let start = 0
    if (this.afterCR) {
      this.afterCR = false
      if (chunk.charCodeAt(0) === 10) start = 1
    }
    const length = chunk.length
    // The next LF and CR, found with indexOf (much faster than a loop over charCodeAt) and
    // searched again only once passed: a body with no CR costs one failed search per chunk.
    let lf = chunk.indexOf("\n", start)
    let cr = chunk.indexOf("\r", start)
    while (start < length) {
      if (lf !== -1 && lf < start) lf = chunk.indexOf("\n", start)
      if (cr !== -1 && cr < start) cr = chunk.indexOf("\r", start)
      const end = lf === -1 ? (cr === -1 ? length : cr) : cr === -1 || lf < cr ? lf : cr
      const code = end === length ? 0 : chunk.charCodeAt(end)
      if (end === length) {
        const rest = chunk.slice(start)
        this.pending = this.pending === "" ? rest : this.pending + rest
        if (this.pending.length > this.maxLineLength) {
          return `an event-stream line is longer than ${this.maxLineLength} characters`
        }
        return undefined
      }
      const piece = chunk.slice(start, end)
      const line = this.pending === "" ? piece : this.pending + piece
      this.pending = ""
      if (line.length > this.maxLineLength) return `an event-stream line is longer than ${this.maxLineLength} characters`
      this.line(line, out)
      start = end + 1
      if (code === 13) {
        if (start === length) this.afterCR = true
        else if (chunk.charCodeAt(start) === 10) start++
      }
    }
    return undefined
  }

  private line(line: string, out: Array<Event>): void {
    if (line === "") {
      if (this.data !== undefined) out.push({ event: this.event === "" ? "message" : this.event, data: this.data })
      this.data = undefined
      this.event = ""
      return
    }
    if (line.charCodeAt(0) === 58) return // ":" comment
    const colon = line.indexOf(":")
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? "" : line.slice(colon + 1)
    if (value.charCodeAt(0) === 32) value = value.slice(1)
    if (field === "data") this.data = this.data === undefined ? value : `${this.data}\n${value}`
    else if (field === "event") this.event = value
  }
}
