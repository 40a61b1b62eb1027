import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The page is served by the Python app (web/app.py) from web/static/dist/.
// `npm run dev` proxies the API and the WebSocket to a `python -m bot serve` on :7860.
const backend = process.env.VOICE_AGENT_URL ?? "http://127.0.0.1:7860";

export default defineConfig({
  base: "/",
  build: {
    outDir: "../static/dist",
    emptyOutDir: true,
    target: "es2022",
  },
  resolve: {
    // The transports' default media managers need daily-js; ours (src/media.ts) does not.
    alias: { "@daily-co/daily-js": fileURLToPath(new URL("./src/daily-stub.ts", import.meta.url)) },
  },
  server: {
    proxy: {
      "/api": backend,
      "/ws": { target: backend.replace(/^http/, "ws"), ws: true },
    },
  },
});
