// The split layout's wiring: a site or laptop stack reads its gateway stack's public outputs,
// and a gateway stack reads the tunnelPeers output of the stacks it serves. Only public keys,
// addresses and subnets cross. Everything is read, and checked, before any resource is made,
// so a missing stack or output stops the program with nothing half-applied.
import * as pulumi from "@pulumi/pulumi";
import { type FailoverConfig, PROJECT } from "./config";

/** What a site or laptop stack needs from its gateway stack. */
export interface GatewayFacts {
    publicKey: string;
    endpoint: string;
    publicAddress: string;
    listenPort: number;
    tunnelMtu: number;
    /** The first gateway's tunnel block and address (what a site's health check pings). */
    tunnelCidr: string;
    gatewayAddress: string;
    peerAddresses: Record<string, { addressV4: string; addressV6: string }>;
    /** The gateway stack's further gateways in order of preference, and how sites choose (absent with one gateway). */
    further?: { gateways: FurtherGatewayFacts[]; failover: FailoverConfig };
}

/** A further gateway as the gateway stack publishes it (its `furtherGateways` output). */
export interface FurtherGatewayFacts {
    name: string;
    publicKey: string;
    endpoint: string;
    tunnelCidr: string;
    tunnelCidrV6: string;
    gatewayAddress: string;
    mtu: number;
    /** Its public address and WireGuard port: what a laptop lets its VM reach. */
    address: string;
    listenPort: number;
    /** 2 for the first further gateway, 3 for the next, …: the order sites prefer them in. */
    preference: number;
}

function stackError(key: string, stack: string, what: string, fix: string): pulumi.RunError {
    return new pulumi.RunError(`${PROJECT}:${key}: ${what} of stack "${stack}"; ${fix}. Nothing was created.`);
}

async function readOutput(ref: pulumi.StackReference, key: string, stack: string, output: string, optional = false): Promise<unknown> {
    let details: pulumi.StackReferenceOutputDetails;
    try {
        details = await ref.getOutputDetails(output);
    } catch (e) {
        throw stackError(key, stack, `cannot read the outputs (${(e as Error).message.split("\n")[0]})`, "check the name (org/project/stack) and that the stack exists and has been deployed");
    }
    const value = details.value ?? details.secretValue;
    if (value === undefined && !optional) throw stackError(key, stack, `there is no output "${output}"`, `run \`pulumi up\` in ${stack} first (it must be a wgexit stack)`);
    return value;
}

const FURTHER_FIELDS = ["publicKey", "endpoint", "tunnelCidr", "tunnelCidrV6", "gatewayAddress", "mtu", "address", "listenPort", "preference"] as const;

/** The further gateways, checked: a gateway stack deployed by an older wgexit publishes fewer fields. */
function furtherFacts(stack: string, byName: unknown, failover: unknown): GatewayFacts["further"] {
    if (byName === undefined) return undefined;
    const gateways = Object.entries(byName as Record<string, Record<string, unknown>>).map(([name, g]) => {
        const missing = FURTHER_FIELDS.filter((f) => g[f] === undefined);
        if (missing.length) throw stackError("gatewayStack", stack, `the output furtherGateways.${name} has no ${missing.join(", ")}`, `run \`pulumi up\` in ${stack} with this version of wgexit first`);
        return { name, ...g } as FurtherGatewayFacts;
    });
    if (failover === undefined) throw stackError("gatewayStack", stack, 'there is no output "failover" beside furtherGateways', `run \`pulumi up\` in ${stack} with this version of wgexit first`);
    return { gateways: gateways.sort((a, b) => a.preference - b.preference), failover: failover as FailoverConfig };
}

/** The gateway stack's public facts. */
export async function readGatewayStack(stack: string): Promise<GatewayFacts> {
    const ref = new pulumi.StackReference(`gateway-stack`, { name: stack });
    const [publicKey, endpoint, publicAddress, tunnel, peerAddresses] = await Promise.all(
        ["gatewayPublicKey", "gatewayEndpoint", "gatewayAddress", "tunnel", "peerAddresses"].map((o) => readOutput(ref, "gatewayStack", stack, o)),
    );
    // Only a gateway stack with further gateways has these two.
    const [further, failover] = await Promise.all(["furtherGateways", "failover"].map((o) => readOutput(ref, "gatewayStack", stack, o, true)));
    const t = tunnel as { mtu: number; listenPort: number; cidr: string; gatewayAddress: string };
    return {
        publicKey: publicKey as string,
        endpoint: endpoint as string,
        publicAddress: publicAddress as string,
        listenPort: t.listenPort,
        tunnelMtu: t.mtu,
        tunnelCidr: t.cidr,
        gatewayAddress: t.gatewayAddress,
        peerAddresses: peerAddresses as GatewayFacts["peerAddresses"],
        further: furtherFacts(stack, further, failover),
    };
}

/** Each peer stack's tunnelPeers output, in the order the config lists the stacks. */
export async function readPeerStacks(stacks: string[]): Promise<{ stack: string; tunnelPeers: unknown }[]> {
    return Promise.all(
        stacks.map(async (stack, i) => {
            const ref = new pulumi.StackReference(`peer-stack-${i}`, { name: stack });
            return { stack, tunnelPeers: await readOutput(ref, `peerStacks[${i}]`, stack, "tunnelPeers") };
        }),
    );
}
