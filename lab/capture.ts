// Reading the lab's packet captures as `tcpdump -nn -e` prints them, one frame a line.

const escaped = (s: string) => s.replace(/\./g, "\\.");

/**
 * Whether a frame is a datagram to one of `endpoints` ("address.port"), from one of `sources`
 * (addresses) when given. Known by addresses and port, not by tcpdump's decoding: tcpdump names
 * some source ports' datagrams after another protocol (49152 prints as "BCM-LI-SHIM", seen in
 * CI), never a datagram as TCP ("Flags [").
 */
export function isDatagramTo(frame: string, endpoints: string[], sources?: string[]): boolean {
    const from = sources ? `: (${sources.map(escaped).join("|")})\\.\\d+` : "";
    return !/: Flags \[/.test(frame) && new RegExp(`${from} > (${endpoints.map(escaped).join("|")}): `).test(frame);
}
