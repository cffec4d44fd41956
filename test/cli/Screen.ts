/**
 * What a terminal shows for some output: `\r` returns to the start of the row, `\x1b[K`
 * erases to its end, `\n` starts a new row; other escapes (colours) are dropped. Enough to see
 * whether a progress line and a record ended up on one row. With `columns`, a character
 * written past the last column wraps to a new row first, as a terminal's autowrap does (the
 * cursor waits on the last column until the next character comes).
 */
export const rows = (text: string, columns = Number.POSITIVE_INFINITY): Array<string> => {
  const screen: Array<Array<string>> = [[]]
  let col = 0
  // eslint-disable-next-line no-control-regex
  const tokens = text.match(/\r\n|\n|\r|\x1b\[K|\x1b\[[0-9;?]*[A-Za-z]|[^\r\n\x1b]/gu) ?? []
  for (const token of tokens) {
    const row = screen[screen.length - 1]!
    if (token === "\n" || token === "\r\n") {
      screen.push([])
      col = 0
    } else if (token === "\r") {
      col = 0
    } else if (token === "\x1b[K") {
      row.length = col
    } else if (!token.startsWith("\x1b")) {
      if (col >= columns) {
        screen.push([])
        col = 0
      }
      screen[screen.length - 1]![col++] = token
    }
  }
  return screen.map((row) => row.join(""))
}
