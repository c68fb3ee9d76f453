// Config validation: every problem is reported at once, each naming its key and a fix.
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, parseStackConfig } from "../../components/config";
import { baseConfig, configProblems, configValues, LAPTOP, PEER_KEY, TEST_SSH_ENCRYPTED_KEY, TEST_SSH_PUBLIC_KEY } from "../helpers/program";


const site = (over: Record<string, unknown> = {}) => ({
    name: "home",
    connection: { host: "192.168.1.10", user: "root" },
    lanCidrs: ["192.168.1.0/24"],
    networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24" }],
    ...over,
});

const laptop = (over: Record<string, unknown> = {}) => ({ ...LAPTOP, ...over });

const forward = (over: Record<string, unknown> = {}) => ({
    name: "web",
    protocol: "tcp",
    port: 443,
    site: "home",
    guest: "web1",
    ...over,
});
const siteWithGuest = () => site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", guests: [{ name: "web1", image: "/img/a.qcow2" }] }] });

describe("valid configs", () => {
    it("a peer that owns public space may route it, once it says so", () => {
        const cfg = parseStackConfig(configValues({ ...baseConfig("existing"), peers: [{ name: "office", publicKey: PEER_KEY, allowedIps: ["192.0.2.0/28"], allowPublicPrefixes: true }] }));
        assert.deepEqual(cfg.peers[0].allowedIps, ["192.0.2.0/28"]);
    });
    it("two homes may use the same LAN prefix (they are different places)", () => {
        const cabin = site({ name: "cabin", connection: { host: "192.168.1.20", user: "root" }, networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.110.0/24" }] });
        assert.equal(parseStackConfig(configValues({ ...baseConfig("existing"), sites: [site(), cabin] })).sites.length, 2);
    });
    it("accepts names as the vendors spell them: a macOS service with '/', an OVH 3-AZ region", () => {
        assert.equal(parseStackConfig(configValues({ ...baseConfig("existing"), laptops: [laptop({ networkService: "USB 10/100/1000 LAN" })] })).laptops[0].networkService, "USB 10/100/1000 LAN");
        assert.equal(parseStackConfig(configValues({ ...baseConfig("ovh"), ovh: { serviceName: "0123456789abcdef0123456789abcdef", region: "EU-WEST-PAR" } })).ovh?.region, "EU-WEST-PAR");
    });
    it("a small network gives its guests static addresses below its DHCP pool, pinned or not", () => {
        const small = site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/28", guests: [{ name: "a", image: "/img/a.qcow2", hostIndex: 2 }, { name: "b", image: "/img/a.qcow2" }] }] });
        const cfg = parseStackConfig(configValues({ ...baseConfig("existing"), sites: [small] }));
        assert.deepEqual(cfg.sites[0].networks[0].guests.map((g) => g.addressV4), ["192.168.100.2", "192.168.100.3"]);
    });
    it("resolves a port forward to its guest's static address and bridge", () => {
        const cfg = parseStackConfig(configValues({ ...baseConfig("existing"), sites: [siteWithGuest()], portForwards: [forward({ toPort: 8443 }), forward({ name: "dns", protocol: "udp", port: 53, guest: undefined, address: "192.168.100.200" })] }));
        assert.deepEqual(cfg.portForwards, [
            { name: "web", protocol: "tcp", port: 443, site: "home", address: "192.168.100.10", bridge: "virbr-wg", toPort: 8443 },
            { name: "dns", protocol: "udp", port: 53, site: "home", address: "192.168.100.200", bridge: "virbr-wg", toPort: 53 },
        ]);
    });
    for (const placement of ["existing", "oci", "ovh"] as const) {
        it(`accepts the ${placement} example and fills defaults`, () => {
            const cfg = parseStackConfig(configValues(baseConfig(placement)));
            assert.equal(cfg.placement, placement);
            assert.equal(cfg.gateway.listenPort, 51820);
            assert.equal(cfg.gateway.addressV4, "10.66.0.1");
            assert.equal(cfg.tunnelPeers[0].addressV4, "10.66.0.2");
        });
    }
    it("allocates stable tunnel addresses, honouring explicit hostIndex", () => {
        const cfg = parseStackConfig(configValues({ ...baseConfig("existing"), peers: [{ name: "nas", publicKey: PEER_KEY, hostIndex: 10 }, { name: "phone", publicKey: PEER_KEY }, { name: "tablet", publicKey: PEER_KEY, hostIndex: 2 }] }));
        assert.deepEqual(
            cfg.tunnelPeers.map((p) => [p.name, p.addressV4, p.addressV6]),
            [["nas", "10.66.0.10", "fd66:66:66::a"], ["phone", "10.66.0.3", "fd66:66:66::3"], ["tablet", "10.66.0.2", "fd66:66:66::2"]],
        );
    });
    it("works out a site's bridge, DHCP pool, static guest addresses and stable MACs", () => {
        const guests = [{ name: "web", image: "/img/a.qcow2" }, { name: "db", image: "https://img.example/b.qcow2", hostIndex: 20, mac: "52:54:00:aa:bb:cc" }];
        const cfg = parseStackConfig(configValues({ ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", cidrV6: "fd66:100::/64", guests }] })] }));
        const n = cfg.sites[0].networks[0];
        assert.deepEqual([n.bridgeV4, n.bridgeV6, n.dhcpFirst, n.dhcpLast], ["192.168.100.1", "fd66:100::1", "192.168.100.128", "192.168.100.254"]);
        assert.deepEqual(n.guests.map((g) => [g.name, g.addressV4]), [["web", "192.168.100.10"], ["db", "192.168.100.20"]]);
        assert.match(n.guests[0].mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
        assert.equal(n.guests[1].mac, "52:54:00:aa:bb:cc");
        const again = parseStackConfig(configValues({ ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", guests }] })] }));
        assert.equal(again.sites[0].networks[0].guests[0].mac, n.guests[0].mac, "derived MACs are stable");
        assert.deepEqual(cfg.tunnelPeers[0], { name: "home", kind: "site", hostIndex: 2, addressV4: "10.66.0.2", addressV6: "fd66:66:66::2", routedCidrs: ["192.168.100.0/24", "fd66:100::/64"], canReach: [] });
    });
    it("allows world SSH only with the opt-in", () => {
        assert.equal(configProblems({ ...baseConfig("existing"), adminCidrs: ["0.0.0.0/0"], allowWorldSsh: true }).length, 0);
    });
});

// [description, config, key that must be named, words the message must contain]
const MALFORMED: [string, Record<string, unknown>, string, RegExp][] = [
    ["unknown placement", { ...baseConfig("existing"), placement: "aws" }, "wgexit:placement", /one of "existing", "oci" or "ovh"/],
    ["port out of range", { ...baseConfig("existing"), listenPort: 70000 }, "wgexit:listenPort", /out of range.*51820/],
    ["port zero", { ...baseConfig("existing"), listenPort: 0 }, "wgexit:listenPort", /out of range/],
    ["port not a number", { ...baseConfig("existing"), listenPort: "http" }, "wgexit:listenPort", /whole number/],
    ["MTU below IPv6 minimum", { ...baseConfig("existing"), tunnelMtu: 1000 }, "wgexit:tunnelMtu", /1280/],
    ["interface name too long", { ...baseConfig("existing"), wgInterface: "wireguard-exit-0" }, "wgexit:wgInterface", /1-15/],
    ["interface name with slash", { ...baseConfig("existing"), wgInterface: "wg/0" }, "wgexit:wgInterface", /not valid.*"wg0"/],
    ["shell metacharacters in interface", { ...baseConfig("existing"), wgInterface: "wg0;reboot" }, "wgexit:wgInterface", /shell metacharacters/],
    ["shell metacharacters in host", { ...baseConfig("existing"), existing: { host: "$(curl evil)" } }, "wgexit:existing.host", /shell metacharacters/],
    ["shell metacharacters in user", { ...baseConfig("existing"), existing: { host: "198.51.100.10", user: "root`id`" } }, "wgexit:existing.user", /shell metacharacters/],
    ["shell metacharacters in bridge", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "br|x", cidr: "192.168.100.0/24" }] })] }, "wgexit:sites[0].networks[0].bridge", /shell metacharacters/],
    ["shell metacharacters in CIDR", { ...baseConfig("existing"), tunnelCidr: "10.66.0.0/24;id" }, "wgexit:tunnelCidr", /shell metacharacters/],
    ["public key too short", { ...baseConfig("existing"), peers: [{ name: "phone", publicKey: "abc=" }] }, "wgexit:peers[0].publicKey", /32 bytes of base64/],
    ["public key is 33 bytes", { ...baseConfig("existing"), peers: [{ name: "phone", publicKey: Buffer.alloc(33, 1).toString("base64") }] }, "wgexit:peers[0].publicKey", /wg genkey \| wg pubkey/],
    ["tunnel and guest subnets overlap", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "10.66.0.0/25" }] })] }, "wgexit:sites[0].networks[0].cidr", /overlaps wgexit:tunnelCidr/],
    ["guest and LAN subnets overlap", { ...baseConfig("existing"), sites: [site({ lanCidrs: ["192.168.0.0/16"] })] }, "wgexit:sites[0].networks[0].cidr", /overlaps wgexit:sites\[0\].lanCidrs\[0\]/],
    ["two sites share a guest subnet", { ...baseConfig("existing"), sites: [site(), site({ name: "office", lanCidrs: [] })] }, "wgexit:sites[1].networks[0].cidr", /overlaps/],
    ["peer subnet overlaps the tunnel", { ...baseConfig("existing"), peers: [{ name: "phone", publicKey: PEER_KEY, allowedIps: ["10.66.0.128/25"] }] }, "wgexit:peers[0].allowedIps[0]", /overlaps/],
    ["CIDR with host bits", { ...baseConfig("existing"), tunnelCidr: "10.66.0.5/24" }, "wgexit:tunnelCidr", /host bits.*10\.66\.0\.0\/24/],
    ["IPv6 where IPv4 is needed", { ...baseConfig("existing"), tunnelCidr: "fd00::/64" }, "wgexit:tunnelCidr", /IPv4 CIDR/],
    ["tunnel too small", { ...baseConfig("existing"), tunnelCidr: "10.66.0.0/30" }, "wgexit:tunnelCidr", /too small/],
    ["missing OCI compartment", { ...baseConfig("oci"), oci: { shape: "VM.Standard.A1.Flex" } }, "wgexit:oci.compartmentId", /compartment|string/],
    ["OCI left at its empty default", { ...baseConfig("oci"), oci: {} }, "wgexit:oci", /required when placement is "oci"/],
    ["host key as a fingerprint", { ...baseConfig("existing"), existing: { host: "198.51.100.10", hostKey: "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s" } }, "wgexit:existing.hostKey", /authorized_keys form.*ssh-keyscan/],
    ["host key as a known_hosts line", { ...baseConfig("existing"), existing: { host: "198.51.100.10", hostKey: `198.51.100.10 ${TEST_SSH_PUBLIC_KEY}` } }, "wgexit:existing.hostKey", /authorized_keys form/],
    ["a passphrase-protected key without its passphrase", { ...baseConfig("existing"), sshPrivateKey: TEST_SSH_ENCRYPTED_KEY }, "wgexit:sshPrivateKeyPassword", /passphrase.*pulumi config set --secret sshPrivateKeyPassword/],
    ["an SSH public key that is not one", { ...baseConfig("oci"), sshPublicKey: "ssh-ed25519 bm90IGEga2V5 me@laptop" }, "wgexit:sshPublicKey", /not an OpenSSH public key/],
    ["missing OCI object", { ...baseConfig("oci"), oci: undefined }, "wgexit:oci", /required when placement is "oci"/],
    ["malformed OCI compartment", { ...baseConfig("oci"), oci: { compartmentId: "my-compartment" } }, "wgexit:oci.compartmentId", /OCID/],
    ["missing OVH region", { ...baseConfig("ovh"), ovh: { serviceName: "0123456789abcdef0123456789abcdef" } }, "wgexit:ovh.region", /string|region/],
    ["bad OVH project id", { ...baseConfig("ovh"), ovh: { serviceName: "my-project", region: "GRA11" } }, "wgexit:ovh.serviceName", /32 hex/],
    ["missing existing host", { ...baseConfig("existing"), existing: undefined }, "wgexit:existing", /required when placement is "existing"/],
    ["world SSH without opt-in", { ...baseConfig("existing"), adminCidrs: ["0.0.0.0/0"] }, "wgexit:adminCidrs[0]", /allowWorldSsh: true/],
    ["world SSH over IPv6 without opt-in", { ...baseConfig("existing"), adminCidrs: ["::/0"] }, "wgexit:adminCidrs[0]", /whole internet/],
    ["no admin CIDRs", { ...baseConfig("existing"), adminCidrs: undefined }, "wgexit:adminCidrs", /required/],
    ["no SSH private key", { ...baseConfig("existing"), sshPrivateKey: undefined }, "wgexit:sshPrivateKey", /pulumi config set --secret/],
    ["SSH public key missing on OCI", { ...baseConfig("oci"), sshPublicKey: undefined }, "wgexit:sshPublicKey", /required/],
    ["SSH public key malformed", { ...baseConfig("oci"), sshPublicKey: "AAAA" }, "wgexit:sshPublicKey", /OpenSSH public key/],
    ["unknown config key", { ...baseConfig("existing"), listenport: 51820 }, "wgexit:listenport", /not a known key/],
    ["unknown field in a site", { ...baseConfig("existing"), sites: [site({ bridgee: "x" })] }, "wgexit:sites[0]", /unknown key "bridgee"; this object's keys are: name, connection/],
    ["duplicate peer names", { ...baseConfig("existing"), peers: [{ name: "phone", publicKey: PEER_KEY }, { name: "phone", publicKey: PEER_KEY }] }, "wgexit:peers[1].name", /unique/],
    ["duplicate hostIndex", { ...baseConfig("existing"), peers: [{ name: "a", publicKey: PEER_KEY, hostIndex: 5 }, { name: "b", publicKey: PEER_KEY, hostIndex: 5 }] }, "wgexit:peers[1].hostIndex", /already used/],
    ["hostIndex outside the tunnel", { ...baseConfig("existing"), peers: [{ name: "a", publicKey: PEER_KEY, hostIndex: 300 }] }, "wgexit:peers[0].hostIndex", /does not fit/],
    ["canReach names nobody", { ...baseConfig("existing"), peers: [{ name: "a", publicKey: PEER_KEY, canReach: ["nas"] }] }, "wgexit:peers[0].canReach[0]", /not a site or peer name/],
    ["site without networks", { ...baseConfig("existing"), sites: [site({ networks: [] })] }, "wgexit:sites[0].networks", /at least one/],
    ["bridge equals the tunnel interface", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "wgexit0", cidr: "192.168.100.0/24" }] })] }, "wgexit:sites[0].networks[0].bridge", /wgInterface/],
    ["guest MAC outside the QEMU range", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", guests: [{ name: "web", mac: "00:11:22:33:44:55" }] }] })] }, "wgexit:sites[0].networks[0].guests[0].mac", /52:54:00/],
    ["OCI VCN overlaps the tunnel", { ...baseConfig("oci"), oci: { compartmentId: "ocid1.compartment.oc1..aaaaexample", vcnCidr: "10.0.0.0/8" }, tunnelCidr: "10.66.0.0/24" }, "wgexit:oci.vcnCidr", /overlaps/],

    ["guest without an image", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", guests: [{ name: "web" }] }] })] }, "wgexit:sites[0].networks[0].guests[0].image", /required|string/],
    ["http:// image without imageSha256", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", guests: [{ name: "web", image: "http://img.example/d.qcow2" }] }] })] }, "wgexit:sites[0].networks[0].guests[0].imageSha256", /is required for an http:\/\/ image \(http:\/\/img\.example\/d\.qcow2\): nothing else vouches/],
    ["imageSha256 not 64 hex digits", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", guests: [{ name: "web", image: "https://img.example/d.qcow2", imageSha256: "sha256:ABC" }] }] })] }, "wgexit:sites[0].networks[0].guests[0].imageSha256", /64 lowercase hex digits, as `sha256sum IMAGE` prints it/],
    ["guest image neither path nor URL", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", guests: [{ name: "web", image: "debian.qcow2" }] }] })] }, "wgexit:sites[0].networks[0].guests[0].image", /absolute path.*http/],
    ["guest image URL with a query", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", guests: [{ name: "web", image: "https://x.example/a.qcow2?$(id)" }] }] })] }, "wgexit:sites[0].networks[0].guests[0].image", /neither/],
    ["guest hostIndex inside the DHCP pool", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", guests: [{ name: "web", image: "/img/a.qcow2", hostIndex: 200 }] }] })] }, "wgexit:sites[0].networks[0].guests[0].hostIndex", /DHCP pool.*2-127/],
    ["two guests with one MAC", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", guests: [{ name: "a", image: "/img/a.qcow2", mac: "52:54:00:00:00:01" }, { name: "b", image: "/img/a.qcow2", mac: "52:54:00:00:00:01" }] }] })] }, "wgexit:sites[0].networks[0].guests[1].mac", /also used/],
    ["guest IPv6 subnet not a /64", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", cidrV6: "fd66:100::/56" }] })] }, "wgexit:sites[0].networks[0].cidrV6", /\/64.*SLAAC/],
    ["guest subnet too small", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/29" }] })] }, "wgexit:sites[0].networks[0].cidr", /too small/],
    ["route table is the main table", { ...baseConfig("existing"), sites: [site({ routeTable: 254 })] }, "wgexit:sites[0].routeTable", /main/],
    ["initrd without a kernel", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", guests: [{ name: "web", image: "/img/a.qcow2", initrd: "/boot/initrd.img" }] }] })] }, "wgexit:sites[0].networks[0].guests[0].initrd", /kernel/],
    ["domain type unknown", { ...baseConfig("existing"), sites: [site({ domainType: "xen" })] }, "wgexit:sites[0].domainType", /"kvm".*"qemu"/],
    ["laptop OS unknown", { ...baseConfig("existing"), laptops: [laptop({ os: "windows" })] }, "wgexit:laptops[0].os", /"linux" or "macos"/],
    ["laptop address not an address", { ...baseConfig("existing"), laptops: [laptop({ laptopAddress: "192.168.64.0/24" })] }, "wgexit:laptops[0].laptopAddress", /IPv4 address.*192\.168\.64\.1/],
    ["laptop IPv6 on one side only", { ...baseConfig("existing"), laptops: [laptop({ laptopAddressV6: "fd66:64::1" })] }, "wgexit:laptops[0].vmAddressV6", /both.*or neither/],
    ["laptop and VM share an address", { ...baseConfig("existing"), laptops: [laptop({ vmAddress: "192.168.64.1" })] }, "wgexit:laptops[0].vmAddress", /differ/],
    ["laptop named like a site", { ...baseConfig("existing"), sites: [site()], laptops: [laptop({ name: "home" })] }, "wgexit:laptops[0].name", /already/],
    ["macOS network service with shell characters", { ...baseConfig("existing"), laptops: [laptop({ networkService: "Wi-Fi$(id)" })] }, "wgexit:laptops[0].networkService", /network service name/],
    ["port forward to an unknown site", { ...baseConfig("existing"), sites: [siteWithGuest()], portForwards: [forward({ site: "cabin" })] }, "wgexit:portForwards[0].site", /not a site.*home/],
    ["port forward to an unknown guest", { ...baseConfig("existing"), sites: [site()], portForwards: [forward({ guest: "db" })] }, "wgexit:portForwards[0].guest", /not a guest of site home/],
    ["port forward to an address outside the site", { ...baseConfig("existing"), sites: [site()], portForwards: [forward({ guest: undefined, address: "192.168.1.20" })] }, "wgexit:portForwards[0].address", /not a guest address.*192\.168\.100\.0\/24/],
    ["port forward to the bridge itself", { ...baseConfig("existing"), sites: [site()], portForwards: [forward({ guest: undefined, address: "192.168.100.1" })] }, "wgexit:portForwards[0].address", /not a guest address/],
    ["port forward with guest and address", { ...baseConfig("existing"), sites: [site()], portForwards: [forward({ address: "192.168.100.50" })] }, "wgexit:portForwards[0].guest", /either guest.*or address/],
    ["port forward of the WireGuard port", { ...baseConfig("existing"), sites: [siteWithGuest()], portForwards: [forward({ protocol: "udp", port: 51820 })] }, "wgexit:portForwards[0].port", /WireGuard port/],
    ["port forward of the SSH port", { ...baseConfig("existing"), sites: [siteWithGuest()], portForwards: [forward({ port: 22 })] }, "wgexit:portForwards[0].port", /SSH port/],
    ["two forwards of one port", { ...baseConfig("existing"), sites: [siteWithGuest()], portForwards: [forward(), forward({ name: "other" })] }, "wgexit:portForwards[1].port", /already forwarded/],
    ["peer without a key", { ...baseConfig("existing"), peers: [{ name: "phone" }] }, "wgexit:peers[0].publicKey", /wg pubkey.*generateKey: true/],
    ["peer with a key and generateKey", { ...baseConfig("existing"), peers: [{ name: "phone", publicKey: PEER_KEY, generateKey: true }] }, "wgexit:peers[0].publicKey", /not both/],
    ["sites is not a list", { ...baseConfig("existing"), sites: { name: "home" } }, "wgexit:sites", /list of sites/],
    ["no admin address (the gateway would drop SSH)", { ...baseConfig("existing"), adminCidrs: [] }, "wgexit:adminCidrs", /is required so the gateway knows who may reach SSH/],
    ["the internet in two halves for SSH", { ...baseConfig("existing"), adminCidrs: ["0.0.0.0/1", "128.0.0.0/1"] }, "wgexit:adminCidrs[1]", /opens SSH to 1\/2 of the internet \(IPv4 prefixes must be \/8 or longer\)/],
    ["an IPv6 slice of the internet for SSH", { ...baseConfig("existing"), adminCidrs: ["2000::/3"] }, "wgexit:adminCidrs[0]", /1\/8 of the internet \(IPv6 prefixes must be \/16 or longer\)/],
    ["a route table the main table's rule comes before", { ...baseConfig("existing"), sites: [site({ routeTable: 40000 })] }, "wgexit:sites[0].routeTable", /1-32765 \(it is also the rule's priority, which must come before the main table's 32766\)/],
    ["a laptop route table the main table's rule comes before", { ...baseConfig("existing"), laptops: [laptop({ routeTable: 32766 })] }, "wgexit:laptops[0].routeTable", /1-32765/],
    ["a resolver given as a name", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "192.168.100.0/24", resolvers: ["dns.quad9.net"] }] })] }, "wgexit:sites[0].networks[0].resolvers[0]", /not an IP address; resolvers are handed out by address/],
    ["a client DNS given as a name", { ...baseConfig("existing"), peers: [{ name: "phone", publicKey: PEER_KEY, dns: ["dns.quad9.net"] }] }, "wgexit:peers[0].dns[0]", /not an IP address/],
    ["two sites on one host", { ...baseConfig("existing"), sites: [site(), site({ name: "cabin", networks: [{ name: "wgnet", bridge: "virbr-wg2", cidr: "192.168.110.0/24" }] })] }, "wgexit:sites[1].connection.host", /192\.168\.1\.10:22 already runs a site for wgexit:sites\[0\]\.connection\.host; one host holds one site/],
    ["two laptops naming one VM", { ...baseConfig("existing"), laptops: [laptop(), laptop({ name: "mac2", laptop: { host: "192.168.64.5", user: "admin" } })] }, "wgexit:laptops[1].vm.host", /already runs a laptop VM/],
    ["a peer routing public space", { ...baseConfig("existing"), peers: [{ name: "office", publicKey: PEER_KEY, allowedIps: ["8.8.8.0/24"] }] }, "wgexit:peers[0].allowedIps[0]", /8\.8\.8\.0\/24 is public address space.*allowPublicPrefixes: true/],
    ["a peer routing the operator's own address", { ...baseConfig("existing"), peers: [{ name: "office", publicKey: PEER_KEY, allowedIps: ["203.0.113.0/24"], allowPublicPrefixes: true }] }, "wgexit:peers[0].allowedIps[0]", /contains an operator's address \(wgexit:adminCidrs\[0\], 203\.0\.113\.7\/32\).*narrow the prefix/],
    ["a peer routing the gateway's own address", { ...baseConfig("existing"), peers: [{ name: "office", publicKey: PEER_KEY, allowedIps: ["198.51.100.0/24"], allowPublicPrefixes: true }] }, "wgexit:peers[0].allowedIps[0]", /contains the gateway's own address \(wgexit:existing\.host/],
    ["a guest network in public space", { ...baseConfig("existing"), sites: [site({ networks: [{ name: "wgnet", bridge: "virbr-wg", cidr: "198.18.100.0/24" }] })] }, "wgexit:sites[0].networks[0].cidr", /is public address space/],
    ["an IPv6 tunnel block smaller than the IPv4 one", { ...baseConfig("existing"), tunnelCidrV6: "fd66:66:66::/126" }, "wgexit:tunnelCidrV6", /holds fewer addresses than tunnelCidr 10\.66\.0\.0\/24.*use a \/64/],
];

describe("malformed configs", () => {
    it(`covers at least 25 cases (has ${MALFORMED.length})`, () => assert.ok(MALFORMED.length >= 25));
    for (const [what, config, key, words] of MALFORMED) {
        it(`rejects: ${what}`, () => {
            const problems = configProblems(config);
            const hit = problems.find((p) => p.key === key);
            assert.ok(hit, `expected a problem for ${key}, got:\n${problems.map((p) => `${p.key}: ${p.message}`).join("\n")}`);
            assert.match(hit.message, words);
        });
    }
    it("refuses a secret key stored in plain text", () => {
        try {
            parseStackConfig(configValues(baseConfig("existing")), undefined, () => false);
            assert.fail("expected an error");
        } catch (e) {
            assert.ok(e instanceof ConfigError);
            assert.match(e.problems.find((p) => p.key === "wgexit:sshPrivateKey")?.message ?? "", /plain text.*pulumi config set --secret sshPrivateKey/);
        }
        assert.ok(parseStackConfig(configValues(baseConfig("existing")), undefined, (k) => k === "wgexit:sshPrivateKey"));
        const withPassword = { ...baseConfig("existing"), sshPrivateKey: TEST_SSH_ENCRYPTED_KEY, sshPrivateKeyPassword: "correct horse" };
        assert.throws(() => parseStackConfig(configValues(withPassword), undefined, (k) => k === "wgexit:sshPrivateKey"), /wgexit:sshPrivateKeyPassword: is stored in plain text/);
        assert.ok(parseStackConfig(configValues(withPassword), undefined, (k) => k.startsWith("wgexit:sshPrivateKey")).hasSshPrivateKeyPassword);
    });
    it("accepts a host key in authorized_keys form, and reads the empty defaults the CLI injects as unset", () => {
        const config = parseStackConfig(configValues({ ...baseConfig("existing"), existing: { host: "198.51.100.10", hostKey: TEST_SSH_PUBLIC_KEY }, gatewayStack: "", oci: {}, ovh: {}, sshPublicKey: "", peerStacks: [] }));
        assert.equal(config.existing?.hostKey, TEST_SSH_PUBLIC_KEY);
        assert.equal(config.gatewayStack, undefined);
    });
    it("reports every problem at once", () => {
        const problems = configProblems({ ...baseConfig("existing"), listenPort: 0, wgInterface: "x;y", tunnelCidr: "10.66.0.5/24", adminCidrs: ["0.0.0.0/0"] });
        const keys = problems.map((p) => p.key);
        for (const k of ["wgexit:listenPort", "wgexit:wgInterface", "wgexit:tunnelCidr", "wgexit:adminCidrs[0]"]) assert.ok(keys.includes(k), `${k} missing from ${keys}`);
    });
    it("says that nothing was created, and lists each key with its fix", () => {
        try {
            parseStackConfig(configValues({ ...baseConfig("oci"), sshPublicKey: TEST_SSH_PUBLIC_KEY, listenPort: 99999 }));
            assert.fail("expected an error");
        } catch (e) {
            assert.match((e as Error).message, /nothing was created/);
            assert.match((e as Error).message, /- wgexit:listenPort: .*for example 51820/);
        }
    });
});
