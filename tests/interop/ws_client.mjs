// A client built on node's `ws` library: sends a text and a binary message, prints what comes
// back as JSON lines, then closes with the code and reason given on the command line.
// Usage: node ws_client.mjs URL [CODE] [REASON]
import { WebSocket } from "ws";

const [url, code = "1000", reason = ""] = process.argv.slice(2);
const log = (event) => console.log(JSON.stringify(event));
const ws = new WebSocket(url);
const timer = setTimeout(() => { log({ event: "timeout" }); process.exit(2); }, 10000);
let received = 0;

ws.on("open", () => {
  log({ event: "open", protocol: ws.protocol });
  ws.send("héllo, wörld");
  ws.send(Buffer.from([0, 1, 2, 255]));
});
ws.on("message", (data, isBinary) => {
  log({ event: "message", binary: isBinary, data: isBinary ? [...data] : data.toString() });
  if (++received === 2) ws.close(Number(code), reason);
});
ws.on("close", (closeCode, closeReason) => {
  log({ event: "close", code: closeCode, reason: closeReason.toString() });
  clearTimeout(timer);
});
ws.on("error", (error) => { log({ event: "error", message: error.message }); process.exitCode = 1; });
