// The benchmark's CPU profile sorts perf's samples into categories; this pins how, on lines in
// the format `perf script -F comm,ip,sym` prints, and that real perf output parses.
import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import { categorise, profileUnsupportedReason } from "../../bench/profile";

describe("benchmark CPU profile", () => {
    it("counts a sample by kernel function first, then by process; idle samples are not busy", () => {
        const lines = [
            "         swapper  ffffffff8225295b pv_native_safe_halt",
            "    wireguard-go  ffffffff81a0c2d0 nft_do_chain",
            "         iperf3  ffffffff81a0d110 nf_conntrack_in",
            "    wireguard-go  ffffffff81b10000 br_handle_frame",
            "  ksoftirqd/0  ffffffff81b20000 fib_table_lookup",
            "    wireguard-go            4a3f10 [unknown]",
            "    wireguard-go  ffffffff81c00000 _copy_from_iter",
            "         iperf3  ffffffff81c00000 _copy_from_iter",
            "not a sample line",
        ];
        const { busy, counts } = categorise(lines);
        assert.equal(busy, 7);
        assert.deepEqual(counts, { netfilter: 2, bridge: 1, routing: 1, "wireguard-go": 2 });
    });

    it("parses what perf prints on this machine", async (t) => {
        const reason = await profileUnsupportedReason();
        if (reason) return t.skip(`SKIPPED LOUDLY: ${reason}`);
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wgexit-perf-"));
        try {
            const data = path.join(dir, "perf.data");
            execFileSync("perf", ["record", "-q", "-e", "cpu-clock", "-a", "-F", "999", "-o", data, "--", "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"], { stdio: "ignore" });
            const lines = execFileSync("perf", ["script", "-i", data, "-F", "comm,ip,sym"], { maxBuffer: 1 << 26 }).toString().split("\n");
            assert.ok(categorise(lines).busy > 0, `no busy sample among ${lines.length} lines: ${lines.slice(0, 3).join(" | ")}`);
        } finally {
            fs.rmSync(dir, { recursive: true, force: true });
        }
    });
});
