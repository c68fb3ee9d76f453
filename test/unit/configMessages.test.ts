// Config messages in plain words (#14): a field without a message of its own still says what is
// wrong with the value and what to give instead, never zod's generic "Invalid input: expected ...".
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { z } from "zod";
import { KEY_SCHEMAS, remotePeerSchema } from "../../components/config";
import { baseConfig, configProblems, LAPTOP, PEER_KEY, SITE, WEB_GUEST, WGNET } from "../helpers/program";


/** zod's generic wording, which no config message may carry. */
const GENERIC = /Invalid input|Expected|Too small|Too big|Unrecognized key|expected number/;

const TINY = WGNET.guests[1];
/** The shared site fixture with its first network's guests replaced. */
const siteWithGuests = (guests: unknown[], over: Record<string, unknown> = {}) => ({ ...SITE, networks: [{ ...WGNET, guests }, ...SITE.networks.slice(1)], ...over });
const withSite = (site: Record<string, unknown>) => ({ ...baseConfig("existing"), sites: [site] });
const withOci = (over: Record<string, unknown>) => ({ ...baseConfig("oci"), oci: { compartmentId: "ocid1.compartment.oc1..aaaaexample", ...over } });
const withPeer = (over: Record<string, unknown>) => ({ ...baseConfig("existing"), peers: [{ name: "phone", publicKey: PEER_KEY, ...over }] });
const GUEST_KEYS = "name, image (required); mac, hostIndex, imageSha256, memoryMb, vcpus, diskGb, user, sshAuthorizedKeys, kernel, initrd, cmdline (optional)";
const SITE_KEYS = "name, connection, wgInterface, hostIndex, lanCidrs, allowInboundFrom, serveDns, routeTable, domainType, poolDir, networks";

