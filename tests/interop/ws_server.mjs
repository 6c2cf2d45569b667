// An echo server built on node's `ws` library, on 127.0.0.1 and a free port. It prints
// {"port": N} first, then one JSON line per event. A text message "close CODE REASON"
// makes it close the connection with that code. It exits when its stdin closes.
import { WebSocketServer } from "ws";

const log = (event) => console.log(JSON.stringify(event));
const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });

server.on("listening", () => log({ port: server.address().port }));
server.on("connection", (ws, request) => {
  log({ event: "open", path: request.url });
  ws.on("message", (data, isBinary) => {
    const text = isBinary ? null : data.toString();
    const order = text && text.match(/^close (\d+) ?(.*)$/);
    if (order) ws.close(Number(order[1]), order[2]);
    else ws.send(data, { binary: isBinary });
  });
  ws.on("close", (code, reason) => log({ event: "close", code, reason: reason.toString() }));
});
process.stdin.on("end", () => server.close(() => process.exit(0)));
process.stdin.resume();
