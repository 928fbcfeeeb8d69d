// Builds the lead-management demo (demo/) into echo_server/static/demo/, which echo-server
// serves at /demo (`echo-server demo` starts it with its backend). The output is not committed.
import { fileURLToPath, URL } from 'node:url';
import vue from '@vitejs/plugin-vue';
import { defineConfig } from 'vite';

export default defineConfig({
    root: fileURLToPath(new URL('./demo', import.meta.url)),
    base: '/demo/',
    plugins: [vue()],
    build: {
        outDir: fileURLToPath(new URL('../../echo_server/static/demo', import.meta.url)),
        emptyOutDir: true,
        chunkSizeWarningLimit: 1024,
    },
});