describe("config messages in plain words", () => {
    it("the fixtures the cases start from are valid", () => {
        assert.deepEqual(configProblems(withSite(siteWithGuests([WEB_GUEST, TINY]))), []);
        assert.deepEqual(configProblems(withOci({})), []);
    });

    // [what, config, the one problem it must produce (exact key and message)]
    const EXACT: [string, Record<string, unknown>, { key: string; message: string }][] = [
        [
            "a string where a guest's memoryMb number goes",
            withSite(siteWithGuests([WEB_GUEST, { ...TINY, memoryMb: "abc" }])),
            { key: "wgexit:sites[0].networks[0].guests[1].memoryMb", message: 'must be a whole number of at least 64, got "abc"' },
        ],
        [
            "a number in quotes for memoryMb",
            withSite(siteWithGuests([WEB_GUEST, { ...TINY, memoryMb: "512" }])),
            { key: "wgexit:sites[0].networks[0].guests[1].memoryMb", message: 'must be a whole number of at least 64, got "512"; write 512 without quotes' },
        ],
        ["a negative oci.ocpus", withOci({ ocpus: -1 }), { key: "wgexit:oci.ocpus", message: "must be a number greater than 0, got -1" }],
        [
            "a fractional diskGb",
            withSite(siteWithGuests([{ ...WEB_GUEST, diskGb: 2.5 }])),
            { key: "wgexit:sites[0].networks[0].guests[0].diskGb", message: "must be a whole number of at least 1, got 2.5" },
        ],
        ["a string for serveDns", withSite({ ...SITE, serveDns: "yes" }), { key: "wgexit:sites[0].serveDns", message: 'must be true or false, got "yes"' }],
        ["true in quotes for generateKey", withPeer({ publicKey: undefined, generateKey: "true" }), { key: "wgexit:peers[0].generateKey", message: 'must be true or false, got "true"; write true without quotes' }],
        [
            "a typo'd key in a site (routetable)",
            withSite({ ...SITE, routetable: 7700 }),
            { key: "wgexit:sites[0]", message: `unknown key "routetable" (did you mean "routeTable"?); this object's keys are: ${SITE_KEYS} (see README "Config reference")` },
        ],
        [
            "a guest given as a string",
            withSite(siteWithGuests(["web1"])),
            { key: "wgexit:sites[0].networks[0].guests[0]", message: `must be an object, got "web1"; its keys are: ${GUEST_KEYS}` },
        ],
        ["an availabilityDomainIndex past the last domain", withOci({ availabilityDomainIndex: 3 }), { key: "wgexit:oci.availabilityDomainIndex", message: "must be a whole number from 0 to 2, got 3" }],
        ["a boot volume below OCI's minimum", withOci({ bootVolumeGbs: 20 }), { key: "wgexit:oci.bootVolumeGbs", message: "must be a whole number of at least 50, got 20" }],
        ["one CIDR where a list goes", withSite({ ...SITE, lanCidrs: "192.168.1.0/24" }), { key: "wgexit:sites[0].lanCidrs", message: 'must be a list, got "192.168.1.0/24"; for one entry write ["192.168.1.0/24"]' }],
        [
            "a site's networks given as one name",
            withSite({ ...SITE, networks: "wgnet" }),
            { key: "wgexit:sites[0].networks", message: 'must be a list, got "wgnet"; each entry is an object with keys: name, bridge, cidr (required); cidrV6, resolvers, guests (optional)' },
        ],
        [
            "a peer given as a string",
            { ...baseConfig("existing"), peers: ["phone"] },
            { key: "wgexit:peers[0]", message: 'must be an object, got "phone"; its keys are: name (required); publicKey, generateKey, dns, hostIndex, allowedIps, allowPublicPrefixes, canReach (optional)' },
        ],
    ];
    for (const [what, config, expected] of EXACT) {
        it(`names the key and says what is wrong: ${what}`, () => {
            assert.deepEqual(configProblems(config), [expected]);
        });
    }

    it("an unknown key names the key, its likely spelling and the object's keys (the schema's own message)", () => {
        const result = KEY_SCHEMAS.sites.safeParse([{ ...SITE, routetable: 7700 }]);
        assert.equal(result.success, false);
        assert.deepEqual(
            result.error?.issues.map((i) => [i.path, i.message]),
            [[[0], `unknown key "routetable" (did you mean "routeTable"?); this object's keys are: ${SITE_KEYS} (see README "Config reference")`]],
        );
    });

    it("a gateway reading another stack's tunnelPeers gets the same words (config.allocate.ts shows issues[0].message)", () => {
        const peer = { name: "home", kind: "site", publicKey: PEER_KEY, routedCidrs: ["192.168.100.0/24"] };
        assert.equal(remotePeerSchema.safeParse(peer).success, true);
        assert.equal(remotePeerSchema.safeParse({ ...peer, kind: "router" }).error?.issues[0]?.message, 'must be one of "site" or "laptop", got "router"');
        assert.equal(
            remotePeerSchema.safeParse({ ...peer, extra: 1 }).error?.issues[0]?.message,
            'unknown key "extra"; this object\'s keys are: name, kind, publicKey, routedCidrs, hostIndex, portForwards (see README "Config reference")',
        );
        assert.equal(remotePeerSchema.safeParse({ ...peer, routedCidrs: undefined }).error?.issues[0]?.message, "is required; give a list");
    });

    it("kinds of issue no config field raises yet are worded too (the default is set for every schema)", () => {
        const message = (schema: z.ZodType, value: unknown) => schema.safeParse(value).error?.issues.map((i) => i.message);
        assert.deepEqual(message(z.array(z.string()).min(2), ["a"]), ["needs at least 2 entries, got 1"]);
        assert.deepEqual(message(z.array(z.string()).min(1), []), ["needs at least 1 entry, got 0"]);
        assert.deepEqual(message(z.array(z.string()).max(1), ["a", "b"]), ["has too many entries: at most 1, got 2"]);
        assert.deepEqual(message(z.string().min(3), "ab"), ["needs at least 3 characters, got 2"]);
        assert.deepEqual(message(z.number().multipleOf(5), 7), ["must be a multiple of 5, got 7"]);
        assert.deepEqual(message(z.number().lt(10), 10), ["must be a number less than 10, got 10"]);
        assert.deepEqual(message(z.enum(["a", "b", "c"]), "d"), ['must be one of "a", "b" or "c", got "d"']);
        assert.deepEqual(message(z.string(), 5), ['must be a string, got 5; put it in quotes: "5"']);
        assert.deepEqual(message(z.object({ a: z.string() }), { a: undefined }), ["is required; give a string"]);
    });

    it("a message written in the schema still wins over the plain-words default", () => {
        // Each of these fields has { error: ... } of its own; the default would have added ", got ...".
        assert.deepEqual(configProblems(withPeer({ allowPublicPrefixes: "yes" })), [{ key: "wgexit:peers[0].allowPublicPrefixes", message: "must be true or false" }]);
        assert.deepEqual(configProblems({ ...baseConfig("existing"), listenPort: "http" }), [{ key: "wgexit:listenPort", message: "must be a whole number from 1 to 65535, for example 51820" }]);
        assert.deepEqual(configProblems({ ...baseConfig("ovh"), ovh: { serviceName: "0123456789abcdef0123456789abcdef", region: "GRA11", billingPeriod: "daily" } }), [
            { key: "wgexit:ovh.billingPeriod", message: 'must be "hourly" or "monthly"' },
        ]);
        assert.deepEqual(configProblems(withSite({ ...SITE, networks: [] })), [{ key: "wgexit:sites[0].networks", message: "needs at least one routed network" }]);
    });

    // Every field that relies on the default messages, given a bad value: [config, key that must be named].
    const GENERIC_FIELDS: [Record<string, unknown>, string][] = [
        [withOci({ ocpus: "two" }), "wgexit:oci.ocpus"],
        [withOci({ ocpus: -1 }), "wgexit:oci.ocpus"],
        [withOci({ memoryInGbs: 0 }), "wgexit:oci.memoryInGbs"],
        [withOci({ bootVolumeGbs: 20 }), "wgexit:oci.bootVolumeGbs"],
        [withOci({ bootVolumeGbs: 60.5 }), "wgexit:oci.bootVolumeGbs"],
        [withOci({ availabilityDomainIndex: -1 }), "wgexit:oci.availabilityDomainIndex"],
        [withOci({ availabilityDomainIndex: 3 }), "wgexit:oci.availabilityDomainIndex"],
        [withOci({ ipv6: "no" }), "wgexit:oci.ipv6"],
        [withOci({ ocpu: 2 }), "wgexit:oci"],
        [withSite({ ...SITE, hostIndex: 1 }), "wgexit:sites[0].hostIndex"],
        [withSite({ ...SITE, serveDns: "yes" }), "wgexit:sites[0].serveDns"],
        [withSite({ ...SITE, routetable: 7700 }), "wgexit:sites[0]"],
        [withSite({ ...SITE, lanCidrs: "192.168.1.0/24" }), "wgexit:sites[0].lanCidrs"],
        [withSite({ ...SITE, allowInboundFrom: "10.66.0.0/24" }), "wgexit:sites[0].allowInboundFrom"],
        [withSite({ ...SITE, networks: "wgnet" }), "wgexit:sites[0].networks"],
        [withSite({ ...SITE, networks: ["wgnet"] }), "wgexit:sites[0].networks[0]"],
        [withSite({ ...SITE, networks: [{ ...WGNET, guests: "web" }] }), "wgexit:sites[0].networks[0].guests"],
        [withSite({ ...SITE, networks: [{ ...WGNET, resolvers: "9.9.9.9" }] }), "wgexit:sites[0].networks[0].resolvers"],
        [withSite(siteWithGuests(["web1"])), "wgexit:sites[0].networks[0].guests[0]"],
        [withSite(siteWithGuests([null])), "wgexit:sites[0].networks[0].guests[0]"],
        [withSite(siteWithGuests([{ ...WEB_GUEST, memoryMb: "abc" }])), "wgexit:sites[0].networks[0].guests[0].memoryMb"],
        [withSite(siteWithGuests([{ ...WEB_GUEST, memoryMb: 32 }])), "wgexit:sites[0].networks[0].guests[0].memoryMb"],
        [withSite(siteWithGuests([{ ...WEB_GUEST, vcpus: 0 }])), "wgexit:sites[0].networks[0].guests[0].vcpus"],
        [withSite(siteWithGuests([{ ...WEB_GUEST, vcpus: 1.5 }])), "wgexit:sites[0].networks[0].guests[0].vcpus"],
        [withSite(siteWithGuests([{ ...WEB_GUEST, diskGb: 2.5 }])), "wgexit:sites[0].networks[0].guests[0].diskGb"],
        [withSite(siteWithGuests([{ ...WEB_GUEST, hostIndex: "10" }])), "wgexit:sites[0].networks[0].guests[0].hostIndex"],
        [withSite(siteWithGuests([{ ...WEB_GUEST, sshAuthorizedKeys: "ssh-ed25519 AAAA" }])), "wgexit:sites[0].networks[0].guests[0].sshAuthorizedKeys"],
        [withSite(siteWithGuests([{ ...WEB_GUEST, ram: 1024 }])), "wgexit:sites[0].networks[0].guests[0]"],
        [{ ...baseConfig("existing"), sites: ["home"] }, "wgexit:sites[0]"],
        [{ ...baseConfig("existing"), peers: ["phone"] }, "wgexit:peers[0]"],
        [withPeer({ generateKey: "yes" }), "wgexit:peers[0].generateKey"],
        [withPeer({ hostIndex: 1 }), "wgexit:peers[0].hostIndex"],
        [withPeer({ dns: "9.9.9.9" }), "wgexit:peers[0].dns"],
        [withPeer({ allowedIps: "192.168.200.0/24" }), "wgexit:peers[0].allowedIps"],
        [withPeer({ canReach: "home" }), "wgexit:peers[0].canReach"],
        [{ ...baseConfig("existing"), laptops: [{ ...LAPTOP, hostIndex: 0 }] }, "wgexit:laptops[0].hostIndex"],
        [{ ...baseConfig("existing"), laptops: ["mac"] }, "wgexit:laptops[0]"],
        [{ ...baseConfig("existing"), portForwards: ["web"] }, "wgexit:portForwards[0]"],
        [{ ...baseConfig("existing"), existing: { host: "198.51.100.10", usr: "root" } }, "wgexit:existing"],
        [{ ...baseConfig("existing"), sites: [{ ...SITE, routeTable: 1.5 }] }, "wgexit:sites[0].routeTable"],
    ];
    it(`no message carries zod's generic words (${GENERIC_FIELDS.length} bad values)`, () => {
        const seen: string[] = [];
        for (const [config, key] of GENERIC_FIELDS) {
            const problems = configProblems(config);
            const hit = problems.find((p) => p.key === key);
            assert.ok(hit, `expected a problem for ${key}, got:\n${problems.map((p) => `${p.key}: ${p.message}`).join("\n")}`);
            for (const p of problems) {
                assert.doesNotMatch(p.message, GENERIC, `${p.key}: ${p.message}`);
                assert.ok(p.message.length > 0, p.key);
                seen.push(`${p.key}: ${p.message}`);
            }
        }
        assert.ok(seen.length >= GENERIC_FIELDS.length);
    });
});
