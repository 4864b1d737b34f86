// Upload a file with tus-js-client under node; resumes from the URL stored by an earlier run.
// Usage: node tus_upload.js ENDPOINT FILE STORE_JSON [--chunk BYTES] [--parallel N] [--die-after BYTES]
// The account's API key comes from VSP_API_KEY; the video's id is printed once known.
"use strict";
const fs = require("fs");
const tus = require("tus-js-client");

const [endpoint, path, store, ...rest] = process.argv.slice(2);
const opts = { chunk: Infinity, parallel: 1, dieAfter: 0 };
for (let i = 0; i < rest.length; i += 2) {
  const name = rest[i].replace(/^--/, "").replace(/-(\w)/g, (_, c) => c.toUpperCase());
  opts[name] = Number(rest[i + 1]);
}
const size = fs.statSync(path).size;
const input = opts.parallel > 1 ? fs.readFileSync(path) : fs.createReadStream(path);

const upload = new tus.Upload(input, {
  endpoint,
  chunkSize: opts.chunk,
  uploadSize: opts.parallel > 1 ? undefined : size,
  parallelUploads: opts.parallel,
  retryDelays: [0, 500, 1000, 2000, 3000, 5000],
  metadata: { filename: path.split("/").pop(), title: "tus-js-client upload" },
  headers: { Authorization: `Bearer ${process.env.VSP_API_KEY}` },
  urlStorage: new tus.FileUrlStorage(store),
  fingerprint: async () => `vsp-test-${path}-${size}-${opts.parallel}`,
  onUploadUrlAvailable: () => console.log(`url ${upload.url}`),
  onChunkComplete: (_chunk, accepted) => {
    console.log(`offset ${accepted}`);
    if (opts.dieAfter && accepted >= opts.dieAfter) {
      process.kill(process.pid, "SIGKILL");
    }
  },
  onError: (error) => {
    console.error(`error ${error}`);
    process.exit(1);
  },
  onSuccess: () => {
    console.log(`done ${upload.url}`);
  },
});

upload.findPreviousUploads().then((previous) => {
  if (previous.length) {
    console.log(`resuming ${previous[0].uploadUrl || "parallel"}`);
    upload.resumeFromPreviousUpload(previous[0]);
  }
  upload.start();
});
