// @ts-check
/**
 * The JavaScript client at work, as an aggregator: list markets, submit a columnar bid batch (one
 * segment per interval of a market), then follow the dispatch stream. Prints one JSON object per line:
 * {"type": "market", ...}, {"type": "ack", ...}, then {"type": "award"|"instruction", ...}.
 *
 *   node example.js --market da --resource pv --side sell --kw 150 --price 10 [--count 8]
 *
 * Connection: --server (default $DSOMARKET_SERVER or 127.0.0.1:50051), --token (default $DSOMARKET_TOKEN),
 * --ca/--cert/--key for TLS. Exits after --count dispatch events (default: runs until interrupted).
 */

import { parseArgs } from "node:util";
import { connect, fromTimestamp } from "./client.js";

const { values: args } = parseArgs({
  options: {
    server: { type: "string", default: process.env.DSOMARKET_SERVER ?? "127.0.0.1:50051" },
    token: { type: "string", default: process.env.DSOMARKET_TOKEN ?? "" },
    ca: { type: "string" }, cert: { type: "string" }, key: { type: "string" },
    market: { type: "string" },
    resource: { type: "string" },
    side: { type: "string", default: "sell" },
    kw: { type: "string", default: "100" },
    price: { type: "string", default: "10" },
    count: { type: "string", default: "0" },
  },
});

function fail(message) {
  process.stderr.write(`example.js: error: ${message}\n`);
  process.exit(2);
}

if (!args.token) fail("give --token or set DSOMARKET_TOKEN");
if (!args.market || !args.resource) fail("give --market and --resource");
if (!["buy", "sell"].includes(args.side ?? "")) fail("--side must be buy or sell");
const kw = Number(args.kw);
if (!(kw > 0)) fail("--kw must be a positive number of kW");

const print = (type, body) => process.stdout.write(JSON.stringify({ type, ...body }) + "\n");
const client = connect(args.server ?? "", args.token ?? "", { ca: args.ca, cert: args.cert, key: args.key });
try {
  let market;
  for await (const m of client.listMarkets()) {
    print("market", m);
    if (m.market_id === args.market) market = m;
  }
  if (!market) fail(`market ${args.market} is not among yours`);

  // One segment per interval: starts are delivery_start + k * interval_length (a Duration, seconds as text).
  const first = fromTimestamp(market.delivery_start).getTime();
  const step = Number(market.interval_length.seconds) * 1000;
  const segments = Array.from({ length: market.interval_count }, (_, k) => ({
    bid_id: `js-${args.resource}-${k}`, resource_id: args.resource ?? "", side: /** @type {"buy"|"sell"} */ (args.side),
    quantity_kw: kw, price: args.price ?? "", interval: new Date(first + k * step),
  }));
  const ack = await client.submitBids(args.market, segments);
  print("ack", { accepted: ack.accepted, acknowledged_at: fromTimestamp(ack.acknowledged_at).toISOString() });

  const limit = Number(args.count);
  let seen = 0;
  const events = client.dispatchStream({ market_id: args.market });
  try {
    for await (const event of events) {
      const body = event[event.event]; // oneofs: true names the member that is set
      print(event.event, { ...body, interval_start: fromTimestamp(body.interval_start).toISOString() });
      if (limit && ++seen >= limit) break;
    }
  } finally {
    // Leaving the loop does not end the call: cancel it (its CANCELLED error is expected, not a failure).
    events.on("error", () => {});
    events.cancel();
  }
} catch (err) {
  process.stderr.write(`example.js: error: ${err.code !== undefined ? `${err.code} ${err.details}` : err}\n`);
  process.exitCode = 1;
} finally {
  client.close();
}
