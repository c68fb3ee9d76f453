// Pure renderers for roaming clients (phone and laptop apps): the ready-to-import WireGuard
// config, and the X25519 public key of a generated private key.
import * as crypto from "node:crypto";

export interface ClientConfigSettings {
    /** The device's own private key, or undefined when the device made it (it stays there). */
    privateKey?: string;
    addressV4: string;
    addressV6: string;
    dns: string[];
    mtu: number;
    gatewayPublicKey: string;
    endpoint: string;
}

/** Stands where the device's own key goes when the program never saw it. */
export const OWN_KEY_PLACEHOLDER = "<this device's private key: the one whose public key is in the stack config>";

/** A wg-quick / WireGuard-app config: the whole internet through the gateway. */
export function renderClientConfig(s: ClientConfigSettings): string {
    return `[Interface]
PrivateKey = ${s.privateKey ?? OWN_KEY_PLACEHOLDER}
Address = ${s.addressV4}/32, ${s.addressV6}/128
${s.dns.length ? `DNS = ${s.dns.join(", ")}\n` : ""}MTU = ${s.mtu}

[Peer]
PublicKey = ${s.gatewayPublicKey}
Endpoint = ${s.endpoint}
AllowedIPs = 0.0.0.0/0, ::/0
PersistentKeepalive = 25
`;
}

// PKCS#8 wrapping of a raw X25519 private key (RFC 8410), so Node's crypto can load it.
const X25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");

/** `wg pubkey`: the public key of a base64 X25519 private key (any 32 bytes; clamping is X25519's). */
export function wireguardPublicKey(privateKeyBase64: string): string {
    const raw = Buffer.from(privateKeyBase64, "base64");
    if (raw.length !== 32) throw new Error("a WireGuard private key is 32 bytes");
    const key = crypto.createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, raw]), format: "der", type: "pkcs8" });
    const spki = crypto.createPublicKey(key).export({ format: "der", type: "spki" });
    return spki.subarray(spki.length - 32).toString("base64");
}
