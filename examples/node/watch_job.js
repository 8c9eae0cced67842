#!/usr/bin/env node
// A jobstatus client in Node.js, on the project's own proto/ (no generated code):
//
//   1. creates a map import,
//   2. watches it with until_settled, and when the connection drops, resumes from the
//      last revision it saw (it drops its own connection once on purpose, to show it),
//   3. as the job's runner, moves it to InProgress and Done, so the watch ends by itself,
//   4. asks for a transition the lifecycle forbids (Done -> InProgress) and decodes the
//      google.rpc.Status details of the refusal (the grpc-status-details-bin trailer).
//
// `node watch_job.js --watch ID` only watches ID until it settles (step 2 without the
// drop on purpose), resuming across whatever drops the connection, such as a restart of
// the server. Every step prints one JSON line on stdout. Settings, from the environment:
//   JOBSTATUS_GRPC_ADDR  the server (default 127.0.0.1:50051, as `make run` serves)
//   JOBSTATUS_API_KEY    an API key, sent as x-api-key (none in open mode)
//   JOBSTATUS_PROTO      the proto/ directory (default: this repository's)
// Run: npm ci && node watch_job.js [job id | --watch job id]
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const ADDRESS = process.env.JOBSTATUS_GRPC_ADDR || '127.0.0.1:50051';
const PROTO_DIR = process.env.JOBSTATUS_PROTO || path.resolve(__dirname, '..', '..', 'proto');
// google/rpc/*.proto (google.rpc.Status and its detail messages) from google-proto-files.
const GOOGLE_PROTOS = path.dirname(require.resolve('google-proto-files/package.json'));
const INCLUDE = [PROTO_DIR, GOOGLE_PROTOS];

const definition = protoLoader.loadSync('jobstatus/v1/map_import.proto', {
  includeDirs: INCLUDE,
  longs: String, // revisions are int64
  enums: String,
  defaults: true,
});
const jobstatus = grpc.loadPackageDefinition(definition).jobstatus.v1;

// The status details are google.protobuf.Any values: decode them with protobufjs.
const details = new protobuf.Root();
details.resolvePath = (_origin, target) => {
  for (const dir of INCLUDE) {
    const candidate = path.join(dir, target);
    if (fs.existsSync(candidate)) return candidate;
  }
  return target;
};
details.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
const Status = details.lookupType('google.rpc.Status');

function print(step, fields) {
  process.stdout.write(JSON.stringify({ step, ...fields }) + '\n');
}

function metadata() {
  const md = new grpc.Metadata();
  if (process.env.JOBSTATUS_API_KEY) md.set('x-api-key', process.env.JOBSTATUS_API_KEY);
  return md;
}

function connect() {
  return new jobstatus.MapImportService(ADDRESS, grpc.credentials.createInsecure());
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata(), { deadline: Date.now() + 10000 }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

// google.rpc.Status from a failed call's trailers: {code, message, details: [...]}, each
// detail decoded by its type URL and tagged with it, as grpcurl prints them.
function richStatus(err) {
  const [raw] = err.metadata ? err.metadata.get('grpc-status-details-bin') : [];
  if (!raw) return null;
  const status = Status.decode(raw);
  return {
    code: status.code,
    message: status.message,
    details: status.details.map((any) => {
      const type = details.lookupType(any.type_url.slice(any.type_url.lastIndexOf('/') + 1));
      return { '@type': any.type_url, ...type.toObject(type.decode(any.value), { enums: String }) };
    }),
  };
}

// Codes after which a watch is worth resuming: the connection or the server went away.
const RESUMABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.CANCELLED, grpc.status.INTERNAL]);
const GIVE_UP_MS = 60000; // without an event for this long, a dropped watch stops retrying

