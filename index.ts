// wgexit: read the stack config, compose the components, export public facts.
// Every behaviour lives in components/<name>.ts and its renderer components/<name>.render.ts.
import * as pulumi from "@pulumi/pulumi";
import { CloudGateway } from "./components/cloudGateway";
import { gatewayPeerFor } from "./components/cloudGateway.render";
import { loadStackConfig } from "./components/config";
import { KvmSite } from "./components/kvmSite";
import { LaptopClient } from "./components/laptopClient";
import { RoamingClient } from "./components/roamingClient";

const config = loadStackConfig();
const sshPrivateKey = new pulumi.Config().requireSecret("sshPrivateKey");

// The gateway needs each site's and laptop VM's public key and they need the gateway's: their
// keys are promised here and delivered once they exist (no resource cycle: they install
// before the gateway's peer step).
const hostKeys = new Map([...config.sites, ...config.laptops].map((s) => [s.name, pulumi.deferredOutput<string>()]));
// Roaming clients' configs need the gateway's key and endpoint, promised the same way.
const [gatewayKey, resolveGatewayKey] = pulumi.deferredOutput<string>();
const [gatewayEndpointPromise, resolveGatewayEndpoint] = pulumi.deferredOutput<string>();
const clients = config.peers.map((peer) => {
    const tunnelPeer = config.tunnelPeers.find((p) => p.kind === "peer" && p.name === peer.name);
    if (!tunnelPeer) throw new Error(`peer ${peer.name} has no tunnel address`);
    const client = new RoamingClient(`peer-${peer.name}`, {
        publicKey: peer.publicKey,
        addressV4: tunnelPeer.addressV4,
        addressV6: tunnelPeer.addressV6,
        dns: peer.dns,
        mtu: config.gateway.tunnelMtu,
        gateway: { publicKey: gatewayKey, endpoint: gatewayEndpointPromise },
    });
    return { name: peer.name, client };
});
const clientKeys = new Map(clients.map((c) => [c.name, c.client.publicKey]));
const gatewayPeers = config.tunnelPeers.map((p) => ({
    ...gatewayPeerFor(p, config.tunnelPeers),
    publicKey: (p.kind === "peer" ? clientKeys.get(p.name) : hostKeys.get(p.name)?.[0]) as pulumi.Output<string>,
}));

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
    portForwards: config.portForwards,
});
resolveGatewayKey(gateway.publicKey);
resolveGatewayEndpoint(gateway.endpoint);

const sites = config.sites.map((site) => {
    const tunnelPeer = config.tunnelPeers.find((p) => p.kind === "site" && p.name === site.name);
    if (!tunnelPeer) throw new Error(`site ${site.name} has no tunnel address`);
    const kvm = new KvmSite(`site-${site.name}`, {
        site,
        addressV4: tunnelPeer.addressV4,
        addressV6: tunnelPeer.addressV6,
        tunnelMtu: config.gateway.tunnelMtu,
        gateway: { publicKey: gateway.publicKey, endpoint: gateway.endpoint },
        portForwards: config.portForwards.filter((f) => f.site === site.name),
        sshPrivateKey,
    });
    hostKeys.get(site.name)?.[1](kvm.publicKey);
    return { name: site.name, kvm };
});

const laptops = config.laptops.map((laptop) => {
    const tunnelPeer = config.tunnelPeers.find((p) => p.kind === "laptop" && p.name === laptop.name);
    if (!tunnelPeer) throw new Error(`laptop ${laptop.name} has no tunnel address`);
    const client = new LaptopClient(`laptop-${laptop.name}`, {
        laptop,
        addressV4: tunnelPeer.addressV4,
        addressV6: tunnelPeer.addressV6,
        tunnelMtu: config.gateway.tunnelMtu,
        gateway: { publicKey: gateway.publicKey, endpoint: gateway.endpoint, publicAddress: gateway.publicAddress, listenPort: config.gateway.listenPort },
        sshPrivateKey,
    });
    hostKeys.get(laptop.name)?.[1](client.publicKey);
    return { name: laptop.name, client };
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
export const sitePublicKeys = Object.fromEntries(sites.map((s) => [s.name, s.kvm.publicKey]));
export const siteGuests = Object.fromEntries(sites.map((s) => [s.name, s.kvm.guestAddresses]));
export const laptopPublicKeys = Object.fromEntries(laptops.map((l) => [l.name, l.client.publicKey]));
/** Ready-to-import configs for roaming clients (secret: a generated key is inside). */
export const clientConfigs = pulumi.secret(Object.fromEntries(clients.map((c) => [c.name, c.client.config])));
