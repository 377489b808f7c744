// Server-sent events, parsed from text chunks as fetch delivers them.
//
// EventSource cannot send an Authorization header, and the token must never go into a URL,
// so the console reads the watch stream with fetch and parses it here (the WHATWG
// "event stream interpretation": fields per line, an event per blank line, ':' a comment).

export class SseParser {
  constructor() {
    this.buffer = "";
    this.type = "";
    this.data = [];
  }

  // Feed one chunk; the complete events in it (and in what was left before), in order.
  push(chunk) {
    this.buffer += chunk;
    const events = [];
    let end;
    while ((end = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, end);
      const newline = this.buffer.startsWith("\r\n", end) ? 2 : 1;
      // A lone "\r" at the chunk's end may be the first half of "\r\n": wait for more.
      if (newline === 1 && this.buffer[end] === "\r" && end === this.buffer.length - 1) break;
      this.buffer = this.buffer.slice(end + newline);
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  line(line) {
    if (line === "") {
      if (this.data.length === 0) {
        this.type = "";
        return null;
      }
      const event = { type: this.type || "message", data: this.data.join("\n") };
      this.type = "";
      this.data = [];
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    return null;
  }
}
