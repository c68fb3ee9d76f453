// IP and CIDR helpers shared by config validation and the renderers.
// All parsing is done by `ip-address`; this file only combines its answers.
import { Address4, Address6 } from "ip-address";

export type Family = 4 | 6;

export interface Cidr {
    /** Canonical text, e.g. "10.66.0.0/24" or "fd66:66:66::/64". */
    text: string;
    family: Family;
    prefix: number;
    first: bigint;
    last: bigint;
}

function parseAddress(text: string): Address4 | Address6 | undefined {
    if (Address4.isValid(text)) return new Address4(text);
    if (Address6.isValid(text)) return new Address6(text);
    return undefined;
}

/** Parses "a.b.c.d/n" or "x::/n". Returns undefined for anything else, including a bare address. */
export function parseCidr(text: string): Cidr | undefined {
    if (!text.includes("/")) return undefined;
    const addr = parseAddress(text);
    if (!addr) return undefined;
    const family: Family = addr instanceof Address4 ? 4 : 6;
    const start = addr.startAddress();
    return {
        text: `${start.correctForm()}/${addr.subnetMask}`,
        family,
        prefix: addr.subnetMask,
        first: start.bigInt(),
        last: addr.endAddress().bigInt(),
    };
}

/** True when the text has host bits set, e.g. "10.66.0.5/24". */
export function hasHostBits(text: string): boolean {
    const addr = parseAddress(text);
    if (!addr) return false;
    return addr.bigInt() !== addr.startAddress().bigInt();
}

/** Private space: RFC 1918, shared address space (RFC 6598) and IPv6 unique local addresses. */
const PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"].map((c) => parseCidr(c) as Cidr);

/** True when the whole prefix lies in private (RFC 1918, RFC 6598) or ULA space. */
export function isPrivate(c: Cidr): boolean {
    return PRIVATE.some((p) => p.family === c.family && contains(p, c));
}

export function isAddress(text: string, family?: Family): boolean {
    if (text.includes("/")) return false;
    if (family !== 6 && Address4.isValid(text)) return true;
    return family !== 4 && Address6.isValid(text);
}

export function overlaps(a: Cidr, b: Cidr): boolean {
    return a.family === b.family && a.first <= b.last && b.first <= a.last;
}

export function contains(outer: Cidr, inner: Cidr): boolean {
    return outer.family === inner.family && outer.first <= inner.first && inner.last <= outer.last;
}

/** Number of addresses in the block. */
export function size(c: Cidr): bigint {
    return c.last - c.first + 1n;
}

/** The address `index` places after the network address, as plain text. */
export function hostAt(c: Cidr, index: number): string {
    const value = c.first + BigInt(index);
    if (value > c.last) throw new Error(`index ${index} is outside ${c.text}`);
    return c.family === 4 ? Address4.fromBigInt(value).correctForm() : Address6.fromBigInt(value).correctForm();
}

/** The inverse of hostAt: how far `address` lies after the network address, if inside `c`. */
export function indexIn(c: Cidr, address: string): number | undefined {
    const parsed = parseCidr(hostCidr(address));
    return parsed && contains(c, parsed) ? Number(parsed.first - c.first) : undefined;
}

/** "10.66.0.2/32" style host route for an address. */
export function hostCidr(address: string): string {
    return Address4.isValid(address) ? `${address}/32` : `${address}/128`;
}
