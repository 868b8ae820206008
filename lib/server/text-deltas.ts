/**
 * The text a stream may send so far. The generated text is decoded whole after every token, so its
 * end can still change: an incomplete UTF-8 character decodes as U+FFFD until its last byte arrives,
 * and text that may be the start of a stop string is cut if the stop string completes. Only the part
 * that cannot change any more is sent.
 */
const REPLACEMENT = '\uFFFD';

export class TextDeltas {
  private sent = 0;

  constructor(private readonly stops: readonly string[]) {}

  /** The new text that is safe to send, given all the text so far. */
  next(text: string): string {
    let end = text.length;
    while (end > this.sent && text[end - 1] === REPLACEMENT) end--;
    end = Math.min(end, this.heldForStops(text, end));
    if (end <= this.sent) return '';
    const delta = text.slice(this.sent, end);
    this.sent = end;
    return delta;
  }

  /** The rest of the final text (the generation is over: nothing more can change). */
  finish(text: string): string {
    if (text.length <= this.sent) return '';
    const delta = text.slice(this.sent);
    this.sent = text.length;
    return delta;
  }

  /** Where a possible beginning of a stop string starts in text[0, end), or end. */
  private heldForStops(text: string, end: number): number {
    let held = end;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, end); k > 0; k--) {
        if (text.startsWith(stop.slice(0, k), end - k)) {
          held = Math.min(held, end - k);
          break;
        }
      }
    }
    return held;
  }
}
