// An MQTT.js client over WebSockets, driven by tests/integration/test_websocket.py.
//
//   node client.js '{"url": "ws://127.0.0.1:PORT/mqtt", "protocolVersion": 5, "clientId": "js-1",
//                    "will": {"topic": "dead/js-1", "payload": "gone", "qos": 1},
//                    "topic": "js/echo", "mode": "roundtrip" | "crash", "ca": "/path/ca.crt"}'
//
// It prints one JSON object per line: {"event": "connect", ...}, {"event": "message", ...}, ...
// mode "roundtrip": subscribe to `topic`, publish "hello from MQTT.js" to it at QoS 1, wait for it to
//   come back, then end() cleanly (DISCONNECT: no will) and print {"event": "done"}.
// mode "crash": once connected (and subscribed), print {"event": "crashing"} and exit at once with
//   process.exit(3): no end(), no DISCONNECT, so the broker must publish the will.
"use strict";

const fs = require("fs");
const mqtt = require("mqtt");

const opts = JSON.parse(process.argv[2]);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const connectOpts = {
  protocolVersion: opts.protocolVersion,
  clientId: opts.clientId,
  clean: true,
  keepalive: 30,
  reconnectPeriod: 0,
  connectTimeout: 5000,
};
if (opts.will) {
  connectOpts.will = { topic: opts.will.topic, payload: Buffer.from(opts.will.payload), qos: opts.will.qos, retain: false };
  if (opts.protocolVersion === 5) connectOpts.will.properties = { willDelayInterval: 0 };
}
if (opts.ca) {
  connectOpts.ca = fs.readFileSync(opts.ca);
  connectOpts.rejectUnauthorized = true;
}

const client = mqtt.connect(opts.url, connectOpts);
const timer = setTimeout(() => { say({ event: "timeout" }); process.exit(2); }, 10000);

client.on("error", (err) => { say({ event: "error", message: String(err && err.message) }); process.exit(1); });
client.on("connect", (connack) => {
  say({ event: "connect", sessionPresent: connack.sessionPresent,
        reasonCode: connack.reasonCode === undefined ? connack.returnCode : connack.reasonCode });
  client.subscribe(opts.topic, { qos: 1 }, (err, granted) => {
    if (err) { say({ event: "error", message: String(err.message) }); process.exit(1); }
    say({ event: "subscribed", granted: granted.map((g) => g.qos) });
    if (opts.mode === "crash") {
      say({ event: "crashing" });
      process.exit(3); // the process dies: the socket is closed by the OS, no DISCONNECT
    }
    client.publish(opts.topic, "hello from MQTT.js", { qos: 1 }, (perr) => {
      if (perr) { say({ event: "error", message: String(perr.message) }); process.exit(1); }
      say({ event: "published" });
    });
  });
});
client.on("message", (topic, payload) => {
  say({ event: "message", topic, payload: payload.toString() });
  if (opts.mode !== "crash") {
    client.end(false, {}, () => { clearTimeout(timer); say({ event: "done" }); });
  }
});
