// @ts-check
/**
 * JavaScript client of the dsomarket gRPC API (package dsomarket.v1), loaded from proto/ at run time.
 *
 * The loader options matter: with @grpc/proto-loader's defaults, snake_case fields are renamed to
 * camelCase (so `market_id` reads as undefined), 64-bit integers arrive as Long objects, enums as
 * numbers, unset fields are missing and a oneof does not say which member is set. LOADER_OPTIONS
 * keeps the field names of the .proto files, gives uint64 as decimal strings, enums as their names
 * (e.g. "SIDE_SELL"), fills in defaults, and adds the oneof's name (e.g. event: "award").
 *
 * Times are google.protobuf.Timestamp messages {seconds: string, nanos: number} (seconds is a string
 * because of `longs: String`); toTimestamp() and fromTimestamp() convert from and to JavaScript Dates
 * (millisecond precision: the server's microseconds beyond that are dropped by fromTimestamp(); keep
 * the raw message to compare or echo a time exactly). Prices and money are decimal strings; never turn
 * them into numbers to do arithmetic with them. Power is kW, prices per MWh, as in docs/api.md.
 */

import path from "node:path";
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The repository's proto/ folder: the one contract both sides are built from. */
export const PROTO_ROOT = path.resolve(HERE, "..", "..", "proto");

/** @type {protoLoader.Options} */
export const LOADER_OPTIONS = {
  keepCase: true, // field names as in the .proto files (market_id, not marketId)
  longs: String, // uint64 (sequence numbers, Timestamp.seconds) as decimal strings, never lossy numbers
  enums: String, // enum values by name ("MARKET_STATE_OPEN"); requests may use names too
  defaults: true, // unset scalars read as 0, "", false and [] instead of undefined
  oneofs: true, // a oneof's name tells which member is set: event.event === "award"
  includeDirs: [PROTO_ROOT],
};

const FILES = ["market", "operator", "aggregator", "iso", "audit", "flexibility"].map(
  (name) => `dsomarket/v1/${name}.proto`,
);

/** Load the dsomarket.v1 package from proto/ with LOADER_OPTIONS. */
export function loadApi(protoRoot = PROTO_ROOT) {
  const definition = protoLoader.loadSync(FILES, { ...LOADER_OPTIONS, includeDirs: [protoRoot] });
  // @ts-ignore: the package object is built at run time from the .proto files
  return grpc.loadPackageDefinition(definition).dsomarket.v1;
}

/** A Date (or ISO 8601 text) as a google.protobuf.Timestamp message. */
export function toTimestamp(value) {
  const ms = value instanceof Date ? value.getTime() : Date.parse(value);
  if (Number.isNaN(ms)) throw new Error(`not a time: ${value}`);
  const seconds = Math.floor(ms / 1000);
  return { seconds: String(seconds), nanos: (ms - seconds * 1000) * 1e6 };
}

/** A google.protobuf.Timestamp message (seconds as a string or number) as a Date, to the millisecond. */
export function fromTimestamp(ts) {
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6));
}

/**
 * Bid segments in the columnar form SubmitBids takes (interval starts dictionary-encoded).
 * @param {{bid_id: string, resource_id: string, side: "buy"|"sell", quantity_kw: number, price: string,
 *          interval: Date|string, tan_phi?: number}[]} segments
 */
export function bidColumns(segments) {
  const starts = new Map();
  const cols = { bid_id: [], resource_id: [], side: [], quantity_kw: [], price: [], interval_starts: [],
                 interval_index: [], tan_phi: [] };
  for (const s of segments) {
    const key = new Date(s.interval).toISOString();
    if (!starts.has(key)) {
      starts.set(key, starts.size);
      cols.interval_starts.push(toTimestamp(key));
    }
    cols.bid_id.push(s.bid_id);
    cols.resource_id.push(s.resource_id);
    cols.side.push(s.side === "buy" ? "SIDE_BUY" : "SIDE_SELL");
    cols.quantity_kw.push(s.quantity_kw);
    cols.price.push(String(s.price));
    cols.interval_index.push(starts.get(key));
    cols.tan_phi.push(s.tan_phi ?? 0);
  }
  if (cols.tan_phi.every((t) => t === 0)) cols.tan_phi = []; // an empty column means 0 for all
  return cols;
}

/**
 * A connection for one participant token.
 *
 * @param {string} target host:port
 * @param {string} token the participant's token (`dsomarket token create`)
 * @param {{ca?: string, cert?: string, key?: string, timeoutSeconds?: number}} [options] PEM file paths
 *        (TLS when ca is given; mutual TLS with cert and key) and the deadline of each unary call
 */
export function connect(target, token, options = {}) {
  const api = loadApi();
  const credentials = options.ca
    ? grpc.credentials.createSsl(fs.readFileSync(options.ca),
        options.key ? fs.readFileSync(options.key) : null, options.cert ? fs.readFileSync(options.cert) : null)
    : grpc.credentials.createInsecure();
  const limits = { "grpc.max_receive_message_length": 32 * 1024 * 1024,
                   "grpc.max_send_message_length": 32 * 1024 * 1024 };
  const stubs = {};
  for (const name of ["MarketService", "OperatorService", "AggregatorService", "IsoService", "AuditService",
                      "FlexibilityService"]) {
    stubs[name] = new api[name](target, credentials, limits);
  }
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  const timeout = (options.timeoutSeconds ?? 30) * 1000;

  /** Call a unary method; rejects with the gRPC error (its `code` and `details`). */
  function call(service, method, request) {
    return new Promise((resolve, reject) => {
      stubs[service][method](request, metadata, { deadline: Date.now() + timeout },
        (err, reply) => (err ? reject(err) : resolve(reply)));
    });
  }

  /** Every item of a paged List method (`items` names the repeated field). */
  async function* pages(service, method, request, items) {
    let token = "";
    do {
      const reply = await call(service, method, { ...request, pagination: { page_size: 10000, page_token: token } });
      yield* reply[items];
      token = reply.pagination.next_page_token;
    } while (token);
  }

  /** A server stream as an async iterator (cancel it with `return()` or by leaving a for-await loop). */
  function stream(service, method, request) {
    return stubs[service][method](request, metadata);
  }

  return {
    api,
    call,
    pages,
    stream,
    /** Markets the caller may see. */
    listMarkets: (filter = {}) => pages("MarketService", "ListMarkets", { filter }, "markets"),
    /** Submit new bid segments, all or none; resolves to {accepted, acknowledged_at}. */
    submitBids: (marketId, segments, requestId = "") =>
      call("AggregatorService", "SubmitBids", { market_id: marketId, request_id: requestId,
                                                 bids: bidColumns(segments) }),
    /** Awards and instructions after `afterSequence` (a decimal string), then live. */
    dispatchStream: (filter = {}, afterSequence = "0") =>
      stream("AggregatorService", "ReceiveDispatchStream", { filter, after_sequence: afterSequence }),
    close: () => Object.values(stubs).forEach((s) => s.close()),
  };
}
