// wgexit: read the stack config, compose the components, export public facts.
// Every behaviour lives in components/<name>.ts and its renderer components/<name>.render.ts.
import * as pulumi from "@pulumi/pulumi";
import { CloudGateway } from "./components/cloudGateway";
import { gatewayPeerFor } from "./components/cloudGateway.render";
import { loadStackConfig } from "./components/config";

const config = loadStackConfig();
const sshPrivateKey = new pulumi.Config().requireSecret("sshPrivateKey");

const peerKeys = new Map(config.peers.map((p) => [p.name, p.publicKey]));
const gatewayPeers = config.tunnelPeers
    .filter((p) => p.kind === "peer")
    .map((p) => ({ ...gatewayPeerFor(p, config.tunnelPeers), publicKey: peerKeys.get(p.name) as string }));

const gateway = new CloudGateway("gateway", {
    placement: config.placement,
    settings: config.gateway,
    existing: config.existing,
    oci: config.oci,
    ovh: config.ovh,
    sshUser: config.sshUser,
    sshPublicKey: config.sshPublicKey,
    sshPrivateKey,
    peers: gatewayPeers,
});

export const gatewayPublicKey = gateway.publicKey;
export const gatewayEndpoint = gateway.endpoint;
export const gatewayAddress = gateway.publicAddress;
export const tunnel = {
    cidr: config.gateway.tunnelCidr,
    cidrV6: config.gateway.tunnelCidrV6,
    gatewayAddress: config.gateway.addressV4,
    gatewayAddressV6: config.gateway.addressV6,
    mtu: config.gateway.tunnelMtu,
};
export const peerAddresses = Object.fromEntries(
    config.tunnelPeers.map((p) => [p.name, { addressV4: p.addressV4, addressV6: p.addressV6, routedCidrs: p.routedCidrs }]),
);