// Watch `id` until it settles. Every event goes to onEvent(event, dropConnection); after a
// dropped connection the watch resumes with start_revision = the last revision seen, so
// it gets exactly the changes it missed, none twice. Resolves with the last event.
async function watchUntilSettled(id, onEvent) {
  let lastRevision = '0'; // 0: the current state first, then every change
  let lastEvent = null;
  let lastHeard = Date.now();
  for (let attempt = 0; ; attempt++) {
    const client = connect();
    const outcome = await new Promise((resolve) => {
      const call = client.watchMapImportStatus(
        { importRequestIds: [id], startRevision: lastRevision, untilSettled: true },
        metadata(),
      );
      const drop = () => {
        client.close();
        call.cancel(); // as if the network went away under the stream
      };
      call.on('data', (event) => {
        if (event.type !== 'WATCH_EVENT_TYPE_HEARTBEAT') lastRevision = event.revision;
        lastEvent = event;
        lastHeard = Date.now();
        attempt = 0;
        onEvent(event, drop);
      });
      call.on('error', (err) => resolve(err));
      call.on('end', () => resolve(null));
    });
    client.close();
    if (outcome === null) return lastEvent; // until_settled: the job settled, the stream ended OK
    if (!RESUMABLE.has(outcome.code) || Date.now() - lastHeard > GIVE_UP_MS) throw outcome;
    print('dropped', { code: grpc.status[outcome.code], resume_from: lastRevision });
    await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** attempt, 1000)));
  }
}

function printEvent(event) {
  const job = event.mapImport;
  print('event', {
    type: event.type.replace('WATCH_EVENT_TYPE_', ''),
    revision: event.revision,
    ...(job && { status: job.status, progress: job.metaData ? job.metaData.progress : 0 }),
  });
}

async function watchOnly(id) {
  const settled = await watchUntilSettled(id, printEvent);
  print('settled', { status: settled.mapImport.status, revision: settled.revision });
}

async function main() {
  if (process.argv[2] === '--watch') return watchOnly(process.argv[3]);
  const id = process.argv[2] || `node-example-${crypto.randomUUID()}`;
  const runner = connect(); // the job runner's side, on its own connection

  const created = await unary(runner, 'createMapImport', {
    mapImport: { importRequestId: id },
    requestId: crypto.randomUUID(),
  });
  print('created', { id, status: created.mapImport.status, revision: created.mapImport.revision });

  let dropped = false;
  const settled = await watchUntilSettled(id, (event, drop) => {
    const job = event.mapImport;
    printEvent(event);
    if (event.type === 'WATCH_EVENT_TYPE_SYNCED') {
      // The runner starts the job: the watch sees the change.
      update(runner, id, 'MAP_IMPORT_STATUS_IN_PROGRESS', { progress: 30 }).catch(fail);
    } else if (event.type === 'WATCH_EVENT_TYPE_CHANGE' && job.metaData.progress === 30 && !dropped) {
      // The connection drops; meanwhile the runner moves on. The resumed watch gets
      // exactly what was missed.
      dropped = true;
      drop();
      update(runner, id, 'MAP_IMPORT_STATUS_IN_PROGRESS', { progress: 60 })
        .then(() =>
          update(runner, id, 'MAP_IMPORT_STATUS_DONE', {
            packageUrl: `https://packages.example.com/${id}.gpkg`,
            footprint: 'POLYGON((35 32,35.1 32,35.1 32.1,35 32))',
          }),
        )
        .catch(fail);
    }
  });
  print('settled', { status: settled.mapImport.status, revision: settled.revision });

  // A transition the lifecycle forbids: refused with FAILED_PRECONDITION and details.
  try {
    await update(runner, id, 'MAP_IMPORT_STATUS_IN_PROGRESS', {});
    throw new Error('the server accepted Done -> InProgress');
  } catch (err) {
    if (err.code !== grpc.status.FAILED_PRECONDITION) throw err;
    print('refused', { code: grpc.status[err.code], status: richStatus(err) });
  }
  runner.close();
}

function update(client, id, status, metaData) {
  const fields = ['status', ...Object.keys(metaData).map((f) => `meta_data.${snake(f)}`)];
  return unary(client, 'updateMapImport', {
    mapImport: { importRequestId: id, status, metaData },
    updateMask: { paths: fields },
  });
}

function snake(name) {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function fail(err) {
  print('error', { code: err.code, message: err.message });
  process.exit(1);
}

main().catch(fail);
