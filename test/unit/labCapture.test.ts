// The lab's leak checks know a WireGuard datagram by its addresses and port in tcpdump's line;
// this pins that reading on lines as tcpdump prints them (`-nn -e`).
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isDatagramTo } from "../../lab/capture";

const line = (rest: string) => `12:00:00.000000 02:00:00:00:00:0a > 02:00:00:00:00:01, ethertype IPv4 (0x0800), length 190: ${rest}`;

describe("lab captures", () => {
    it("a datagram to an endpoint, whatever tcpdump names it, from the given source", () => {
        const endpoints = ["203.0.113.10.51820", "203.0.113.40.51820"];
        assert.ok(isDatagramTo(line("192.168.1.10.40123 > 203.0.113.10.51820: UDP, length 148"), endpoints));
        assert.ok(isDatagramTo(line("192.168.1.10.49152 > 203.0.113.40.51820: BCM-LI-SHIM: direction unused"), endpoints), "port 49152 decoded as another protocol");
        assert.ok(isDatagramTo(line("192.168.1.10.40123 > 203.0.113.10.51820: UDP, length 148"), endpoints, ["192.168.1.10"]));
        assert.ok(!isDatagramTo(line("192.168.1.11.40123 > 203.0.113.10.51820: UDP, length 148"), endpoints, ["192.168.1.10"]), "another source");
        assert.ok(!isDatagramTo(line("192.168.1.10.40123 > 203.0.113.10.51821: UDP, length 148"), endpoints), "another port");
        assert.ok(!isDatagramTo(line("192.168.1.10.40123 > 203.0.113.10.51820: Flags [S], seq 1, length 0"), endpoints), "TCP to the same port");
        assert.ok(!isDatagramTo(line("192.168.1.10.40123 > 203.0.113.100.51820: UDP, length 148"), endpoints), "the endpoint's address is not a prefix");
    });
});
