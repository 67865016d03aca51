// MQTT.js against a Telehub hub: for MQTT 3.1.1 and 5, a subscriber and a
// publisher exchange QoS 0, 1 and 2 messages on a device topic (stored,
// acknowledged after commit) and on a plain topic (forwarded only). Every
// message must arrive once and every publish be acknowledged. Prints one
// JSON line with what happened; exits 1 on any failure.
//
//   node interop.mjs mqtt://127.0.0.1:1883
import mqtt from 'mqtt';

const url = process.argv[2];
const fail = (msg) => { console.log(JSON.stringify({ ok: false, error: msg })); process.exit(1); };
setTimeout(() => fail('timed out'), 30000).unref();

function connect(opts) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

async function round(version) {
  const tag = 'v' + version;
  const sub = await connect({ protocolVersion: version, clientId: 'mqttjs-sub-' + tag, clean: true });
  const pub = await connect({ protocolVersion: version, clientId: 'mqttjs-pub-' + tag, clean: true });
  const topics = ['devices/mqttjs-' + tag + '/telemetry', 'mqttjs/' + tag + '/plain'];
  await sub.subscribeAsync(topics.map((t) => t), { qos: 2 });
  const want = new Set();
  const got = new Map();
  sub.on('message', (topic, payload) => {
    const k = topic + ' ' + payload.toString();
    got.set(k, (got.get(k) || 0) + 1);
  });
  for (const topic of topics) {
    for (const qos of [0, 1, 2]) {
      const payload = JSON.stringify({ qos, n: 1 });
      want.add(topic + ' ' + payload);
      const props = version === 5 ? { properties: { userProperties: { via: 'mqtt.js' } } } : {};
      await pub.publishAsync(topic, payload, { qos, ...props }); // resolves on PUBACK / PUBCOMP
    }
  }
  const deadline = Date.now() + 10000;
  while (got.size < want.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  for (const k of want) {
    if (got.get(k) !== 1) fail(tag + ': ' + k + ' arrived ' + (got.get(k) || 0) + ' times');
  }
  await sub.endAsync();
  await pub.endAsync();
  return { version, messages: want.size };
}

const results = [];
for (const v of [4, 5]) results.push(await round(v));
console.log(JSON.stringify({ ok: true, results }));
process.exit(0);
